"""One HTTP POST, no redirects, one total deadline: what notify's lanes and the push uplinks share.

``urllib`` gave each receive its own timeout, so an answer trickled a byte at a time, or headers
followed by silence, held a delivery thread for as long as the receiver liked; and it followed a
301/302 with a GET that had no body, whose 200 looked like a delivery. Here one deadline covers the
whole attempt (connect, TLS handshake, send, status, headers, body): a timer shuts the socket down
when it passes, so a receive blocked in the middle of a trickle returns at once. A redirect is an
answer like any other status, for the caller to treat as an error; nothing is followed.

Errors raised carry no URL (a webhook URL is a secret): ``str()`` of an exception from here is safe
to show. The URL is parsed once (``parse_url``), and a ``user:password@`` in it becomes Basic auth.
Proxies from the environment (``http_proxy``) are not used: the appliance talks to its receivers
directly.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import socket
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from email.message import Message
from typing import Any

BODY_LIMIT = 65536  # bytes of an answer's body kept (an error page, InfluxDB's JSON about the points)


class BadURL(ValueError):
    """A URL this module cannot use; the message never contains the URL."""


@dataclass(frozen=True)
class Target:
    """Where to POST, parsed once: no userinfo left in it (that is ``auth``)."""

    tls: bool
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    auth: str | None  # "Basic ..." from user:password in the URL, else None


@dataclass(frozen=True)
class Answer:
    """What the receiver answered: its status stands even when its body could not be read."""

    status: int
    reason: str
    headers: Message
    body: bytes  # up to BODY_LIMIT bytes; b"" when not read or unreadable
    read_error: Exception | None  # what stopped the body being read (IncompleteRead, TimeoutError), if anything

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400

    def describe(self) -> str:
        """The status for the health and the log, never the Location (it may be a secret URL too)."""
        if self.redirect:
            return f"HTTP {self.status} redirect to another address"
        return f"HTTP {self.status}"


def parse_url(url: str) -> Target:
    """``url`` as a Target, or BadURL saying what is wrong with it (without quoting it)."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise BadURL("the URL holds a space or a control character")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadURL("the file must hold an http(s) URL")
    if not parts.hostname:
        raise BadURL("the URL names no host")
    try:
        port = parts.port
    except ValueError:
        raise BadURL("the URL's port is not a number from 1 to 65535") from None
    auth = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    tls = parts.scheme == "https"
    return Target(tls, parts.hostname, port or (443 if tls else 80), path, auth)


class Deadline:
    """Ends an attempt when ``seconds`` have passed, whatever it is doing: shuts its socket down.

    ``watch`` the socket as soon as it exists (and again when TLS wraps it); ``finish`` before
    closing it, so the timer never touches a socket that is no longer this attempt's.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            if not self._done:
                self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            # the plain socket's shutdown, also under TLS: a blocked read sees the end at once;
            # closed or not connected yet: nothing to wake
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def error(self) -> TimeoutError:
        return TimeoutError(f"no complete answer within {self.seconds:g} s")


class _Response(http.client.HTTPResponse):
    """Keeps the final status line on its connection as soon as it is read, so a 2xx stands even
    when the headers after it fail (more than 100, a line too long, the deadline mid-way)."""

    def __init__(self, sock: socket.socket, *args: Any, connection: _Connection, **kw: Any) -> None:
        super().__init__(sock, *args, **kw)
        self._connection = connection

    def _read_status(self):
        version, status, reason = super()._read_status()
        if status >= 200:  # not a 1xx interim answer
            self._connection.status_line = (status, reason.strip())
        return version, status, reason


class _Connection(http.client.HTTPConnection):
    """An HTTP(S) connection whose socket the deadline can shut down from the first moment."""

    def __init__(self, target: Target, deadline: Deadline, context: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port, timeout=deadline.seconds)
        self.default_port = 443 if target.tls else 80  # the Host header names only a port that is not
        self._target, self._deadline = target, deadline
        self._context = (context or ssl.create_default_context()) if target.tls else None
        self.status_line: tuple[int, str] | None = None  # (status, reason) once the final one is read
        self.response_class = functools.partial(_Response, connection=self)  # type: ignore[assignment]

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self._deadline.watch(sock)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._context is not None:
            sock = self._context.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
            self._deadline.watch(sock)
            sock.do_handshake()
        self.sock = sock


def _read_body(resp: http.client.HTTPResponse, limit: int) -> bytes:
    # read() with no size raises IncompleteRead for a body cut short; read(n) would hand back the part
    if resp.length is not None and resp.length <= limit:
        return resp.read()
    return resp.read(limit)


def post(
    url: str | Target,
    data: bytes,
    headers: dict[str, str],
    timeout: float,
    context: ssl.SSLContext | None = None,
    read_success_body: bool = True,
    limit: int = BODY_LIMIT,
) -> Answer:
    """POST ``data``; return the answer, or raise (OSError, TimeoutError at the deadline, HTTPException
    for an answer that is not HTTP) -- never with the URL in the message. Once the status line says
    2xx the answer is returned whatever happens after it (headers or body failing: ``read_error``):
    only the status line decides whether the receiver took it.

    ``timeout``: the total deadline of the attempt. ``read_success_body=False``: a 2xx is taken as
    it comes, its body not waited for (a delivery is a delivery however slowly the page follows).
    An error's body is read (up to ``limit`` bytes) within the deadline; failing to read it is kept
    in ``read_error``, the status still stands.
    """
    target = parse_url(url) if isinstance(url, str) else url
    hdrs = {"User-Agent": "kelvinpi", "Connection": "close"}
    if target.auth:
        hdrs["Authorization"] = target.auth
    for name, value in headers.items():  # the caller's own (an Authorization token) win, whatever their case
        for same in [k for k in hdrs if k.lower() == name.lower()]:
            del hdrs[same]
        hdrs[name] = value
    deadline = Deadline(timeout)
    conn = _Connection(target, deadline, context)
    try:
        try:
            conn.request("POST", target.path, body=data, headers=hdrs)
            resp = conn.getresponse()
        except Exception as exc:
            status = conn.status_line
            error = deadline.error() if deadline.expired else exc
            if status is not None and 200 <= status[0] < 300:  # the status line decides: delivered
                return Answer(status[0], status[1], Message(), b"", error)
            if deadline.expired:
                raise deadline.error() from None
            raise
        if deadline.expired:  # http.client takes the end of the stream (our shutdown) for the end of the headers
            if 200 <= resp.status < 300:  # but a 2xx status line is a delivery whatever follows it
                return Answer(resp.status, resp.reason, resp.headers, b"", deadline.error())
            raise deadline.error()
        body, read_error = b"", None
        if read_success_body or not 200 <= resp.status < 300:
            try:
                body = _read_body(resp, limit)
                if deadline.expired:  # read to the "end" our shutdown made: cut short
                    body, read_error = b"", deadline.error()
            except Exception as exc:  # noqa: BLE001 - the status stands; what stopped the body is kept
                read_error = deadline.error() if deadline.expired else exc
        return Answer(resp.status, resp.reason, resp.headers, body, read_error)
    finally:
        deadline.finish()
        conn.close()
