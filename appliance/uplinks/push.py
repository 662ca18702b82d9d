"""The life cycle the HTTP push uplinks (InfluxDB, remote write) share.

A thread of its own takes a batch from the outbox, hands it to ``deliver``, and acknowledges
it only when that returns: a failure is counted, shown and retried with capped exponential
backoff and jitter, the data waiting in the store. An answer's ``Retry-After`` (a 429 or 503
asking for 300 s) is honoured, up to ``RETRY_AFTER_MAX``; a 413 is shown with what fixes it (a
smaller ``batch``: the same batch would be refused forever; the batch is not cut automatically). What the receiver will never take is
skipped, counted and named in one ``uplink_refused`` event (``report_refused``).
"""

from __future__ import annotations

import email.utils
import http.client
import io
import logging
import random
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import ClassVar

from .. import httpsend
from ..health import UplinkHealth
from ..store import Store
from .outbox import Batch, Outbox


class _Unreadable:
    """An error answer's body that could not be read: reading it raises what stopped it."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def read(self, *args: object) -> bytes:
        raise self.exc

    def close(self) -> None:
        pass


class Answered:
    """A 2xx answer as ``post_once`` hands it back: ``status`` and ``read()``, usable in ``with``."""

    def __init__(self, answer: httpsend.Answer) -> None:
        self.answer = answer
        self.status = answer.status
        self._body = io.BytesIO(answer.body)

    def read(self, amt: int | None = None) -> bytes:
        """The body (what was read of it); a body cut short raises what cut it, as urllib's did."""
        if self.answer.read_error is not None:
            raise self.answer.read_error
        return self._body.read(amt)

    def __enter__(self) -> Answered:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def post_once(req: urllib.request.Request, timeout: float, context: ssl.SSLContext | None = None) -> Answered:
    """POST ``req`` once through ``appliance.httpsend``: one total deadline (``timeout``, for the
    connection, the request and the whole answer), and never a redirect followed: urllib followed a
    301 or 302 with a GET that had no body, and the page at the end (a 200) looked like a written
    batch. Any status but 2xx raises ``HTTPError`` (its body readable as before); a failure before
    an answer ``URLError`` (an OSError, the deadline among them), or ``HTTPException`` for an answer
    that is not HTTP: what urllib raised, so the uplinks' handling stays as it was.
    """
    headers = dict(req.header_items())
    try:
        answer = httpsend.post(req.full_url, req.data or b"", headers, timeout, context)  # type: ignore[arg-type]
    except httpsend.BadURL as exc:
        raise urllib.error.URLError(str(exc)) from None
    except OSError as exc:
        raise urllib.error.URLError(exc) from None
    if not answer.ok:
        fp = io.BytesIO(answer.body) if answer.read_error is None else _Unreadable(answer.read_error)
        raise urllib.error.HTTPError(req.full_url, answer.status, answer.reason, answer.headers, fp)  # type: ignore[arg-type]
    return Answered(answer)


def error_body(exc: urllib.error.HTTPError) -> bytes | Exception:
    """The body of an error answer, or what stopped it being read (an error page cut short by a
    proxy whose backend restarts: IncompleteRead). Never raises: raised inside run()'s handler,
    where nothing caught it, that ended the runner's thread for good."""
    try:
        return exc.read()
    except Exception as read_exc:  # noqa: BLE001 - a body we cannot read is still an error answer
        return read_exc


def error_text(exc: urllib.error.HTTPError, limit: int = 300) -> str:
    """``error_body`` as text for the health and the log."""
    body = error_body(exc)
    if isinstance(body, Exception):
        return f"(no readable body: {type(body).__name__}: {body})"
    return body[:limit].decode("utf-8", "replace").strip()


BACKOFF_MAX = 60.0  # seconds: the longest wait between retries of our own choosing
RETRY_AFTER_MAX = 900.0  # seconds: the longest a receiver's Retry-After is honoured (a longer one: this)


def retry_after(exc: urllib.error.HTTPError, now: float | None = None) -> float | None:
    """The seconds an answer's ``Retry-After`` asks for (delta-seconds or an HTTP date), capped at
    ``RETRY_AFTER_MAX``; None without one or when it cannot be read."""
    value = exc.headers.get("Retry-After") if exc.headers is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


