"""The HTTP server the Bottle app runs in: waitress, with a whole-request deadline and connection limits.

**The server is waitress, not cheroot.** cheroot hands a connection to a worker thread as soon as
its first byte arrives, and the worker then blocks reading the head with only a per-read
timeout: eight clients sending a header byte every few seconds held all eight workers, and the
front panel stopped answering. No cheroot setting bounds a whole request head. waitress reads
and buffers every request (head and body) in one asynchronous I/O thread and hands only complete
requests to its worker threads, so a trickling client holds a socket, never a worker. On top of it
(``Server``): a deadline for a whole request (``web.request_timeout``), a per-client connection
limit (``web.max_connections_per_client``) beside waitress's total one, an idle keep-alive timeout,
and its own errors in the JSON shape. It is pure Python and packaged by Debian.

**Large bodies, one route at a time.** Every body is capped at ``MAX_BODY``, except on a route given
a ``LargeBody`` rule (``POST /api/v1/update``: an update bundle of a few hundred MB). For such a
route the rule's ``admit`` judges the request's ``Authorization`` header as soon as the head is in,
before one byte of the body is kept: a client without the token is answered (401/403) and its body
never buffered; an admitted body is spooled into the rule's directory (the data partition, not a
RAM-backed /tmp), up to the rule's limit (413 past it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from waitress.buffers import FileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.receiver import FixedStreamReceiver
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import Error

from .common import MAX_BODY, MAX_HEAD

if TYPE_CHECKING:
    from ..config import WebConfig

log = logging.getLogger("kelvinpi.web")


@dataclass(frozen=True)
class LargeBody:
    """A route allowed a body over MAX_BODY: at most ``limit`` bytes, spooled into ``spool_dir``, and
    only for a request ``admit`` lets through (it returns None, or the refusal's (status, message))."""

    limit: int
    admit: Callable[[str | None], tuple[int, str] | None]
    spool_dir: Path
    seconds: float  # the whole request's deadline once admitted (web.request_timeout is for small ones)


class Refusal(Error):
    """A refusal made while the request is still arriving, in our own words (JsonErrorTask)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, _REASONS.get(code, "Refused"), message


_REASONS = {401: "Unauthorized", 403: "Forbidden", 411: "Length Required", 413: "Request Entity Too Large"}


class _PerRoute:
    """waitress's adjustments with one route's body limit (waitress reads it right after the head)."""

    def __init__(self, adj: Any, limit: int) -> None:
        self._adj, self.max_request_body_size = adj, limit + 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adj, name)


class Parser(HTTPRequestParser):
    """waitress's request parser, with the body limit per route (``LargeBody`` rules; the module's doc)."""

    def __init__(self, adj: Any, rules: Mapping[str, LargeBody] | None = None) -> None:
        super().__init__(adj)
        self.rules = rules or {}
        self.limit = MAX_BODY
        self.seconds: float | None = None  # an admitted LargeBody's own deadline
        self._refusal: Refusal | None = None

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        rule = self.rules.get(f"{self.command} {self.path}")
        if rule is None:
            return
        refused = rule.admit(self.headers.get("AUTHORIZATION"))
        if refused is not None:
            self._refusal = Refusal(*refused)
        elif self.chunked:
            self._refusal = Refusal(411, "give the body with a Content-Length (no chunked transfer)")
        else:
            self.limit, self.seconds = rule.limit, rule.seconds
            self.adj: Any = _PerRoute(self.adj, rule.limit)  # type: ignore[has-type]
            if 0 < self.content_length <= rule.limit:
                rule.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                # closed by waitress with the request (deleted on close: it has no name)
                spool = tempfile.TemporaryFile(dir=rule.spool_dir, prefix="upload-")  # noqa: SIM115
                self.body_rcv = FixedStreamReceiver(self.content_length, FileBasedBuffer(spool))

    def received(self, data: bytes) -> int:
        n = super().received(data)
        # refused on the head (over waitress's own 413 too): answered before one byte of the body is kept
        if self._refusal is not None and self.error is not self._refusal:  # type: ignore[has-type]
            self.error, self.completed, self.connection_close = self._refusal, True, True
        return n


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (a head over MAX_HEAD, a malformed request line) in the one error shape."""

    def execute(self) -> None:
        e = self.request.error
        limit = getattr(self.request, "limit", MAX_BODY)
        message = getattr(e, "message", None) or {
            413: f"request body over the limit of {limit} bytes" + (" (MAX_BODY)" if limit == MAX_BODY else ""),
            431: f"request line and headers over the limit of {MAX_HEAD} bytes (MAX_HEAD)",
        }.get(e.code, f"{e.reason}: {e.body}")
        body = json.dumps({"error": {"status": e.code, "message": message}}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    """One connection; remembers when the request it is still receiving began (the deadline's start)."""

    error_task_class = JsonErrorTask

    def parser_class(self, adj: Any) -> Parser:  # type: ignore[override]
        """waitress makes each request's parser with this: ours, knowing the server's LargeBody rules."""
        return Parser(adj, self.server.large_bodies)

    _timed = None  # the partial request being timed (waitress's parser object)
    request_started = 0.0
    spoke = False  # any byte received yet (a connection that never speaks is closed at the deadline)

    def received(self, data: bytes) -> bool:
        self.spoke = True
        out = super().received(data)
        r = self.request
        if r is not None and r is not self._timed:
            self._timed, self.request_started = r, time.time()
        return out


TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


class Server(TcpWSGIServer):
    """waitress with a whole-request deadline and a per-client connection limit.

    Runs ``serve()`` in a thread of its own; ``stop()`` from any other thread. The deadline
    is checked once a second by waitress's maintenance pass (in the I/O thread, where the
    channels live): a request still incomplete ``request_timeout`` seconds after its first
    byte, or a connection that has sent nothing that long after it was accepted, is closed.
    """

    channel_class = Channel

    def __init__(
        self, app: Callable[..., Any], cfg: WebConfig, large_bodies: Mapping[str, LargeBody] | None = None
    ) -> None:
        """``large_bodies``: "METHOD /path" -> the rule for a route allowed a body over MAX_BODY."""
        self.large_bodies = dict(large_bodies or {})
        self.request_timeout = cfg.request_timeout
        self.per_client = cfg.max_connections_per_client
        self.refused = 0  # connections over the per-client limit
        # waitress warns of every request that waits for a worker: under a crowd, a journal line
        # per request (CPU, and wear on the SD card) saying what a 50-client panel load is
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self.timed_out = 0  # connections closed at the request deadline
        super().__init__(
            app,
            host=cfg.bind,
            port=cfg.port,
            threads=cfg.threads,
            ident="kelvinpi",
            connection_limit=cfg.max_connections,
            channel_timeout=max(1, int(cfg.idle_timeout)),
            cleanup_interval=1,
            max_request_header_size=MAX_HEAD,
            max_request_body_size=MAX_BODY,  # per route: Parser (LargeBody)
            clear_untrusted_proxy_headers=False,
            asyncore_use_poll=True,
            backlog=256,
            expose_tracebacks=False,
            log_socket_errors=False,
        )
        self.bind_addr = self.socket.getsockname()[:2]  # (host, port as int): waitress keeps strings

    def handle_accept(self) -> None:
        try:
            v = self.accept()
            if v is None:
                return
            conn, addr = v
            self.set_socket_options(conn)
        except OSError:
            return  # the peer went away before we got to it
        ip = addr[0]
        if sum(1 for c in list(self.active_channels.values()) if c.addr and c.addr[0] == ip) >= self.per_client:
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log.warning(
                    "refused a connection from %s: over web.max_connections_per_client = %d (%d refused so far)",
                    ip,
                    self.per_client,
                    self.refused,
                )
            msg = json.dumps(
                {
                    "error": {
                        "status": 503,
                        "message": f"over the limit of {self.per_client} "
                        "connections per client (web.max_connections_per_client)",
                    }
                }
            ).encode()
            try:
                conn.setblocking(False)
                conn.send(TOO_MANY % (len(msg), msg))
            except OSError:
                pass
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # the idle keep-alive timeout
        cutoff = now - self.request_timeout
        for ch in list(self.active_channels.values()):
            if ch.requests or ch.will_close:
                continue  # a complete request is being answered
            own = getattr(ch.request, "seconds", None)  # an admitted upload's deadline
            started_by = cutoff if own is None else now - own
            slow = (ch.request is not None and ch.request is ch._timed and ch.request_started < started_by) or (
                not ch.spoke and ch.creation_time < cutoff
            )  # accepted, then silent
            if slow:
                self.timed_out += 1
                ch.will_close = True

    def serve(self) -> None:
        self.run()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and the listening socket from inside the I/O loop, then end it."""
        done = threading.Event()

        def close_all(_: object = None) -> None:
            for ch in list(self.active_channels.values()):
                with contextlib.suppress(OSError):
                    ch.handle_close()
            self.close()
            done.set()

        try:
            self.trigger.pull_trigger(close_all)
        except OSError:
            close_all()
        done.wait(timeout)
        self.task_dispatcher.shutdown(timeout=timeout)
