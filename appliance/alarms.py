"""Alarm rules evaluated on what the appliance sees: pure, so a test can feed it a sequence.

``AlarmEngine.step(obs)`` takes one ``Observation`` (the latest reading of every series, which
instruments answer, when the store last committed, uplink backlogs, at time ``obs.now``) and
returns the transitions it caused: an alarm ``raised`` or ``cleared``. It keeps, per rule, when
the condition started (for the hold time), whether the alarm is active and acknowledged, and
for rate rules a short history of the series. Nothing here talks to the network or the store;
``appliance.alarm_service`` turns transitions into durable notifications.

Rules (``appliance.config``). A rule's ``field`` (a public config key) is the whole series name,
``node::field``, as the JSON API and exports say it; in code the series name is ``SeriesKey.name``
and ``field`` alone is the short part (``appliance.naming``).

* ``above`` / ``below``: the field past ``threshold`` for ``hold`` s; cleared once back past it
  by ``hysteresis``. A reading flagged T_OVER (T_UNDER) counts as above (below): a stage warmed
  past its sensor's curve is the alarm, not a gap. Otherwise a flagged reading is no reading.
* ``rate``: the least-squares slope over the last ``window`` seconds, in units per minute,
  beyond ``threshold`` in ``direction`` (with at least three readings spanning half the window).
* ``no_data``: the latest reading older than the expected gap (a scanned 372 channel's revisit
  time, else the poll interval) plus ``seconds``. Scanner-aware, so a channel the autoscan
  reaches every 90 s is not "silent" after 30 s.
* ``disconnected``: the instrument not answering (for ``hold`` s).
* ``store_not_writing``: no successful commit for ``seconds``.
* ``backlog``: an uplink's unacknowledged samples above ``threshold``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

from .config import BacklogAlarm, DisconnectedAlarm, NoDataAlarm, RateAlarm, StoreAlarm, ThresholdAlarm


@dataclass
class Observation:
    """What the appliance looks like at ``now`` (UNIX seconds)."""

    now: float
    # keyed by series name (node::field)
    latest: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # -> (t, value or None)
    expected_gap: dict[str, float] = field(default_factory=dict)  # -> seconds between readings
    beyond: dict[str, str] = field(default_factory=dict)  # -> "above"/"below": the latest reading is
    # flagged T_OVER / T_UNDER (no value, but surely past any threshold inside the curve)
    connected: dict[str, bool] = field(default_factory=dict)  # instrument -> answers
    last_commit: float | None = None  # None: the store has not committed yet (just started)
    backlog: dict[int, int] = field(default_factory=dict)  # uplink index -> samples not acknowledged


@dataclass
class AlarmState:
    """One rule's durable state (restored after a restart)."""

    name: str
    severity: str
    active: bool = False
    acked: bool = False
    since: float | None = None  # raised at
    value: float | None = None  # the value that raised it (or the latest while active)
    detail: str = ""
    cleared_at: float | None = None
    acked_by: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transition:
    kind: str  # "raised" | "cleared"
    rule: object
    state: AlarmState
    t: float


