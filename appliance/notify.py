"""Notifications that reach a person: one sender per target kind, one delivery lane per target.

``appliance.alarm_service.AlarmService`` records every notice (raised, repeat, acknowledged,
cleared) through the store's write path (``Store.alarm_record``), so a notice exists durably
before anyone tries to deliver it. Each ``[[notify]]`` target has a ``Lane``: a thread that
delivers that target's notices strictly in order, the oldest first, each once the writer has
journaled it, retrying the head with exponential backoff while the server is down, and recording
``sent`` for each one delivered. Whatever an attempt meets (no answer, an answer that is not HTTP,
a redirect, a receiver that trickles) is counted, shown and retried; the thread never ends on it.
An HTTP attempt has one total deadline (``appliance.httpsend``, shared with the push uplinks), and
a 2xx is a delivery as soon as its status is in; a mail is delivered once the server has taken it
after DATA, whatever QUIT answers. A restart reloads states and undelivered notices from the
store: nothing is lost, and a notice already recorded as sent is not sent again. (A crash in the instant between a server's 2xx and
the ``sent`` record reaching the journal, about a commit interval, resends that one notice; each
carries its id, ``X-Kelvinpi-Notice``, for receivers that deduplicate.)

A notice says only the rule, its kind and severity, the field or instrument, the value and the
time. URLs (webhook, Slack, ntfy topics) and SMTP passwords are secrets read from 0600 files and
are never logged: errors are logged by type and status only.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, ClassVar

from . import httpsend
from .config import EmailNotify, NotifyTarget, WebhookNotify, read_secret
from .health import TargetStats

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("kelvinpi.alarms")

DURABLE_WAIT = 10.0  # seconds a notice waits for the store's journal before it is sent regardless


class DeliveryError(Exception):
    """A target did not take a notice; the message is safe to log (no URL, no password)."""


# what an exception's type says to a person reading the health at 3 a.m.
_MEANING = {
    "BadStatusLine": "the answer is not HTTP",
    "RemoteDisconnected": "closed without an answer",
    "LineTooLong": "a line of the answer is too long",
    "IncompleteRead": "the answer was cut short",
}


def failure_text(exc: BaseException) -> str:
    """An exception from an attempt as a line safe to show: its type, the OS's reason or what it
    means, never ``str(exc)`` of something that may carry the URL or a password."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) and exc.args and isinstance(exc.args[0], str):
        return f"{name}: {exc.args[0]}"  # the deadline's own words (or "timed out")
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return f"{name}: {strerror}"
    if name in _MEANING:
        return f"{name} ({_MEANING[name]})"
    return name


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def summary(body: dict) -> str:
    """One line for a person: ``[CRITICAL] mxc-warm raised: LSA23JD::mxc_t = 0.0612 (...) at ...``."""
    what = body.get("field") or body.get("instrument") or ""
    value = body.get("value")
    val = f" = {value:.6g}" if isinstance(value, (int, float)) else ""
    detail = f" ({body['detail']})" if body.get("detail") else ""
    return (
        f"[{body['severity'].upper()}] {body['alarm']} {body['event']}: {what}{val}{detail} at {body['time']}"
    ).replace("  ", " ")


class NoticeSender:
    """Delivers one notice to one target, or raises DeliveryError. One subclass per ``[[notify]]``
    kind, registered in ``SENDERS``; its secrets are read when it is built, so a secret readable by
    others refuses the target at start-up (PermissionError), not in its lane later."""

    kind: ClassVar[str]

    def __init__(self, cfg: NotifyTarget) -> None:
        self.cfg: Any = cfg  # each sender reads its own kind's fields
        self.name = cfg.name

    def send(self, notice: dict) -> None:
        raise NotImplementedError


class HttpSender(NoticeSender):
    """A notice POSTed to a URL read from a 0600 file (with an optional bearer token); the subclass
    says what the body and its headers are."""

    def __init__(self, cfg: WebhookNotify) -> None:
        super().__init__(cfg)
        url = read_secret(cfg.url_file, f"notify[{cfg.name}].url_file")
        try:  # parsed once: a URL that cannot work refuses the target now, not its thread later
            self._target = httpsend.parse_url(url)
        except httpsend.BadURL as exc:
            raise PermissionError(f"notify[{cfg.name}].url_file: {exc}") from None
        self._token = read_secret(cfg.token_file, f"notify[{cfg.name}].token_file") if cfg.token_file else None

    def payload(self, body: dict, headers: dict[str, str]) -> bytes:
        """The request body for a notice's ``body``; may add headers."""
        raise NotImplementedError

    def send(self, notice: dict) -> None:
        body = notice["body"]
        headers = {"User-Agent": "kelvinpi", "X-Kelvinpi-Notice": str(notice["id"])}
        data = self.payload(body, headers)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"  # over a user:password in the URL
        try:  # a 2xx is a delivery as soon as its status line and headers are in: its body is not awaited
            answer = httpsend.post(self._target, data, headers, self.cfg.timeout, read_success_body=False)
        except Exception as exc:  # noqa: BLE001 - whatever the receiver did, this attempt failed: retried
            raise DeliveryError(failure_text(exc)) from None
        if not answer.ok:  # a redirect too: followed, it would lose the body (urllib sent a bodiless GET)
            raise DeliveryError(answer.describe())


