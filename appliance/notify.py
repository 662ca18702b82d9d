"""Alarms that reach a person: the alarm loop, durable notifications, one delivery lane per target.

``AlarmService`` evaluates the rules once a second (``appliance.alarms``), and for every
transition records the alarm's state, an event, and a *notice* (raised, repeat, acknowledged,
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

from .alarms import AlarmEngine, AlarmState, Observation, target_of
from .config import EmailNotify, WebhookNotify, read_secret
from .freshness import schedule
from .samples import FLAG_INVALID

log = logging.getLogger("kelvinpi.alarms")

TICK = 1.0
DURABLE_WAIT = 10.0  # seconds a notice waits for the store's journal before it is sent regardless
T_LIMIT_BITS = {"372": (64, 128), "240": (32, 16)}  # (T_OVER, T_UNDER) reading status bits


class DeliveryError(Exception):
    """A target did not take a notice; the message is safe to log (no URL, no password)."""


def _iso(t: float) -> str:
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


class AlarmService:
    """The alarm loop and its lanes, wired to the running appliance (started and stopped with it)."""

    def __init__(self, app) -> None:
        self.app = app
        self.store = app.store
        cfg = app.config
        self.rules = {r.name: r for r in cfg.alarm}
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self.lanes: dict[str, Lane] = {}
        self.target_errors: dict[str, str] = {}
        for t in cfg.notify:
            try:
                self.lanes[t.name] = Lane(Sender(t), self.store, self.stop_event)
            except PermissionError as exc:  # shown in health; the alarms still show on the panel
                self.target_errors[t.name] = str(exc)
                log.error("notify target %s not started: %s", t.name, exc)
        states, notices = self.store.alarm_load()
        self.engine = AlarmEngine(cfg.alarm, states)
        self._last_notice = {n: (s.get("last_notice") or 0.0) for n, s in states.items()}
        self._next_id = max([n["id"] for n in notices], default=0) + 1
        for n in notices:
            for target in n["targets"]:
                if target in self.lanes and target not in n["sent"]:
                    self.lanes[target].put(n)
        self._thread: threading.Thread | None = None
        self.ticks = 0

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        for lane in self.lanes.values():
            lane.start()
        self._thread = threading.Thread(target=self._run, name="alarms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for lane in self.lanes.values():
            lane.wake()
        if self._thread:
            self._thread.join(timeout=5)
        for lane in self.lanes.values():
            if lane.is_alive():
                lane.join(timeout=max(5.0, lane.sender.cfg.timeout + 1))

    def _run(self) -> None:
        while not self.stop_event.wait(TICK):
            try:
                self.tick(self.observe())
            except Exception:  # noqa: BLE001 - a bug here must not end alarm evaluation
                log.exception("alarm evaluation failed")

    # -- observation ----------------------------------------------------------------------
    def observe(self) -> Observation:
        app, st = self.app, self.store
        now = time.time()
        obs = Observation(now=now)
        models = {i.name: i.model for i in app.config.instrument}
        for r in st.latest():
            invalid = r["status"] & FLAG_INVALID
            obs.latest[r["field"]] = (r["t"], None if invalid else r["value"])
            over, under = T_LIMIT_BITS[models.get(r["node"], "372")]
            if r["units"] == "K" and r["status"] & over:
                obs.beyond[r["field"]] = "above"
            elif r["units"] == "K" and r["status"] & under:
                obs.beyond[r["field"]] = "below"
        for p in app.pollers:
            if p.health.connected or p.health.errors or p.health.cycles:  # not before its first attempt
                obs.connected[p.cfg.name] = bool(p.health.connected)
        obs.expected_gap = {name: due.gap for name, due in schedule(app.pollers, now).items()}
        # the store is "not writing" only when it has something to write and cannot
        pending = len(app.queue) > 0 or st.records_queued() > 0 or st.last_error_t > st.last_commit
        obs.last_commit = (st.last_commit or self.app.started) if pending else now
        for u in app.uplink_health():
            try:
                idx = int(u.name.removeprefix("uplink[").rstrip("]"))
            except ValueError:
                continue
            obs.backlog[idx] = u.backlog
        return obs

    # -- transitions ----------------------------------------------------------------------
    def tick(self, obs: Observation) -> None:
        with self._lock:
            self.ticks += 1
            for tr in self.engine.step(obs):
                self._transition(tr.kind, tr.rule, tr.state, tr.t)
            for st in self.engine.active():
                rule = self.rules[st.name]
                if not st.acked and rule.repeat > 0 and obs.now - self._last_notice.get(st.name, 0) >= rule.repeat:
                    self._notice(rule, st, "repeat", obs.now)
                    self._save(st, obs.now)

    def _transition(self, kind: str, rule, st: AlarmState, t: float) -> None:
        where = target_of(rule) or ""
        node = where.partition("::")[0] or None
        log.warning("alarm %s %s (%s): %s", rule.name, kind, rule.severity, st.detail)
        self.store.event(f"alarm_{kind}", node, f"{rule.name} ({rule.severity}): {st.detail}", t=t)
        self._notice(rule, st, kind, t)
        self._save(st, t)

    def _save(self, st: AlarmState, t: float) -> None:
        d = st.as_dict()
        d["last_notice"] = self._last_notice.get(st.name, 0.0)
        self.store.alarm_record("state", st.name, json.dumps(d), t)

    def _notice(self, rule, st: AlarmState, event: str, t: float) -> None:
        where = target_of(rule)
        body = {
            "alarm": rule.name,
            "event": event,
            "severity": rule.severity,
            "rule": rule.kind,
            "field" if getattr(rule, "field", None) else "instrument": where,
            "value": st.value,
            "detail": st.detail,
            "since": st.since,
            "t": t,
            "time": _iso(t),
        }
        if not where:
            body.pop("instrument", None)
        if event == "acknowledged":
            body["by"] = st.acked_by
        targets = list(rule.notify) if rule.notify is not None else [x.name for x in self.app.config.notify]
        # durable first: the lanes send it once the writer has journaled it (two commits on)
        notice = {
            "id": self._next_id,
            "t": t,
            "alarm": rule.name,
            "kind": event,
            "body": body,
            "targets": targets,
            "sent": set(),
            "durable_at": self.store.commits + 2,
            "queued": time.monotonic(),
        }
        self._next_id += 1
        self._last_notice[rule.name] = t
        self.store.alarm_record("notice", notice["id"], t, rule.name, event, json.dumps(body), json.dumps(targets))
        for target in targets:
            if target in self.lanes:
                self.lanes[target].put(notice)

    # -- acknowledgement and views ----------------------------------------------------------
    def ack(self, name: str, who: str) -> dict:
        """Acknowledge an active alarm: repeats stop; an "acknowledged" notice goes out once."""
        with self._lock:
            st = self.engine.states.get(name)
            if st is None:
                raise KeyError(name)
            if st.active and not st.acked:
                self.engine.ack(name, who)
                now = time.time()
                rule = self.rules[name]
                self.store.event(
                    "alarm_acknowledged", (target_of(rule) or "").partition("::")[0] or None, f"{name} by {who}", t=now
                )
                self._notice(rule, st, "acknowledged", now)
                self._save(st, now)
            return self.view(st)

    def view(self, st: AlarmState) -> dict:
        rule = self.rules[st.name]
        d = st.as_dict()
        d.update(kind=rule.kind, target=target_of(rule))
        return d

    def alarms(self) -> list[dict]:
        with self._lock:
            return [self.view(s) for s in self.engine.states.values()]

    def active(self) -> list[dict]:
        with self._lock:
            return [self.view(s) for s in self.engine.active()]

    def health(self) -> dict:
        return {
            "active": self.active(),
            "targets": [lane.as_dict() for lane in self.lanes.values()]
            + [{"name": n, "error": e} for n, e in self.target_errors.items()],
        }