class _Rule:
    """Per-rule working state beyond the durable one: when the condition began, rate history."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.pending_since: float | None = None
        self.history: deque[tuple[float, float]] = deque()


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, v) points in units per minute."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / den


class AlarmEngine:
    def __init__(self, rules: list, saved: dict[str, dict] | None = None) -> None:
        self.rules = [_Rule(r) for r in rules]
        self.states: dict[str, AlarmState] = {}
        saved = saved or {}
        for r in rules:
            st = AlarmState(r.name, r.severity)
            old = saved.get(r.name)
            if old and old.get("active"):  # a restart keeps an active alarm and whether it was acknowledged
                st.active, st.acked, st.since = True, bool(old.get("acked")), old.get("since")
                st.value, st.detail, st.acked_by = old.get("value"), old.get("detail", ""), old.get("acked_by")
            self.states[r.name] = st

    def active(self) -> list[AlarmState]:
        return [s for s in self.states.values() if s.active]

    def ack(self, name: str, who: str) -> AlarmState:
        st = self.states.get(name)
        if st is None:
            raise KeyError(name)
        if st.active and not st.acked:
            st.acked, st.acked_by = True, who
        return st

    # -- evaluation -------------------------------------------------------------------
    def step(self, obs: Observation) -> list[Transition]:
        out: list[Transition] = []
        for r in self.rules:
            cond, clear, value, detail = self._condition(r, obs)
            st = self.states[r.cfg.name]
            if not st.active:
                if cond:
                    if r.pending_since is None:
                        r.pending_since = obs.now
                    if obs.now - r.pending_since >= r.cfg.hold:
                        st.active, st.acked, st.acked_by, st.since = True, False, None, obs.now
                        st.value, st.detail, st.cleared_at = value, detail, None
                        out.append(Transition("raised", r.cfg, st, obs.now))
                else:
                    r.pending_since = None
            else:
                if value is not None:
                    st.value = value
                if clear:
                    st.active, st.cleared_at, st.detail = False, obs.now, detail
                    r.pending_since = None
                    out.append(Transition("cleared", r.cfg, st, obs.now))
        return out

    def _condition(self, r: _Rule, obs: Observation) -> tuple[bool, bool, float | None, str]:
        """(raise condition, clear condition, value, detail) for one rule now."""
        c = r.cfg
        if isinstance(c, ThresholdAlarm):
            t, v = obs.latest.get(c.field, (None, None))
            beyond = obs.beyond.get(c.field)
            if beyond == c.kind:  # past the end of the sensor's curve (T_OVER / T_UNDER): surely past the threshold
                return True, False, None, f"{'over' if beyond == 'above' else 'under'} the sensor curve's range"
            if v is None or not math.isfinite(v):
                return False, False, None, "no valid reading"
            if c.kind == "above":
                return v > c.threshold, v <= c.threshold - c.hysteresis, v, f"{v:.6g} > {c.threshold:g}"
            return v < c.threshold, v >= c.threshold + c.hysteresis, v, f"{v:.6g} < {c.threshold:g}"
        if isinstance(c, RateAlarm):
            t, v = obs.latest.get(c.field, (None, None))
            h = r.history
            if t is not None and v is not None and math.isfinite(v) and (not h or t > h[-1][0]):
                h.append((t, v))
            while h and h[0][0] < obs.now - c.window:
                h.popleft()
            if len(h) < 3 or h[-1][0] - h[0][0] < c.window / 2:
                return False, False, None, "too few readings for a rate"
            rate = slope_per_minute(list(h))
            signed = {"rising": rate, "falling": -rate, "either": abs(rate)}[c.direction]
            return signed > c.threshold, signed <= c.threshold, rate, f"{rate:+.4g} /min over {c.window:g} s"
        if isinstance(c, NoDataAlarm):
            t, _v = obs.latest.get(c.field, (None, None))
            gap = obs.expected_gap.get(c.field, 0.0)
            if t is None:
                return False, False, None, "no reading yet"
            age = obs.now - t
            return age > gap + c.seconds, age <= gap + c.seconds, age, f"no reading for {age:.0f} s"
        if isinstance(c, DisconnectedAlarm):
            up = obs.connected.get(c.instrument)
            if up is None:
                return False, False, None, "not polled"
            return not up, up, None, ("connected" if up else "not answering")
        if isinstance(c, StoreAlarm):
            if obs.last_commit is None:
                return False, False, None, "no commit yet"
            age = obs.now - obs.last_commit
            return age > c.seconds, age <= c.seconds, age, f"no commit for {age:.0f} s"
        if isinstance(c, BacklogAlarm):
            n = obs.backlog.get(c.uplink)
            if n is None:
                return False, False, None, "uplink not running"
            return n > c.threshold, n <= c.threshold, float(n), f"{n} samples not acknowledged"
        raise TypeError(f"unknown alarm rule {c!r}")


def target_of(rule) -> str | None:
    """What a rule watches: a series name (node::field, the rule's ``field`` key) or an instrument;
    None for the store and backlog rules."""
    return getattr(rule, "field", None) or getattr(rule, "instrument", None)
