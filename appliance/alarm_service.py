"""The alarm loop: rules evaluated as readings arrive (at least once a second), transitions
turned into durable notices.

``AlarmService`` evaluates the rules (``appliance.alarms``) on the readings as the pollers
delivered them (``appliance.latest``), not on what the store has managed to write. For every
transition it records the alarm's state and an event; a ``NoticeGate`` per rule decides which
transitions become *notices* (raised, repeat, flapping, acknowledged, cleared: at most
``NOTICES_PER_HOUR`` in any hour, every kind counted, see ``appliance.alarms``), recorded through
the store's write path (``Store.alarm_record``) and handed to each target's delivery ``Lane``
(``appliance.notify``).

Clocks are injected (``wall``, ``mono``) so a test can step the wall clock: timers run on the
monotonic one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .alarms import AlarmEngine, AlarmState, NoticeGate, Observation, target_of
from .freshness import schedule
from .latest import LatestReadings
from .models import limit_bits
from .notify import Lane, iso_time, sender_for

if TYPE_CHECKING:
    from .config import Config
    from .poller import Poller
    from .samples import SampleQueue
    from .store import Store

log = logging.getLogger("kelvinpi.alarms")

TICK = 1.0  # the longest pause between evaluations
MIN_TICK = 0.2  # the shortest: new readings wake the loop, but not more often than this
# A flapping rule's transitions are coalesced so an alarm storm cannot flood the store's record
# queue (it drops the oldest when full, and a full disk lets it fill): one "alarm_flapping" event
# per FLAP_EVENT_EVERY s summarising them, and its state saved when a notice goes out or at most
# every FLAP_SAVE_EVERY s. 80 flapping rules then queue a few thousand records an hour, not 40,000.
# Notice ids never repeat across runs (receivers deduplicate on them), even when a notice went out
# before its record was journaled and the next run's clock boots behind: each run reserves a block
# of ids in a state record of its own (not a rule name: NAME_RE refuses "#"), and its notices wait
# for that record's commit (as a notice waits for its own). The next run starts past every block.
ID_BLOCK = 1_000_000
IDS_STATE = "#notice-ids"
FLAP_EVENT_EVERY = 300.0
REMOVED_DETAIL = "cleared (rule removed from the configuration)"
FLAP_SAVE_EVERY = 60.0


class AlarmService:
    """The alarm loop and its lanes (started and stopped with the appliance).

    Its inputs are explicit: the config, the store (records, commit state), the delivered
    readings, the pollers (connection state, scan schedule, field names), the sample queue
    (is anything waiting to be written) and the uplinks' health (backlogs).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        latest: LatestReadings | None = None,
        pollers: Iterable[Poller] = (),
        queue: SampleQueue | None = None,
        uplink_health: Callable[[], list] = lambda: [],
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        boot: str | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.pollers = list(pollers)
        self.queue = queue
        self.uplink_health = uplink_health
        self.wall, self.mono = wall, mono
        # which monotonic line ``mono`` is on: a restart within the same boot carries the gates'
        # times exactly; an injected clock has none unless the caller names one
        self.boot = boot if boot is not None else (system_boot_id() if mono is time.monotonic else None)
        self.latest = latest if latest is not None else LatestReadings(mono)
        try:  # what the store held from before this run: a no_data rule knows how old it is
            self.latest.seed(store.latest())
        except Exception:  # noqa: BLE001 - a store that cannot be read does not stop the alarms
            log.exception("could not read the store's latest readings")
        self.rules = {r.name: r for r in config.alarm}
        self.models = {i.name: i.model for i in config.instrument}
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self.lanes: dict[str, Lane] = {}
        self.target_errors: dict[str, str] = {}
        for t in config.notify:
            try:
                self.lanes[t.name] = Lane(sender_for(t), self.store, self.stop_event)
            except PermissionError as exc:  # shown in health; the alarms still show on the panel
                self.target_errors[t.name] = str(exc)
                log.error("notify target %s not started: %s", t.name, exc)
        states, notices = self.store.alarm_load()
        self.engine = AlarmEngine(config.alarm, states)
        now, m = self.wall(), self.mono()
        self.gates: dict[str, NoticeGate] = {}
        for r in config.alarm:
            g = NoticeGate(r.repeat)
            saved = states.get(r.name) or {}
            if isinstance(saved.get("gate"), dict):  # what a person was told and what is owed survive a restart
                g.restore(saved["gate"], m, self.boot, wall=now)
            else:  # a state saved before the gate was
                if saved.get("last_notice"):  # stored as wall time: carried over onto this run's monotonic line
                    g.last_notice = m - max(0.0, now - float(saved["last_notice"]))
                if self.engine.states[r.name].active:
                    g.told_active = True
            self.gates[r.name] = g
        # ids never repeat across runs, even for a notice sent but not yet journaled when the process
        # died: past every stored one and every block reserved before (and this run's start in ms)
        try:
            reserved = int((states.get(IDS_STATE) or {}).get("next", 0))
        except (TypeError, ValueError):
            reserved = 0
        self._next_id = max(max([n["id"] for n in notices], default=0) + 1, reserved, int(now * 1000))
        self._reserve(now)
        for n in notices:
            for target in n["targets"]:
                if target in self.lanes and target not in n["sent"]:
                    self.lanes[target].put(n)
        # coalescing while a rule flaps: transitions not yet in an event, when the last summary went,
        # whether its state changed since it was last saved and when that was (monotonic)
        self._held: dict[str, dict[str, int]] = {}
        self._summary_at: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._saved_at: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.notices = 0  # recorded in this run
        # the store is "not writing" once it has had something to write and no commit for a while:
        # timed on the monotonic clock from the last commit seen (or the last moment nothing waited)
        self._commits_seen = getattr(store, "commits", 0)
        self._commit_mono = m
        # run-time field names: a rule whose field has not appeared one scan cycle after its
        # instrument connected is reported (event, log, health), once per connection
        self._connected_at: dict[str, tuple[int, float]] = {}
        self._reported: set[tuple[str, int]] = set()
        self.unmatched: dict[str, dict] = {}
        self._removed_rules(states, notices, now)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        for lane in self.lanes.values():
            lane.start()
        self._thread = threading.Thread(target=self._run, name="alarms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        with self._lock:  # a flapping rule's state not saved yet: saved now, for the next run
            now = self.wall()
            for name in sorted(self._dirty):
                self._save(self.engine.states[name], now)
        self.latest.updated.set()
        for lane in self.lanes.values():
            lane.wake()
        if self._thread:
            self._thread.join(timeout=5)
        for lane in self.lanes.values():
            if lane.is_alive():
                lane.join(timeout=max(5.0, lane.sender.cfg.timeout + 1))

    def _run(self) -> None:
        """Evaluate when readings arrive (a threshold crossed is seen within a poll, not a second),
        at most every MIN_TICK and at least every TICK."""
        while not self.stop_event.is_set():
            self.latest.updated.wait(TICK)
            self.latest.updated.clear()
            if self.stop_event.is_set():
                return
            try:
                self.tick(self.observe())
            except Exception:  # noqa: BLE001 - a bug here must not end alarm evaluation
                log.exception("alarm evaluation failed")
            self.stop_event.wait(MIN_TICK)

    # -- observation ----------------------------------------------------------------------
    def observe(self) -> Observation:
        st = self.store
        now, m = self.wall(), self.mono()
        obs = Observation(now=now, mono=m)
        for name, d in self.latest.snapshot().items():
            obs.latest[name] = (d.t, d.value)
            obs.units[name] = d.units
            if d.mono is not None:
                obs.age[name] = m - d.mono
            limits = limit_bits(self.models.get(d.node))
            beyond = limits.beyond(d.units, d.status)
            if beyond is not None:
                obs.beyond[name] = beyond
                if d.limit is not None:
                    obs.limit[name] = d.limit
        for p in self.pollers:
            if p.health.connected or p.health.errors or p.health.cycles:  # not before its first attempt
                obs.connected[p.cfg.name] = bool(p.health.connected)
        obs.expected_gap = {name: due.gap for name, due in schedule(self.pollers, now).items()}
        # the store is "not writing" only when it has something to write and cannot
        queued = len(self.queue) if self.queue is not None else 0
        pending = queued > 0 or st.records_queued() > 0 or st.last_error_t > st.last_commit
        if st.commits != self._commits_seen or not pending:
            self._commits_seen, self._commit_mono = st.commits, m
        obs.last_commit = self._commit_mono
        for u in self.uplink_health():
            if u.index is not None:  # every uplink build_uplinks made
                obs.backlog[u.index] = u.backlog
        self._check_fields(obs)
        return obs

    def _check_fields(self, obs: Observation) -> None:
        """Rules on fields whose names come from the instrument at run time: once the instrument
        has been connected for a scan cycle (plus a poll) and the field is neither planned nor
        delivered, say so: an ``alarm_rule_unmatched`` event, a log line, a health entry."""
        m = obs.clock
        for p in self.pollers:
            name = p.cfg.name
            if not p.health.connected:
                continue
            conn = p.health.reconnects
            if self._connected_at.get(name, (None, 0.0))[0] != conn:
                self._connected_at[name] = (conn, m)
            since = self._connected_at[name][1]
            interval = getattr(p, "interval", p.cfg.interval)
            gaps = [g for f, g in obs.expected_gap.items() if f.startswith(name + "::")]
            if m - since < max(gaps, default=interval) + interval:
                continue
            known = {k.name for plan in list(p.plans.values()) for k in (plan.kelvin, plan.sensor) if k is not None}
            known |= {f for f in obs.age if f.startswith(name + "::")}  # delivered in this run
            for rule in self.rules.values():
                f = getattr(rule, "field", None)
                if not f or f.partition("::")[0] != name:
                    continue
                if f in known:
                    self.unmatched.pop(rule.name, None)
                    continue
                fields = sorted(known)
                self.unmatched[rule.name] = {
                    "rule": rule.name,
                    "field": f,
                    "instrument": name,
                    "instrument_fields": fields,
                }
                if (rule.name, conn) not in self._reported:
                    self._reported.add((rule.name, conn))
                    detail = f"rule {rule.name}: no field {f} on {name}; its fields: {', '.join(fields) or 'none yet'}"
                    log.warning("alarm %s", detail)
                    self.store.event("alarm_rule_unmatched", name, detail, t=obs.now)

    # -- transitions ----------------------------------------------------------------------
    def tick(self, obs: Observation) -> None:
        with self._lock:
            self.ticks += 1
            m = obs.clock
            for tr in self.engine.step(obs):
                self._transition(tr.kind, tr.rule, tr.state, tr.t, m)
            for st in self.engine.states.values():
                rule = self.rules[st.name]
                gate = self.gates[st.name]
                kind = gate.tick(st.active, st.acked, m)
                if st.name in self._held and (
                    kind is not None or not gate.flapping or m - self._summary_at.get(st.name, m) >= FLAP_EVENT_EVERY
                ):
                    self._summarise(rule, st, obs.now)
                if kind is not None:
                    self._notice(rule, st, kind, obs.now)
                    self._save(st, obs.now)
                elif st.name in self._dirty and m - self._saved_at.get(st.name, m) >= FLAP_SAVE_EVERY:
                    self._save(st, obs.now)

    def _transition(self, kind: str, rule: Any, st: AlarmState, t: float, mono: float) -> None:
        """Every transition is logged and an event; the gate says whether it is also a notice.
        While a rule flaps, transitions that are no notice are coalesced (``_summarise``)."""
        gate = self.gates[rule.name]
        notice = gate.transition(kind, mono)
        # the journal gets what a person is told; a flapping rule's every transition only at debug level
        log.log(
            logging.WARNING if notice else logging.DEBUG,
            "alarm %s %s (%s): %s",
            rule.name,
            notice or kind,
            rule.severity,
            st.detail,
        )
        if notice is None and gate.flapping:
            held = self._held.setdefault(rule.name, {"raised": 0, "cleared": 0})
            if not any(held.values()):
                self._summary_at.setdefault(rule.name, mono)
            held[kind] += 1
            self._dirty.add(rule.name)
            self._saved_at.setdefault(rule.name, mono)
            return
        if rule.name in self._held:
            self._summarise(rule, st, t)
        self.store.event(f"alarm_{kind}", _node(rule), f"{rule.name} ({rule.severity}): {st.detail}", t=t)
        if notice is not None:
            self._notice(rule, st, notice, t)
        self._save(st, t)

    def _reserve(self, t: float) -> None:
        """Reserve the ids from ``_next_id`` on: durable before any of them goes out."""
        self._id_limit = self._next_id + ID_BLOCK
        self.store.alarm_record("state", IDS_STATE, json.dumps({"next": self._id_limit}), t)
        self._ids_durable_at = getattr(self.store, "commits", 0) + 2

    def _summarise(self, rule: Any, st: AlarmState, t: float) -> None:
        """One event for a flapping rule's coalesced transitions: how many of each, and the state now."""
        held = self._held.pop(rule.name, None)
        self._summary_at[rule.name] = self.mono()
        if not held or not any(held.values()):
            return
        self.store.event(
            "alarm_flapping",
            _node(rule),
            f"{rule.name} ({rule.severity}): raised {held['raised']} times, cleared {held['cleared']} times; "
            f"now {'raised' if st.active else 'cleared'}: {st.detail}",
            t=t,
        )

    def _save(self, st: AlarmState, t: float) -> None:
        d = st.as_dict()
        g = self.gates[st.name]
        # stored as wall time (a restart has a new monotonic line)
        d["last_notice"] = 0.0 if g.last_notice is None else t - max(0.0, self.mono() - g.last_notice)
        d["gate"] = g.dump(self.mono(), self.boot)
        # whom it notifies (None: every target), for the "cleared" a restart without the rule owes
        rule = self.rules.get(st.name)
        d["notify"] = None if rule is None or rule.notify is None else list(rule.notify)
        self.store.alarm_record("state", st.name, json.dumps(d), t)
        self._dirty.discard(st.name)
        self._saved_at[st.name] = self.mono()

    def _removed_rules(self, states: dict[str, dict], notices: list[dict], t: float) -> None:
        """An alarm of a rule no longer configured (renamed or removed) whose person last heard
        "raised" (saved active, or saved cleared while that "cleared" was still held by the hourly
        cap: the gate's ``told_active``): no evaluation will ever tell it again, so it is told
        "cleared (rule removed from the configuration)" now, once (an event, and a notice to the
        rule's own targets that are still configured, see ``_removed_targets``), and saved cleared
        without its gate so the next restart does not tell it again."""
        for name, saved in sorted(states.items()):
            if name in self.rules or name.startswith("#"):
                continue
            gate = saved.get("gate")
            told_raised = isinstance(gate, dict) and gate.get("told_active") is True
            if not saved.get("active") and not told_raised:
                continue
            targets, note = self._removed_targets(name, saved, notices)
            detail = REMOVED_DETAIL if not note else f"{REMOVED_DETAIL[:-1]}; {note})"
            severity = str(saved.get("severity", ""))
            log.warning("alarm %s cleared: %s", name, detail)
            self.store.event("alarm_cleared", None, f"{name} ({severity}): {detail}", t=t)
            body = {
                "alarm": name,
                "event": "cleared",
                "severity": severity,
                "value": saved.get("value"),
                "detail": detail,
                "since": saved.get("since"),
                "t": t,
                "time": iso_time(t),
            }
            self._record_notice(name, "cleared", body, targets, t)
            st = {**saved, "active": False, "acked": False, "detail": detail, "cleared_at": t}
            st.pop("gate", None)
            self.store.alarm_record("state", name, json.dumps(st), t)

    def _removed_targets(self, name: str, saved: dict, notices: list[dict]) -> tuple[list[str], str]:
        """Where a removed rule's "cleared" goes, and what to say about it: the rule's own targets
        (its ``notify`` as last saved; for a state saved before that was, the targets of its stored
        notices) that are still configured; when none of them is, every configured target, and
        the notice says so (a "cleared" nobody receives would leave the "raised" standing)."""
        everyone = [x.name for x in self.config.notify]
        if "notify" in saved:
            own = saved["notify"]
        else:
            told = [n for n in notices if n.get("alarm") == name]
            own = list(dict.fromkeys(x for n in told for x in n.get("targets", []))) if told else None
        if own is None:  # the rule notified every target: the ones configured now
            return everyone, ""
        kept = [x for x in own if x in everyone]
        if kept or not own or not everyone:  # notify = [] told nobody the raise: nobody is owed this
            return kept, ""
        gone = f"its target{'s' if len(own) > 1 else ''} {', '.join(own)} no longer configured"
        return everyone, f"{gone}: sent to every target"

    def _notice(self, rule: Any, st: AlarmState, event: str, t: float) -> None:
        where = target_of(rule)
        detail = st.detail
        if event == "flapping":
            n = self.gates[rule.name].raised_in_hour()
            detail = (
                f"flapping: raised {n} times in the last hour; now {'raised' if st.active else 'cleared'}: {st.detail}"
            )
        body = {
            "alarm": rule.name,
            "event": event,
            "severity": rule.severity,
            "rule": rule.kind,
            "field" if getattr(rule, "field", None) else "instrument": where,
            "value": st.value,
            "detail": detail,
            "since": st.since,
            "t": t,
            "time": iso_time(t),
        }
        if not where:
            body.pop("instrument", None)
        if event == "acknowledged":
            body["by"] = st.acked_by
        targets = list(rule.notify) if rule.notify is not None else [x.name for x in self.config.notify]
        self._record_notice(rule.name, event, body, targets, t)

    def _record_notice(self, alarm: str, event: str, body: dict, targets: list[str], t: float) -> None:
        """Record one notice and hand it to its targets' lanes."""
        # Durable first: the lanes send it once the writer has journaled it (two commits on, up to
        # 2 s), except what wakes a person: a "raised" (or "flapping") notice goes at once (the
        # measured 1.9 s of waiting was most of the time from a crossing to the receiver), and so
        # does every notice while the store is failing its writes (it says so itself). A crash in
        # the moment before the journal has it may send that raise again after the restart, never lose it.
        failing = self.store.last_error_t > self.store.last_commit
        urgent = event in ("raised", "flapping")
        if self._next_id >= self._id_limit:
            self._reserve(t)
        durable_at = None if failing or urgent else self.store.commits + 2
        if not failing and self.store.commits < self._ids_durable_at:  # this run's ids not durable yet
            durable_at = max(durable_at or 0, self._ids_durable_at)
        notice: dict[str, Any] = {
            "id": self._next_id,
            "t": t,
            "alarm": alarm,
            "kind": event,
            "body": body,
            "targets": targets,
            "sent": set(),
            "durable_at": durable_at,
            "queued": time.monotonic(),
        }
        self._next_id += 1
        self.notices += 1
        self.store.alarm_record("notice", notice["id"], t, alarm, event, json.dumps(body), json.dumps(targets))
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
                now = self.wall()
                rule = self.rules[name]
                told = self.gates[name].acknowledged(self.mono())  # within the rule's hourly budget
                self.store.event("alarm_acknowledged", _node(rule), f"{name} by {who}", t=now)
                if told:
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
        with self._lock:
            unmatched = list(self.unmatched.values())
            held = {n: g.suppressed for n, g in self.gates.items() if g.suppressed}
            flapping = sorted(n for n, g in self.gates.items() if g.flapping)
        return {
            "active": self.active(),
            # rules whose field the instrument does not have (for the panel: rule, field, the fields it has)
            "unmatched": unmatched,
            "flapping": flapping,
            "notices_held": held,  # per rule: transitions coalesced or over the hourly cap (events keep them)
            "targets": [lane.as_dict() for lane in self.lanes.values()]
            + [{"name": n, "error": e} for n, e in self.target_errors.items()],
        }


def system_boot_id() -> str | None:
    """This boot's id (Linux): the monotonic clock's line, the same for every process until a reboot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _node(rule: object) -> str | None:
    """The instrument a rule's events belong to (None for the store and backlog rules)."""
    return (target_of(rule) or "").partition("::")[0] or None