class WebhookSender(HttpSender):
    """``webhook``: the notice's body as generic JSON."""

    kind = "webhook"

    def payload(self, body: dict, headers: dict[str, str]) -> bytes:
        headers["Content-Type"] = "application/json"
        return json.dumps(body).encode()


class SlackSender(HttpSender):
    """``slack``: an incoming-webhook body, the one-line summary as its text."""

    kind = "slack"

    def payload(self, body: dict, headers: dict[str, str]) -> bytes:
        headers["Content-Type"] = "application/json"
        return json.dumps({"text": summary(body)}).encode()


class NtfySender(HttpSender):
    """``ntfy``: the message is the body, the rest headers (https://docs.ntfy.sh/publish/)."""

    kind = "ntfy"

    def payload(self, body: dict, headers: dict[str, str]) -> bytes:
        loud = body["event"] in ("raised", "repeat")
        headers["Title"] = f"kelvinpi: {body['alarm']} {body['event']}"
        headers["Priority"] = (
            {"critical": "urgent", "warning": "high"}.get(body["severity"], "default") if loud else "default"
        )
        headers["Tags"] = "rotating_light" if loud else "white_check_mark"
        return summary(body).encode()


class _WatchedSMTP(smtplib.SMTP):
    """SMTP whose socket is under the attempt's deadline from the moment it exists: smtplib reads
    the greeting inside ``connect``, and a server trickling an endless "220-" banner held the lane
    for as long as it liked when the deadline only watched the socket afterwards."""

    def __init__(self, deadline: httpsend.Deadline, timeout: float) -> None:
        self._deadline = deadline
        super().__init__(timeout=timeout)  # no host: nothing is connected yet

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> tuple[int, bytes]:
        self._host = host  # what STARTTLS checks the certificate against (set only by __init__'s host)
        return super().connect(host, port, source_address)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        self._deadline.watch(sock)
        return sock


class EmailSender(NoticeSender):
    """``email``: SMTP with STARTTLS, one deadline for the whole conversation."""

    kind = "email"

    def __init__(self, cfg: EmailNotify) -> None:
        super().__init__(cfg)
        self._password = (
            read_secret(cfg.password_file, f"notify[{cfg.name}].password_file") if cfg.password_file else None
        )

    def send(self, notice: dict) -> None:
        c: EmailNotify = self.cfg
        body = notice["body"]
        msg = EmailMessage()
        msg["From"], msg["To"] = c.sender, ", ".join(c.to)
        msg["Subject"] = summary(body)[:200]
        msg["X-Kelvinpi-Notice"] = str(notice["id"])
        msg.set_content("\n".join([summary(body), ""] + [f"{k}: {v}" for k, v in body.items()]))
        deadline = httpsend.Deadline(c.timeout)  # one deadline for the whole conversation
        smtp: smtplib.SMTP | None = None
        try:
            smtp = _WatchedSMTP(deadline, c.timeout)
            smtp.connect(c.host, c.port)  # the greeting is read under the deadline
            if c.starttls:
                ctx = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
                smtp.starttls(context=ctx)
                if smtp.sock is not None:
                    deadline.watch(smtp.sock)
            if c.username:
                smtp.login(c.username, self._password or "")
            refused = smtp.send_message(msg)
        except Exception as exc:  # noqa: BLE001 - not accepted: retried
            deadline.finish()
            if smtp is not None:
                smtp.close()
            raise DeliveryError(failure_text(deadline.error() if deadline.expired else exc)) from None
        # accepted after DATA (250): delivered, whatever QUIT answers (a 421 there re-sent it forever)
        try:
            smtp.quit()
        except Exception:  # noqa: BLE001 - the mail is the server's already
            pass
        finally:
            deadline.finish()
            smtp.close()
        if refused:
            log.warning(
                "notify %s (email): notice %d refused for %d of %d recipients",
                self.name,
                notice["id"],
                len(refused),
                len(c.to),
            )