class PushUplink(threading.Thread):
    kind: ClassVar[str]  # the health's kind and the event's wording: "influxdb", "remote_write"
    label: ClassVar[str]  # how log lines name the receiver: "influxdb", "remote write"
    log: ClassVar[logging.Logger]
    outbox: Outbox  # set by the subclass, once its configuration is read

    def __init__(self, thread_name: str, index: int, url: str, store: Store) -> None:
        super().__init__(name=f"{thread_name}-{index}", daemon=True)
        self.url, self.store = url, store
        self.uplink_name = f"uplink[{index}]"
        self.health = UplinkHealth(self.uplink_name, self.kind)
        self._halt = threading.Event()

    def deliver(self, batch: Batch) -> None:
        """Send ``batch`` or raise (HTTPError, URLError, OSError, HTTPException: later); report what is refused."""
        raise NotImplementedError

    def http_detail(self, exc: urllib.error.HTTPError) -> str:
        """What the receiver said with an error status (shown in the health); never raises."""
        if hasattr(exc, "detail"):  # read already, by whoever looked at it first
            return str(exc.detail)
        return error_text(exc)

    def start(self) -> None:
        self.outbox.start_from_now()
        super().start()

    def run(self) -> None:
        """Send, acknowledge, repeat; any failure is counted, shown, and retried with backoff.

        Nothing ends this loop but ``stop()``: an unreachable or failing receiver, an answer that is
        not HTTP or is nonsense, a store that cannot commit the cursor, or a bug in a batch all keep
        the data and try again later.
        """
        delay = 1.0
        last_backlog = 0.0
        while not self._halt.is_set():
            asked: float | None = None  # what the receiver's Retry-After asks for
            try:
                if time.monotonic() - last_backlog > 5:
                    self.health.backlog = self.outbox.backlog()
                    last_backlog = time.monotonic()
                batch = self.outbox.take()
                if not len(batch):
                    self._halt.wait(1.0)
                    continue
                self.deliver(batch)
                self.outbox.ack(batch)
                self.health.sent += len(batch)
                self.health.connected = True
                self.health.last_success = time.time()
                delay = 1.0
                if len(batch) < self.outbox.limit:
                    self._halt.wait(1.0)
                continue
            except urllib.error.HTTPError as exc:
                asked = retry_after(exc)
                message = f"HTTP {exc.code}: {self.http_detail(exc)}"
                if exc.code == 413:  # the same batch would be refused forever: only a smaller one can pass
                    message += (
                        f" (the receiver refuses a request this large: lower `batch` for this uplink,"
                        f" now {self.outbox.limit}; the data is kept)"
                    )
                if asked is not None:
                    message += f" (retrying in {asked:.0f} s, as its Retry-After asks)"
                self._failed(message, "http")
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                self._failed(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}", "connection")
            except Exception as exc:  # noqa: BLE001 - the loop must outlive anything a batch or the store throws
                self.log.exception("%s %s: unexpected error (retrying)", self.label, self.url)
                self._failed(f"{type(exc).__name__}: {exc}", "internal")
            wait = delay * random.uniform(0.8, 1.2)
            self._halt.wait(wait if asked is None else max(wait, asked))
            delay = min(delay * 2, BACKOFF_MAX)

    def report_refused(self, count: int, noun: str, why: str, summary: str, cause: str | None = None) -> None:
        """``count`` points (``noun``) the receiver will never take: counted, logged, named in one event.

        ``why``: the first refusal, for the health; ``summary``: which points; ``cause``: the reason
        for the log line and the event, when the summary does not carry it.
        """
        self.health.errors["refused"] += count
        self.health.last_error = f"{count} {noun}(s) refused: {why}"
        log_cause, event_cause = ("", "") if cause is None else (f" ({cause})", f" ({cause[:200]})")
        self.log.error("%s %s refused %d %s(s), skipped%s: %s", self.label, self.url, count, noun, log_cause, summary)
        self.store.event(
            "uplink_refused", None, f"{self.uplink_name} {self.kind} refused {count} {noun}(s){event_cause}: {summary}"
        )

    def _failed(self, message: str, kind: str) -> None:
        if self.health.connected or not self.health.errors:
            self.log.warning("%s %s: %s (keeping data, retrying with backoff)", self.label, self.url, message)
        self.health.connected = False
        self.health.errors[kind] += 1
        self.health.last_error = message

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=20)
