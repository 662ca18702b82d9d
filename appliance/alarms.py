"""Alarm rules evaluated on what the appliance sees: pure, so a test can feed it a sequence.

``AlarmEngine.step(obs)`` takes one ``Observation`` (the latest reading of every series as the
pollers delivered it, which instruments answer, when the store last committed, uplink backlogs)
and returns the transitions it caused: an alarm ``raised`` or ``cleared``. It keeps, per rule,
when the condition started (for the hold time), whether the alarm is active and acknowledged,
and for rate rules a short history of the series. Nothing here talks to the network or the
store; ``appliance.alarm_service`` turns transitions into durable notifications, through a
``NoticeGate`` per rule (below) that bounds them.

Two clocks. ``obs.mono`` (monotonic seconds) times everything that is a timer: the hold, the
store's silence, repeats, flapping and the notice cap, so a stepped wall clock (NTP's first sync
on a Pi without an RTC, an operator's ``date -s``) neither delays nor hastens an alarm.
``obs.now`` (UNIX seconds) is what a person reads (``since``, ``cleared_at``) and what reading
timestamps are compared with (a rate's window, a stored reading's age).

Rules (``appliance.config``). A rule's ``field`` (a public config key) is the whole series name,
``node::field``, as the JSON API and exports say it; in code the series name is ``SeriesKey.name``
and ``field`` alone is the short part (``appliance.naming``).

* ``above`` / ``below``: the field past ``threshold`` for ``hold`` s; cleared once back past it
  by ``hysteresis``. Limit bits (``models.LimitBits``): a reading past the end of its range, a
  Lake Shore curve's T_OVER / T_UNDER or a gauge's OVERRANGE / UNDERRANGE, has no value but says
  on which side the truth lies. When the instrument sent the limit it ran past (a gauge's number
  beside the flag, ``Observation.limit``), the limit decides: OVERRANGE at 1e-2 mbar is above a
  1e-3 threshold and says nothing of a 100 mbar one; UNDERRANGE at 5e-9 clears an ``above`` rule
  whose clearing level is above 5e-9 (OVERRANGE likewise clears a ``below``). Without a limit (a
  curve's end: no number is sent) the flag still raises its own side, since a stage warmed past
  its curve is the alarm, not a gap, but never clears the other side: raising on a flagged reading
  errs towards telling, clearing would err towards silence. Otherwise a flagged reading is no reading.
* ``rate``: the least-squares slope over the last ``window`` seconds, in units per minute,
  beyond ``threshold`` in ``direction`` (with at least three readings spanning half the window).
  A flagged reading (overrange and underrange included) is not in the window: a jump from a good
  reading to OVERRANGE is no rate; an ``above`` rule is the one that sees it.
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
from typing import Any, ClassVar

from .config import BacklogAlarm, DisconnectedAlarm, NoDataAlarm, RateAlarm, StoreAlarm, ThresholdAlarm

NOTICES_PER_HOUR = 12  # per rule, in any hour, every kind of notice counted (the README states it)
# The hour's budget is shared out so the cap never delays what matters most: reminders and flapping
# summaries stop at cap - KEEP_FOR_STATE - KEEP_FOR_RAISE (8), the plain state (cleared, the settled
# state, an acknowledgement) at cap - KEEP_FOR_RAISE (10), and the last two are for a raise of a rule
# that is not flapping. A rule not flapping has at most two raises in any hour, so such a raise
# always finds room: it never waits.
KEEP_FOR_STATE = 2
KEEP_FOR_RAISE = 2
FLAP_RAISES = 3  # raised this many times within the last hour: the rule is flapping
FLAP_QUIET = 120.0  # seconds without a transition before a flapping (or capped) rule counts as settled
HOUR = 3600.0
# a flapping rule that raises again after this long without a transition is told at once from the
# whole cap even when a person's last notice (its "cleared" held by the cap) still said "raised"
RAISE_QUIET = 600.0


@dataclass
class Observation:
    """What the appliance looks like at ``now`` (UNIX seconds) and ``mono`` (monotonic seconds).

    ``mono`` None (pure tests with one clock): ``now`` serves as both."""

    now: float
    mono: float | None = None
    # keyed by series name (node::field)
    latest: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # -> (t, value or None)
    expected_gap: dict[str, float] = field(default_factory=dict)  # -> seconds between readings
    beyond: dict[str, str] = field(default_factory=dict)  # -> "above"/"below": the latest reading is
    # flagged past its range's end (T_OVER / T_UNDER, OVERRANGE / UNDERRANGE): no value, but a side
    limit: dict[str, float] = field(default_factory=dict)  # -> the range's end the instrument sent beside
    # that flag (a gauge's limit), in the series' units; absent: not sent (a sensor curve's end)
    connected: dict[str, bool] = field(default_factory=dict)  # instrument -> answers
    last_commit: float | None = None  # on the ``clock`` time line; None: not committed yet (just started)
    backlog: dict[int, int] = field(default_factory=dict)  # uplink index -> samples not acknowledged
    units: dict[str, str] = field(default_factory=dict)  # series name -> units, for what a person reads
    age: dict[str, float] = field(default_factory=dict)  # series name -> seconds since it was delivered
    # (monotonic); a series missing here (a reading from the store, before this run) ages by ``now - t``

    @property
    def clock(self) -> float:
        """The timer clock: monotonic when given."""
        return self.now if self.mono is None else self.mono


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
    t: float  # wall clock, for people
    mono: float = 0.0  # the timer clock


@dataclass
class Condition:
    """One rule evaluated once: whether to raise, whether to clear, and what to tell a person either way."""

    raise_: bool
    clear: bool
    value: float | None
    detail: str  # why it is (or would be) raised
    cleared: str = ""  # what happened when it clears ("back below 0.05 K: 0.0209 K")


class _Rule:
    """Per-rule working state beyond the durable one: when the condition began, and the rule's
    kind-specific condition (which keeps whatever history its kind needs, such as a rate's)."""

    def __init__(self, cfg: Any) -> None:  # its kind's own config model (a ThresholdAlarm, ...)
        self.cfg = cfg
        self.pending_since: float | None = None  # monotonic
        self.condition = condition_for(cfg)


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
            elif old:  # and what a cleared one said: a "cleared" still owed after a restart says it too
                st.since, st.value, st.detail = old.get("since"), old.get("value"), old.get("detail", "")
                st.cleared_at = old.get("cleared_at")
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
        clock = obs.clock
        for r in self.rules:
            c = self._condition(r, obs)
            st = self.states[r.cfg.name]
            if not st.active:
                if c.raise_:
                    if r.pending_since is None:
                        r.pending_since = clock
                    if clock - r.pending_since >= r.cfg.hold:
                        st.active, st.acked, st.acked_by, st.since = True, False, None, obs.now
                        st.value, st.detail, st.cleared_at = c.value, c.detail, None
                        out.append(Transition("raised", r.cfg, st, obs.now, clock))
                else:
                    r.pending_since = None
            else:
                if c.value is not None:
                    st.value = c.value
                if c.clear:
                    # the cleared notice says what happened, never the raise's reason
                    st.active, st.cleared_at, st.detail = False, obs.now, c.cleared or c.detail
                    r.pending_since = None
                    out.append(Transition("cleared", r.cfg, st, obs.now, clock))
        return out

    def _condition(self, r: _Rule, obs: Observation) -> Condition:
        """Raise condition, clear condition, value and what to say, for one rule now."""
        return r.condition.evaluate(obs)


# -- one condition class per rule kind -------------------------------------------------
class RuleCondition:
    """How one kind of rule is evaluated. ``model`` is the kind's config model (``appliance.config``);
    one instance per configured rule, so a kind that needs history (rate) keeps it on ``self``.

    A new alarm kind: its config model (a ``_AlarmBase`` subclass in ``ALARM_MODELS``), a subclass
    here with ``model`` set and ``evaluate`` written, and its line in ``CONDITIONS``."""

    model: ClassVar[type]

    def __init__(self, cfg: Any) -> None:  # its kind's own config model (a ThresholdAlarm, ...)
        self.cfg = cfg

    def evaluate(self, obs: Observation) -> Condition:
        raise NotImplementedError


class ThresholdCondition(RuleCondition):
    """``above`` / ``below``: past the threshold; cleared once back past it by the hysteresis."""

    model = ThresholdAlarm

    def evaluate(self, obs: Observation) -> Condition:
        c = self.cfg
        _t, v = obs.latest.get(c.field, (None, None))
        u = obs.units.get(c.field, "")
        beyond = obs.beyond.get(c.field)
        if beyond is not None:
            return self._past_range(beyond, obs.limit.get(c.field), u)
        if v is None or not math.isfinite(v):
            return Condition(False, False, None, "no valid reading")
        if c.kind == "above":
            level = c.threshold - c.hysteresis
            return Condition(
                v > c.threshold,
                v <= level,
                v,
                _units(f"{_distinct(v, c.threshold, 6)} {u} > {c.threshold:g} {u}"),
                _units(f"back below {level:g} {u}: {_distinct(v, level, 3)} {u}"),
            )
        level = c.threshold + c.hysteresis
        return Condition(
            v < c.threshold,
            v >= level,
            v,
            _units(f"{_distinct(v, c.threshold, 6)} {u} < {c.threshold:g} {u}"),
            _units(f"back above {level:g} {u}: {_distinct(v, level, 3)} {u}"),
        )

    def _past_range(self, beyond: str, limit: float | None, u: str) -> Condition:
        """A reading flagged past its range's end: raise, clear or hold (see the module's docstring)."""
        c = self.cfg
        what = "the sensor curve's range" if u == "K" else "the gauge's range"
        said = f"{'over' if beyond == 'above' else 'under'} {what}"
        if limit is not None:
            said += " " + _units(f"({'>' if beyond == 'above' else '<'} {limit:g} {u})")
        sign = 1.0 if c.kind == "above" else -1.0
        if beyond == c.kind:  # past the end on the rule's side: past the threshold unless the end is short of it
            if limit is None or sign * (limit - c.threshold) >= 0:
                return Condition(True, False, None, said)
            return Condition(False, False, None, f"{said}, short of {c.threshold:g} {u}: unknown")
        level = c.threshold - sign * c.hysteresis
        if limit is not None and sign * (limit - level) <= 0:  # the other side, beyond the clearing level
            return Condition(
                False, True, None, said, _units(f"back {'below' if sign > 0 else 'above'} {level:g} {u}: {said}")
            )
        return Condition(False, False, None, said)


class RateCondition(RuleCondition):
    """``rate``: the least-squares slope over the window, from the readings this rule has seen."""

    model = RateAlarm

    def __init__(self, cfg: Any) -> None:  # its kind's own config model (a ThresholdAlarm, ...)
        super().__init__(cfg)
        self.history: deque[tuple[float, float]] = deque()

    def evaluate(self, obs: Observation) -> Condition:
        c = self.cfg
        t, v = obs.latest.get(c.field, (None, None))
        h = self.history
        if t is not None and v is not None and math.isfinite(v):
            if h and t < h[-1][0]:  # reading times went back (a wall-clock step): start the window again
                h.clear()
            if not h or t > h[-1][0]:
                h.append((t, v))
        while h and h[0][0] < obs.now - c.window:
            h.popleft()
        if len(h) < 3 or h[-1][0] - h[0][0] < c.window / 2:
            return Condition(False, False, None, "too few readings for a rate")
        rate = slope_per_minute(list(h))
        signed = {"rising": rate, "falling": -rate, "either": abs(rate)}[c.direction]
        return Condition(
            signed > c.threshold,
            signed <= c.threshold,
            rate,
            f"{rate:+.4g} /min over {c.window:g} s",
            f"rate back within {c.threshold:g} /min ({c.direction}): {rate:+.4g} /min over {c.window:g} s",
        )


class NoDataCondition(RuleCondition):
    """``no_data``: the latest reading older than the expected gap plus ``seconds``."""

    model = NoDataAlarm

    def evaluate(self, obs: Observation) -> Condition:
        c = self.cfg
        t, _v = obs.latest.get(c.field, (None, None))
        gap = obs.expected_gap.get(c.field, 0.0)
        if t is None:
            return Condition(False, False, None, "no reading yet")
        age = obs.age.get(c.field, obs.now - t)
        return Condition(
            age > gap + c.seconds,
            age <= gap + c.seconds,
            age,
            f"no reading for {age:.0f} s",
            f"readings again: the latest {age:.0f} s old",
        )


class DisconnectedCondition(RuleCondition):
    """``disconnected``: the instrument not answering."""

    model = DisconnectedAlarm

    def evaluate(self, obs: Observation) -> Condition:
        up = obs.connected.get(self.cfg.instrument)
        if up is None:
            return Condition(False, False, None, "not polled")
        return Condition(not up, up, None, "not answering", "answering again")


class StoreCondition(RuleCondition):
    """``store_not_writing``: no commit for ``seconds`` (on the timer clock)."""

    model = StoreAlarm

    def evaluate(self, obs: Observation) -> Condition:
        if obs.last_commit is None:
            return Condition(False, False, None, "no commit yet")
        age = obs.clock - obs.last_commit
        s = self.cfg.seconds
        return Condition(age > s, age <= s, age, f"no commit for {age:.0f} s", "committing again")


class BacklogCondition(RuleCondition):
    """``backlog``: an uplink's unacknowledged samples above ``threshold``."""

    model = BacklogAlarm

    def evaluate(self, obs: Observation) -> Condition:
        c = self.cfg
        n = obs.backlog.get(c.uplink)
        if n is None:
            return Condition(False, False, None, "uplink not running")
        return Condition(
            n > c.threshold,
            n <= c.threshold,
            float(n),
            f"{n} samples not acknowledged",
            f"backlog back to {n} samples (at most {c.threshold})",
        )


# The registry: config model -> condition class. A new kind is one class above and one line here.
CONDITIONS: dict[type, type[RuleCondition]] = {
    c.model: c
    for c in (
        ThresholdCondition,
        RateCondition,
        NoDataCondition,
        DisconnectedCondition,
        StoreCondition,
        BacklogCondition,
    )
}


def condition_for(cfg: Any) -> RuleCondition:
    """The condition evaluating one configured rule."""
    cls = CONDITIONS.get(type(cfg))
    if cls is None:
        raise TypeError(f"unknown alarm rule {cfg!r}")
    return cls(cfg)


def _distinct(v: float, ref: float, digits: int) -> str:
    """``v`` with at least ``digits`` significant digits, and more until it visibly differs from
    ``ref`` as shown (``:g``): 0.011499 against 0.0115 reads "0.011499", not "0.0115" (up to repr)."""
    shown = f"{ref:g}"
    for p in range(digits, 18):
        text = f"{v:.{p}g}"
        if v == ref or (text != shown and float(text) != ref):
            return text
    return repr(v)


def _units(text: str) -> str:
    """A detail without units reads "0.06 > 0.05", not "0.06  > 0.05 "."""
    return " ".join(text.split()).replace(" :", ":")


def target_of(rule: object) -> str | None:
    """What a rule watches: a series name (node::field, the rule's ``field`` key) or an instrument;
    None for the store and backlog rules."""
    return getattr(rule, "field", None) or getattr(rule, "instrument", None)


class NoticeGate:
    """Which notices one rule sends: every transition is an event, but notices are bounded.

    * At most ``cap`` notices in any hour (``NOTICES_PER_HOUR``), every kind counted, none exempt.
      The budget has three tiers (``limit``): reminders ("repeat") and flapping summaries may use
      the first ``cap - KEEP_FOR_STATE - KEEP_FOR_RAISE``; the plain state ("cleared", the settled
      state, "acknowledged") up to ``cap - KEEP_FOR_RAISE``; a raise of a rule that is not
      flapping (a plain "raised", or the "flapping" notice of the raise that starts a spell: the
      third in an hour, or the first after the rule settled) the whole ``cap`` when a person was
      last told the alarm is clear (or nothing) or the rule had been quiet ``RAISE_QUIET`` s. So
      a raise is never delayed by the cap: a person last told "cleared" was told so by a notice
      of a lower tier, which leaves ``KEEP_FOR_RAISE`` free, and only a raise uses them (more
      than ``cap - KEEP_FOR_RAISE`` in the hour implies the last notice said "raised"); a raise
      that finds no room is one the last notice a person has already announces ("raised", the
      "cleared" in between held back), so there is nothing new to tell.
    * A rule raised ``FLAP_RAISES`` times within the last hour is *flapping*: the raise that makes
      it so goes at once as "flapping: raised N times in the last hour" (a raise after quiet
      wakes a person), then its raised/cleared notices are coalesced into one such notice per
      ``interval`` (the rule's ``repeat``, an hour when it repeats never) while it goes on.
    * Once it has been quiet for ``settle`` s (``FLAP_QUIET``, or ``interval`` if shorter) the
      current state ("raised"/"cleared") goes out plainly, and whenever what a person was last
      told is not the alarm's state (a notice held back by the budget) the current one goes out
      as soon as the plain-state tier has room. When the budget is spent the settle period is
      thereby lengthened, never skipped: nothing else is sent meanwhile, so the tier has room at
      the latest an hour after the last transition. The last word is always the truth.

    All times are monotonic seconds. Pure: ``AlarmService`` asks it and sends what it says.
    """

    def __init__(self, repeat: float, cap: int = NOTICES_PER_HOUR) -> None:
        self.repeat = repeat
        self.cap = cap
        self.interval = repeat if repeat > 0 else HOUR
        self.raises: deque[float] = deque()  # raise times within the last hour
        self.sent: deque[float] = deque()  # notice times within the last hour
        self.flapping = False
        self.last_flap_notice: float | None = None
        self.last_transition: float | None = None
        self.last_notice: float | None = None
        self.told_active: bool | None = None  # what the last notice told (None: nothing yet)
        self.owe_state = False  # flapping has settled: the plain state is still to be told
        self.suppressed = 0  # notices coalesced or held by the budget (shown in health)

    def _prune(self, mono: float) -> None:
        for q in (self.raises, self.sent):
            while q and q[0] <= mono - HOUR:
                q.popleft()

    def limit(self, tier: str) -> int:
        """How many of the hour's notices a tier may bring the count to ("summary", "state", "raise")."""
        keep = {"summary": KEEP_FOR_STATE + KEEP_FOR_RAISE, "state": KEEP_FOR_RAISE, "raise": 0}[tier]
        return max(1, self.cap - keep)

    def room(self, tier: str) -> bool:
        return len(self.sent) < self.limit(tier)

    def _allow(self, mono: float, tier: str) -> bool:
        """Count a notice of ``tier`` if the hour's budget has room for it (else count it held)."""
        if not self.room(tier):
            self.suppressed += 1
            return False
        self.sent.append(mono)
        self.last_notice = mono
        return True

    @property
    def settle(self) -> float:
        """Seconds without a transition after which a rule counts as settled."""
        return min(FLAP_QUIET, self.interval)

    def settled(self, mono: float) -> bool:
        return self.last_transition is None or mono - self.last_transition >= self.settle

    def raised_in_hour(self) -> int:
        return len(self.raises)

    def transition(self, kind: str, mono: float) -> str | None:
        """A transition happened: the notice kind to send now ("raised", "cleared", "flapping"), or None."""
        self._prune(mono)
        quiet = self.last_transition is None or mono - self.last_transition >= RAISE_QUIET
        self.last_transition = mono
        was_flapping = self.flapping
        if kind == "raised":
            self.raises.append(mono)
            if len(self.raises) >= FLAP_RAISES:
                self.flapping = True
        if self.flapping:
            if kind == "raised" and (
                not was_flapping or self.last_flap_notice is None or mono - self.last_flap_notice >= self.interval
            ):
                # the raise that starts a flapping spell (the third in an hour, or the first after the
                # rule settled) is news, and draws on the whole cap, when a person was last told the
                # alarm is clear or the rule was quiet for RAISE_QUIET; one that a person's last notice
                # already announces ("raised", its "cleared" held) is the plain state; summaries theirs
                tier = "summary" if was_flapping else ("raise" if self.told_active is not True or quiet else "state")
                if self._allow(mono, tier):
                    self.last_flap_notice, self.told_active = mono, True
                    return "flapping"
                return None
            self.suppressed += 1
            return None
        if self._allow(mono, "raise" if kind == "raised" else "state"):
            self.told_active = kind == "raised"
            return kind
        return None

    def tick(self, active: bool, acked: bool, mono: float) -> str | None:
        """Once a tick: a notice that is due without a transition ("repeat", "flapping", or the
        current state after flapping or a held notice), or None."""
        self._prune(mono)
        if self.flapping:
            if self.settled(mono):  # settled: the state is told once more, plainly ("cleared" or "raised")
                self.flapping, self.owe_state = False, True
            elif (
                self.last_flap_notice is not None
                and mono - self.last_flap_notice >= self.interval
                and self.last_transition is not None
                and self.last_transition > self.last_flap_notice
                and self.room("summary")
            ):
                self._allow(mono, "summary")
                self.last_flap_notice, self.told_active = mono, active
                return "flapping"
            else:
                return None
        if self.owe_state or (self.told_active is not None and self.told_active != active):
            # what a person was last told is not the truth: told as soon as the plain-state tier has
            # room (nothing else goes out meanwhile, so at the latest an hour after the last transition)
            if self.room("state"):
                self._allow(mono, "state")
                self.told_active, self.owe_state = active, False
                return "raised" if active else "cleared"
            return None
        if (
            active
            and not acked
            and self.repeat > 0
            and self.last_notice is not None
            and mono - self.last_notice >= self.repeat
            and self.room("summary")  # not counted as held each tick
        ):
            self._allow(mono, "summary")
            return "repeat"
        return None

    def dump(self, mono: float, boot: str | None = None) -> dict:
        """What a restart must keep (what a person was told, what is owed, the flapping history and
        the cap's count). Its times are ages at the moment of saving, on the monotonic clock, with
        that moment and the boot it belongs to: never the wall clock, which a Pi without a clock
        chip may have wrong at either end (``restore``)."""

        def age(x: float | None) -> float | None:
            return None if x is None else max(0.0, mono - x)

        self._prune(mono)
        return {
            "clock": "age",
            "saved_mono": mono,
            "boot": boot,
            "raises": [age(x) for x in self.raises],
            "sent": [age(x) for x in self.sent],
            "flapping": self.flapping,
            "last_flap_notice": age(self.last_flap_notice),
            "last_transition": age(self.last_transition),
            "last_notice": age(self.last_notice),
            "told_active": self.told_active,
            "owe_state": self.owe_state,
            "suppressed": self.suppressed,
        }

    def restore(self, d: dict, mono: float, boot: str | None = None, wall: float | None = None) -> None:
        """The state ``dump`` saved, carried onto this run's monotonic line. Within the same boot
        (same ``boot`` id, the monotonic clock has gone on) every time is exact; after a reboot the
        time spent down is unknown (the wall clock cannot be trusted to tell it) and counts as
        zero: each saved age counts from now, so the hour's count is never under-counted (the cap
        holds), at the price of a held notice waiting up to the downtime longer. A state saved by
        an older version (wall-clock times) is read with ``wall`` as before."""
        if d.get("clock") == "age":
            saved = d.get("saved_mono")
            base = mono
            if boot is not None and d.get("boot") == boot and isinstance(saved, (int, float)) and saved <= mono:
                base = float(saved)

            def m(x: Any) -> float | None:
                return None if x is None else base - max(0.0, float(x))

        else:
            now = mono if wall is None else wall

            def m(x: Any) -> float | None:
                return None if x is None else mono - max(0.0, now - float(x))

        self.raises = deque(sorted(t for t in (m(x) for x in d.get("raises", [])) if t is not None))
        self.sent = deque(sorted(t for t in (m(x) for x in d.get("sent", [])) if t is not None))
        self.flapping = bool(d.get("flapping"))
        self.last_flap_notice = m(d.get("last_flap_notice"))
        self.last_transition = m(d.get("last_transition"))
        self.last_notice = m(d.get("last_notice"))
        told = d.get("told_active")
        self.told_active = None if told is None else bool(told)
        self.owe_state = bool(d.get("owe_state"))
        self.suppressed = int(d.get("suppressed", 0))
        self._prune(mono)

    def acknowledged(self, mono: float) -> bool:
        """Whether an acknowledgement goes out as a notice: from the plain-state tier like a
        "cleared" (the acknowledgement itself is always an event, and the API answers the person
        who gave it); a rule acknowledged after its budget is spent tells no one else."""
        self._prune(mono)
        return self._allow(mono, "state")