# The registry: [[notify]] kind -> sender. A new kind is its config model (in config.NOTIFY_MODELS),
# one class above and one line here.
SENDERS: dict[str, type[NoticeSender]] = {c.kind: c for c in (WebhookSender, SlackSender, NtfySender, EmailSender)}


def sender_for(cfg: NotifyTarget) -> NoticeSender:
    """The sender of one ``[[notify]]`` target (its secrets read now)."""
    kind = getattr(cfg, "kind", None)  # every [[notify]] model narrows it to its own Literal
    cls = SENDERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise TypeError(f"unknown notify kind {kind!r}")
    return cls(cfg)


class Lane(threading.Thread):
    """One target's notices, delivered in order; the head is retried with backoff until it goes."""

    def __init__(self, sender: NoticeSender, store: Store, stop: threading.Event) -> None:
        super().__init__(name=f"notify-{sender.name}", daemon=True)
        self.sender, self.store, self.stop_event = sender, store, stop
        self._pending: list[dict] = []
        self._cond = threading.Condition()
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.next_retry: float | None = None

    def put(self, notice: dict) -> None:
        with self._cond:
            self._pending.append(notice)
            self._cond.notify()

    def backlog(self) -> int:
        with self._cond:
            return len(self._pending)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def run(self) -> None:
        """Deliver until stopped. Nothing else ends this thread: whatever an attempt raises is
        counted, shown (``last_error``: health, /metrics, the panel's target card) and retried with
        backoff, the notice kept at the head."""
        delay = self.sender.cfg.backoff_initial
        while not self.stop_event.is_set():
            try:
                delay = self._step(delay)
            except Exception as exc:  # noqa: BLE001 - a bug here must not silence the target for good
                log.exception("notify %s: unexpected error in the delivery lane (retrying)", self.sender.name)
                delay = self._failed(None, failure_text(exc), delay)

    def _step(self, delay: float) -> float:
        """One round: wait for a notice, try the head once; returns the next backoff delay."""
        with self._cond:
            while not self._pending and not self.stop_event.is_set():
                self._cond.wait(1.0)
            if self.stop_event.is_set():
                return delay
            head = self._pending[0]
        if not self._durable(head):
            return delay
        try:
            self.sender.send(head)
        except DeliveryError as exc:
            return self._failed(head, str(exc), delay)
        except Exception as exc:  # noqa: BLE001 - not only DeliveryError: anything is a failed attempt
            return self._failed(head, failure_text(exc), delay)
        # delivered: off the queue first, so nothing below can send it a second time
        with self._cond:
            self._pending.pop(0)
        self.sent += 1
        self.last_success, self.last_error, self.next_retry = time.time(), None, None
        try:
            self.store.alarm_record("sent", head["id"], self.sender.name, time.time())
        except Exception:  # noqa: BLE001 - delivered all the same: not a failure, and never sent twice
            log.exception("notify %s: notice %d delivered, its record not queued", self.sender.name, head["id"])
        return self.sender.cfg.backoff_initial

    def _failed(self, head: dict | None, error: str, delay: float) -> float:
        """Count and show a failed attempt, wait ``delay`` (or until stopped); the next delay, doubled."""
        self.failures += 1
        self.last_error = error
        self.next_retry = time.time() + delay  # for a person to read: wall clock
        log.warning(
            "notify %s (%s): notice %s not delivered (%s); retrying in %.3g s",
            self.sender.name,
            self.sender.kind,
            head["id"] if head else "-",
            error,
            delay,
        )
        self.stop_event.wait(delay)  # a monotonic wait
        return min(delay * 2, self.sender.cfg.backoff_max)

    def _durable(self, notice: dict) -> bool:
        """Wait (briefly) until the writer has journaled the notice, so a crash cannot leave a
        delivered notice unknown to the store. A store that cannot write does not silence the
        alarms: past DURABLE_WAIT the notice goes out anyway (the store-not-writing alarm among them)."""
        due = notice.get("durable_at")
        if due is None or self.store.commits >= due or time.monotonic() - notice["queued"] > DURABLE_WAIT:
            return True
        self.stop_event.wait(0.05)
        return False

    def stats(self) -> TargetStats:
        """What the health and /metrics show of this target."""
        return TargetStats(
            self.sender.name,
            self.sender.kind,
            self.backlog(),
            self.sent,
            self.failures,
            self.last_error,
            self.last_success,
            self.next_retry,
        )

    def as_dict(self) -> dict:
        return self.stats().as_dict()
