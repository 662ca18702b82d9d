"""Notifications that reach a person: one sender per target kind, one delivery lane per target.

``appliance.alarm_service.AlarmService`` records every notice (raised, repeat, acknowledged,
cleared) through the store's write path (``Store.alarm_record``), so a notice exists durably
before anyone tries to deliver it. Each ``[[notify]]`` target has a ``Lane``: a thread that
delivers that target's notices strictly in order, the oldest first, each once the writer has
journaled it, retrying the head with exponential backoff while the server is down, and recording ``sent`` for each one delivered. A
restart reloads states and undelivered notices from the store: nothing is lost, and a notice
already recorded as sent is not sent again. (A crash in the instant between a server's 2xx and
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
import urllib.error
import urllib.request
from datetime import datetime, timezone
from email.message import EmailMessage

from .config import EmailNotify, WebhookNotify, read_secret

log = logging.getLogger("kelvinpi.alarms")

DURABLE_WAIT = 10.0  # seconds a notice waits for the store's journal before it is sent regardless


class DeliveryError(Exception):
    """A target did not take a notice; the message is safe to log (no URL, no password)."""


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def summary(body: dict) -> str:
    """One line for a person: ``[CRITICAL] mxc-warm raised: LSA23JD::mxc_t = 0.0612 (...) at ...``."""
    what = body.get("field") or body.get("instrument") or ""
    value = body.get("value")
    val = f" = {value:.6g}" if isinstance(value, (int, float)) else ""
    detail = f" ({body['detail']})" if body.get("detail") else ""
    return (
        f"[{body['severity'].upper()}] {body['alarm']} {body['event']}: {what}{val}{detail} at {body['time']}"
    ).replace("  ", " ")


class Sender:
    """Delivers one notice to one target, or raises DeliveryError."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.kind = cfg.kind
        # read at start-up: a secret readable by others refuses this target (PermissionError)
        if isinstance(cfg, WebhookNotify):
            self._url = read_secret(cfg.url_file, f"notify[{cfg.name}].url_file")
            if not self._url.startswith(("http://", "https://")):
                raise PermissionError(f"notify[{cfg.name}].url_file: the file must hold an http(s) URL")
            self._token = read_secret(cfg.token_file, f"notify[{cfg.name}].token_file") if cfg.token_file else None
        else:
            self._password = (
                read_secret(cfg.password_file, f"notify[{cfg.name}].password_file") if cfg.password_file else None
            )

    def send(self, notice: dict) -> None:
        if isinstance(self.cfg, EmailNotify):
            self._email(notice)
        else:
            self._post(notice)

    def _post(self, notice: dict) -> None:
        body = notice["body"]
        headers = {"User-Agent": "kelvinpi", "X-Kelvinpi-Notice": str(notice["id"])}
        if self.kind == "webhook":
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif self.kind == "slack":
            data, headers["Content-Type"] = json.dumps({"text": summary(body)}).encode(), "application/json"
        else:  # ntfy: the message is the body, the rest headers (https://docs.ntfy.sh/publish/)
            data = summary(body).encode()
            headers["Title"] = f"kelvinpi: {body['alarm']} {body['event']}"
            headers["Priority"] = (
                {"critical": "urgent", "warning": "high"}.get(body["severity"], "default")
                if body["event"] in ("raised", "repeat")
                else "default"
            )
            headers["Tags"] = "rotating_light" if body["event"] in ("raised", "repeat") else "white_check_mark"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(self._url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)  # never str(exc): it may carry the URL
            strerror = getattr(reason, "strerror", None)
            raise DeliveryError(type(reason).__name__ + (f": {strerror}" if strerror else "")) from None

    def _email(self, notice: dict) -> None:
        c: EmailNotify = self.cfg
        body = notice["body"]
        msg = EmailMessage()
        msg["From"], msg["To"] = c.sender, ", ".join(c.to)
        msg["Subject"] = summary(body)[:200]
        msg["X-Kelvinpi-Notice"] = str(notice["id"])
        msg.set_content("\n".join([summary(body), ""] + [f"{k}: {v}" for k, v in body.items()]))
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout) as smtp:
                if c.starttls:
                    ctx = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
                    smtp.starttls(context=ctx)
                if c.username:
                    smtp.login(c.username, self._password)
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise DeliveryError(type(exc).__name__) from None


class Lane(threading.Thread):
    """One target's notices, delivered in order; the head is retried with backoff until it goes."""

    def __init__(self, sender: Sender, store, stop: threading.Event) -> None:
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
        cfg = self.sender.cfg
        delay = cfg.backoff_initial
        while not self.stop_event.is_set():
            with self._cond:
                while not self._pending and not self.stop_event.is_set():
                    self._cond.wait(1.0)
                if self.stop_event.is_set():
                    return
                head = self._pending[0]
            if not self._durable(head):
                continue
            try:
                self.sender.send(head)
            except DeliveryError as exc:
                self.failures += 1
                self.last_error = str(exc)
                self.next_retry = time.time() + delay
                log.warning(
                    "notify %s (%s): notice %d not delivered (%s); retrying in %.0f s",
                    self.sender.name,
                    self.sender.kind,
                    head["id"],
                    exc,
                    delay,
                )
                self.stop_event.wait(delay)
                delay = min(delay * 2, cfg.backoff_max)
                continue
            self.store.alarm_record("sent", head["id"], self.sender.name, time.time())
            with self._cond:
                self._pending.pop(0)
            self.sent += 1
            self.last_success, self.last_error, self.next_retry = time.time(), None, None
            delay = cfg.backoff_initial

    def _durable(self, notice: dict) -> bool:
        """Wait (briefly) until the writer has journaled the notice, so a crash cannot leave a
        delivered notice unknown to the store. A store that cannot write does not silence the
        alarms: past DURABLE_WAIT the notice goes out anyway (the store-not-writing alarm among them)."""
        due = notice.get("durable_at")
        if due is None or self.store.commits >= due or time.monotonic() - notice["queued"] > DURABLE_WAIT:
            return True
        self.stop_event.wait(0.05)
        return False

    def as_dict(self) -> dict:
        return {
            "name": self.sender.name,
            "kind": self.sender.kind,
            "backlog": self.backlog(),
            "sent": self.sent,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_success": self.last_success,
            "next_retry": self.next_retry,
        }
