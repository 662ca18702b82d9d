"""The alarm loop: rules evaluated once a second, transitions turned into durable notices.

``AlarmService`` evaluates the rules (``appliance.alarms``), and for every transition records the
alarm's state, an event, and a *notice* (raised, repeat, acknowledged, cleared) through the
store's write path (``Store.alarm_record``), then hands the notice to each target's delivery
``Lane`` (``appliance.notify``).
"""

from __future__ import annotations

import json
import logging
import threading
import time

from .alarms import AlarmEngine, AlarmState, Observation, target_of
from .freshness import schedule
from .notify import Lane, Sender, iso_time
from .samples import FLAG_INVALID

log = logging.getLogger("kelvinpi.alarms")

TICK = 1.0
T_LIMIT_BITS = {"372": (64, 128), "240": (32, 16)}  # (T_OVER, T_UNDER) reading status bits


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
            "time": iso_time(t),
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
