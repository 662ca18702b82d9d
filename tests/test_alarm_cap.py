"""The hourly cap holds for everything a rule sends (issue 21, "a flapping rule sends at most the
stated cap"): on main the settled-state notice went out "whatever the cap", so a rule that flapped,
settled for two minutes and flapped again sent one more notice per quiet period (17 an hour in
``make bench-alarms``, 50 in the pattern below). Now one budget of ``NOTICES_PER_HOUR`` in any
hour holds every kind of notice; the settled state has a reserved share and waits for room rather
than bypass it, so the last word is still the truth (within an hour of the last transition); and a
raise of a rule that is not flapping has a share of its own, so it is never delayed.

Fast tier: the gate alone over simulated days, and the real ``AlarmService`` with a real store on
injected clocks (a tick every 5 s of simulated time), never sleeping."""

from __future__ import annotations

import json
import random
from bisect import bisect_left

from appliance import config
from appliance.alarm_service import AlarmService
from appliance.alarms import FLAP_RAISES, HOUR, NOTICES_PER_HOUR, NoticeGate
from appliance.latest import LatestReadings
from appliance.samples import Sample
from appliance.store import Store

from .test_alarm_clock import CFG, MXC, SteppedClock

STEP = 5  # simulated seconds per tick in the service tests


def most_in_any_hour(times: list[float]) -> int:
    """The most of ``times`` within any hour (a window [t, t + 3600) starting at each of them)."""
    ts = sorted(times)
    return max((bisect_left(ts, t + HOUR) - i for i, t in enumerate(ts)), default=0)


def test_most_in_any_hour_counts_a_sliding_window():
    assert most_in_any_hour([]) == 0
    assert most_in_any_hour([0, 10, 3599, 3600, 3601]) == 4  # 10 .. 3601
    assert most_in_any_hour([0, 1800, 3500, 5000, 5300]) == 4


# -- the gate alone --------------------------------------------------------------------------
def test_the_gate_never_sends_more_than_the_cap_in_any_hour_and_always_tells_the_final_state():
    """Random storms (bursts, slow flaps, quiet spells just past the settle period, acknowledgements)
    over simulated hours: in any hour at most the cap, every kind counted; a raise of a rule that is
    not flapping told at once; and once the rule stops, its final state told within an hour."""
    for seed in range(12):
        rng = random.Random(seed)
        g = NoticeGate(repeat=rng.choice([0, 60, 300, 1800]))
        sent: list[float] = []
        told: bool | None = None
        active, acked, t = False, False, 0.0
        raises: list[float] = []
        while t < 4 * HOUR:
            gap = rng.choice([1, 2, 5, 30, g.settle + 1, g.settle + 10, 600])
            for s in range(int(gap)):  # ticks until the next transition
                k = g.tick(active, acked, t + s)
                if k:
                    sent.append(t + s)
                    told = active if k in ("raised", "cleared", "flapping") else told
            t += gap
            if active and not acked and rng.random() < 0.2:  # a person acknowledges
                acked = True
                if g.acknowledged(t):
                    sent.append(t)
            active, acked = not active, False
            was_flapping = g.flapping
            k = g.transition("raised" if active else "cleared", t)
            if active:
                raises = [r for r in raises if r > t - HOUR] + [t]
                if not was_flapping and len(raises) < FLAP_RAISES:  # not flapping: told at once
                    assert k == "raised", (seed, t, k)
                if not was_flapping and told is not True:  # never delayed by the cap (red team 2122 #1)
                    assert k in ("raised", "flapping"), (seed, t, k, len(g.sent))
            if k:
                sent.append(t)
                told = active
        last = t
        for s in range(int(HOUR) + 2):  # quiet: the final state is told, within an hour
            k = g.tick(active, acked, last + s)
            if k:
                sent.append(last + s)
                told = active if k in ("raised", "cleared", "flapping") else told
            if told == active and not g.owe_state and not g.flapping:
                break
        assert told == active and not g.owe_state, (seed, told, active)
        assert s <= HOUR + 1, (seed, s)
        assert most_in_any_hour(sent) <= NOTICES_PER_HOUR, (seed, most_in_any_hour(sent))


# -- the service, a real store ---------------------------------------------------------------
RULE = CFG.replace("hold = 30", "hold = 0")  # "mxc-warm": above 0.05 K, repeat = 60 (settles in 60 s)


def _start(clock: SteppedClock, path, rule: str = RULE, boot: str | None = None):
    store = Store(path)
    latest = LatestReadings(clock.mono)
    boot_kw = {} if boot is None else {"boot": boot}  # none: the injected clock's line is unknown
    svc = AlarmService(config.parse(rule), store, latest=latest, wall=clock.wall, mono=clock.mono, **boot_kw)
    return store, latest, svc


def _run(clock, svc, store, latest, seconds: int, value) -> None:
    for s in range(0, seconds, STEP):
        latest.update([Sample(MXC, clock.wall(), value(s), 0)])
        svc.tick(svc.observe())
        if s % 60 == 0:
            store.write([])
        clock.mono_t += STEP


def _settling_flap(s: int) -> float:
    """Warm for one tick, then cold just past the settle period: each spell ends in a settled state."""
    return 0.06 if s % 70 < STEP else 0.04


def test_a_rule_that_flaps_and_settles_over_and_over_sends_at_most_the_cap_in_any_hour(tmp_path):
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 2 * int(HOUR), _settling_flap)
    _run(clock, svc, store, latest, int(HOUR), lambda s: 0.04)  # and quiet
    store.write([])
    _states, notices = store.alarm_load()
    store.close()
    times = [n["t"] for n in notices]
    assert len(times) > NOTICES_PER_HOUR  # it did go on: more than one hour's worth in all
    assert most_in_any_hour(times) <= NOTICES_PER_HOUR, most_in_any_hour(times)
    assert notices[-1]["kind"] == "cleared"  # the final state was told
    assert notices[-1]["body"]["detail"] == "back below 0.05 K: 0.04 K"


def test_the_final_state_is_told_within_an_hour_when_the_budget_is_spent(tmp_path):
    """A storm spends the hour's notices; the rule then stays warm: "raised" is owed and told once the
    plain-state share has room again, at most an hour after the last transition."""
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 1800, _settling_flap)
    last_transition = clock.wall()
    _run(clock, svc, store, latest, int(HOUR) + 2 * STEP, lambda s: 0.06)  # really warm now
    store.write([])
    _states, notices = store.alarm_load()
    store.close()
    assert most_in_any_hour([n["t"] for n in notices]) <= NOTICES_PER_HOUR
    told = [n for n in notices if n["t"] >= last_transition]
    assert told and told[0]["kind"] in ("raised", "flapping"), [(n["kind"], n["t"] - last_transition) for n in notices]
    assert "now cleared" not in told[0]["body"]["detail"]
    assert told[0]["t"] - last_transition <= HOUR + STEP


def test_a_restart_mid_storm_keeps_the_hours_budget(tmp_path):
    """Killed (no clean stop) half an hour into the storm and started again on the same store: the
    notices before and after the restart share one hour's budget."""
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 1800, _settling_flap)
    store.write([])
    store.close()  # no svc.stop(): what was saved with each notice is all there is
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 1800, _settling_flap)
    store.write([])
    _states, notices = store.alarm_load()
    store.close()
    assert most_in_any_hour([n["t"] for n in notices]) <= NOTICES_PER_HOUR, [n["kind"] for n in notices]


def test_a_first_raise_after_quiet_is_not_delayed_when_reminders_used_the_budget(tmp_path):
    """An alarm reminded every minute for an hour, cleared, then raised again a minute later: the new
    raise goes out in the tick that sees it (on main the reminders had spent the cap, so it waited)."""
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 3000, lambda s: 0.06)  # raised, then a reminder a minute
    _run(clock, svc, store, latest, 60, lambda s: 0.04)  # cleared
    raised_at = clock.wall()
    _run(clock, svc, store, latest, STEP, lambda s: 0.06)  # raised again
    store.write([])
    _states, notices = store.alarm_load()
    store.close()
    assert [n["kind"] for n in notices if n["t"] >= raised_at] == ["raised"], [(n["kind"], n["t"]) for n in notices]
    assert most_in_any_hour([n["t"] for n in notices]) <= NOTICES_PER_HOUR


def test_a_raise_after_flapping_has_settled_is_told_at_once(tmp_path):
    """Three quick raises (flapping), quiet for five minutes (settled, told "cleared"), then a real
    raise: it goes out in the tick that sees it, as "flapping: ... now raised", not a settle period
    later (on main it waited for the rule's repeat interval since the last flapping notice)."""
    clock = SteppedClock()
    rule = RULE.replace("repeat = 60", "repeat = 1800")
    store, latest, svc = _start(clock, tmp_path / "k.db", rule)
    _run(clock, svc, store, latest, 60, lambda s: 0.06 if (s // 10) % 2 == 0 else 0.04)
    _run(clock, svc, store, latest, 300, lambda s: 0.04)
    raised_at = clock.wall()
    _run(clock, svc, store, latest, STEP, lambda s: 0.06)
    store.write([])
    _states, notices = store.alarm_load()
    store.close()
    new = [n for n in notices if n["t"] >= raised_at]
    assert [n["kind"] for n in new] == ["flapping"], [(n["kind"], n["t"] - raised_at) for n in notices]
    assert "now raised" in new[0]["body"]["detail"]


# -- red team 2122 ---------------------------------------------------------------------------
def test_the_gate_tells_a_raise_after_quiet_at_once_when_the_plain_state_share_is_spent():
    """Red team 2122, fault 1: a flapping spell, an acknowledgement, a settled "cleared" and one
    more blip spend the plain-state share (10); twenty minutes later a real raise. On main it
    started a new flapping spell drawing on that spent share and was held until 3600 s."""
    g = NoticeGate(repeat=60)
    active = False

    def run(t0: int, t1: int) -> None:
        for t in range(t0, t1):
            g.tick(active, False, t)

    for t in range(0, 300, 20):
        g.transition("raised", t)
        active = True
        run(t + 1, t + 10)
        g.transition("cleared", t + 10)
        active = False
        run(t + 11, t + 20)
    g.acknowledged(5)
    run(300, 600)
    g.transition("raised", 600)
    active = True
    run(601, 605)
    g.transition("cleared", 605)
    active = False
    run(606, 2100)
    assert len(g.sent) >= g.limit("state")  # the plain-state share is spent
    assert g.transition("raised", 2100) == "flapping"
    assert len(g.sent) <= NOTICES_PER_HOUR


def test_a_real_raise_after_twenty_minutes_of_quiet_goes_out_at_once(tmp_path):
    """Red team 2122, fault 1, on the real service and store: ten minutes of flapping, twenty quiet,
    then a real warm-up. On main nothing went out for 1800 s after the crossing."""
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 600, _settling_flap)
    _run(clock, svc, store, latest, 1200, lambda s: 0.04)
    raised_at = clock.wall()
    _run(clock, svc, store, latest, 60, lambda s: 0.06)
    store.write([])
    _s, notices = store.alarm_load()
    store.close()
    after = [(n["kind"], n["t"] - raised_at) for n in notices if n["t"] >= raised_at]
    assert after and after[0][0] in ("raised", "flapping") and after[0][1] == 0, after
    assert "now raised" in notices[-1]["body"]["detail"] or notices[-1]["kind"] == "raised"
    assert most_in_any_hour([n["t"] for n in notices]) <= NOTICES_PER_HOUR


def _flapped_gate() -> NoticeGate:
    g = NoticeGate(repeat=60)
    for i in range(12):
        g.transition("raised" if i % 2 == 0 else "cleared", 100 + i)
    for t in range(112, 400):
        g.tick(False, False, t)
    return g


def test_a_restart_keeps_the_hours_count_whatever_the_wall_clock_said():
    """Red team 2122, fault 4 (a): saved while the wall clock was 2 h behind (a Pi without a clock
    chip before NTP), restarted with the right time after a reboot: on main 0 of 7 notices were
    restored and 14 went out in one hour. The dump holds no wall time at all now."""
    g = _flapped_gate()
    sent_before = len(g.sent)
    d = g.dump(400, "boot-1")
    assert "wall" not in str(d) and all(0 <= a <= 400 for a in d["sent"])
    g2 = NoticeGate(repeat=60)
    g2.restore(d, 5, "boot-2")  # after a reboot: the downtime counts as zero
    assert len(g2.sent) == sent_before
    extra = 0
    for i in range(40):
        extra += bool(g2.transition("raised" if i % 2 == 0 else "cleared", 10 + i))
    for t in range(50, 3000):
        extra += bool(g2.tick(False, False, t))
    assert sent_before + extra <= NOTICES_PER_HOUR


def test_a_restart_in_the_same_boot_carries_the_times_exactly():
    """Red team 2122, fault 4 (b): restarted 60 s later with the wall clock 2 h behind, every saved
    time counted as now and a held "cleared" was told 3960 s after the last transition. Within
    one boot the monotonic clock goes on, and the times are carried exactly."""
    g = NoticeGate(repeat=60)
    active = False

    def run(gate: NoticeGate, t0: int, t1: int) -> str | None:
        for t in range(t0, t1):
            if k := gate.tick(active, False, t):
                return f"{k}@{t}"
        return None

    for t in range(0, 300, 20):
        g.transition("raised", t)
        active = True
        run(g, t + 1, t + 10)
        g.transition("cleared", t + 10)
        active = False
        run(g, t + 11, t + 20)
    g.acknowledged(5)
    run(g, 300, 600)
    g.transition("raised", 600)
    active = True
    run(g, 601, 700)
    g.transition("cleared", 700)
    active = False
    assert run(g, 701, 1000) is None and g.told_active and g.owe_state  # the clear is held
    d = g.dump(1000, "boot-1")
    g2 = NoticeGate(repeat=60)
    g2.restore(d, 1060, "boot-1")  # the same boot, 60 s later
    assert list(g2.sent) == sorted(g.sent) and g2.last_transition == 700
    told = run(g2, 1060, 5000)
    assert told is not None and told.startswith("cleared@")
    assert int(told.split("@")[1]) - 700 <= HOUR, told


def test_a_restart_after_the_wall_clock_was_behind_keeps_the_budget_on_the_service(tmp_path):
    """Fault 4 (a) on the real service: a storm run while the wall clock was 2 h behind (no clock
    chip, NTP not synced), killed, started again (another boot: no boot id) once the clock is
    right. On main the saved wall times were two hours old and forgotten: more than the cap went
    out in one hour. Counted on the monotonic line (downtime zero)."""
    clock = SteppedClock()
    clock.offset -= 7200
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 600, _settling_flap)
    store.write([])
    _s, first = store.alarm_load()
    store.close()
    monos = [n["t"] - clock.offset for n in first]
    clock.offset += 7200
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 1800, _settling_flap)
    store.write([])
    _s, notices = store.alarm_load()
    store.close()
    monos += [n["t"] - clock.offset for n in notices[len(first) :]]
    assert len(first) >= 8 and most_in_any_hour(monos) <= NOTICES_PER_HOUR, (len(first), most_in_any_hour(monos))


def test_an_active_alarm_of_a_removed_rule_is_told_cleared_once_after_the_restart(tmp_path):
    """The red team's note: a rule renamed or removed across a restart left its active alarm
    active forever, never told "cleared". Now it is told once, and not again at the next start."""
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 30, lambda s: 0.06)
    assert svc.engine.states["mxc-warm"].active
    store.write([])
    store.close()
    renamed = RULE.replace('name = "mxc-warm"', 'name = "mxc-hot"')
    for _ in range(2):  # the first restart tells it; the second does not again
        store, latest, svc = _start(clock, tmp_path / "k.db", renamed)
        store.write([])
        states, notices = store.alarm_load()
        events = store.events(limit=50)
        store.close()
    told = [n for n in notices if n["alarm"] == "mxc-warm" and n["kind"] == "cleared"]
    assert len(told) == 1, [(n["alarm"], n["kind"]) for n in notices]
    assert told[0]["body"]["detail"] == "cleared (rule removed from the configuration)"
    assert not states["mxc-warm"]["active"]
    assert sum(1 for e in events if e["kind"] == "alarm_cleared" and "mxc-warm" in e["detail"]) == 1


def _targets(tmp_path, names: list[str]) -> str:
    """``[[notify]]`` webhook targets (never started in these tests: nothing is delivered)."""
    out = ""
    for n in names:
        url = tmp_path / f"{n}.url"
        url.write_text("http://127.0.0.1:9/hook\n")
        url.chmod(0o600)
        out += f'\n[[notify]]\nkind = "webhook"\nname = "{n}"\nurl_file = "{url}"\n'
    return out


def _rule(name: str, extra: str = "") -> str:
    return "[[alarm]]" + RULE.split("[[alarm]]")[1].replace('name = "mxc-warm"', f'name = "{name}"') + extra


def test_a_removed_rule_whose_cleared_was_held_by_the_cap_is_told_cleared_once(tmp_path):
    """Red team 2122b #2: the rule flapped until its "cleared" was held by the hourly cap (saved
    inactive, but the last word a person had was "... now raised"), then a restart without the rule.
    On main nothing was told, ever (only a saved active state counted). Now the saved gate's
    ``told_active`` counts too: one "cleared (rule removed ...)", and not again at the next start."""
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 1800, _settling_flap)
    g, st = svc.gates["mxc-warm"], svc.engine.states["mxc-warm"]
    for _ in range(200):  # cold until the clear is owed but held
        if g.told_active is True and not st.active and not g.flapping:
            break
        _run(clock, svc, store, latest, STEP, lambda s: 0.04)
    assert g.told_active is True and not st.active and g.owe_state, (g.told_active, st.active, g.owe_state)
    store.write([])
    _s, before = store.alarm_load()
    store.close()
    assert "now raised" in before[-1]["body"]["detail"], before[-1]  # what a person last heard
    other = RULE.replace('name = "mxc-warm"', 'name = "other"')
    for _ in range(2):
        store, latest, svc = _start(clock, tmp_path / "k.db", other)
        store.write([])
        _s, notices = store.alarm_load()
        store.close()
    told = [n for n in notices[len(before) :] if n["alarm"] == "mxc-warm"]
    assert [(n["kind"], n["body"]["detail"]) for n in told] == [
        ("cleared", "cleared (rule removed from the configuration)")
    ], told


def test_a_removed_rules_cleared_goes_to_its_own_targets_still_configured_else_to_all_saying_so(tmp_path):
    """Red team 2122b #4: the "cleared (rule removed ...)" went to every current target, so a
    target that never heard the raise got the clear. Now: to the rule's own targets that are still
    configured; when none is left, to every target, and the notice says so."""
    clock = SteppedClock()
    three = _targets(tmp_path, ["pager", "chat", "mail"])
    cfg = RULE.split("[[alarm]]")[0] + three
    cfg += _rule("a", 'notify = ["pager", "mail"]\n') + _rule("b", 'notify = ["pager"]\n') + _rule("c")
    store, latest, svc = _start(clock, tmp_path / "k.db", cfg)
    _run(clock, svc, store, latest, 30, lambda s: 0.06)
    assert all(svc.engine.states[n].active for n in "abc")
    store.write([])
    _s, before = store.alarm_load()
    store.close()
    # a, b and c removed; pager removed too
    cfg2 = RULE.split("[[alarm]]")[0] + _targets(tmp_path, ["chat", "mail"]) + _rule("d")
    store, latest, svc = _start(clock, tmp_path / "k.db", cfg2)
    store.write([])
    _s, notices = store.alarm_load()
    store.close()
    told = {n["alarm"]: (n["targets"], n["body"]["detail"]) for n in notices[len(before) :] if n["kind"] == "cleared"}
    assert told["a"] == (["mail"], "cleared (rule removed from the configuration)"), told
    assert told["b"] == (
        ["chat", "mail"],
        "cleared (rule removed from the configuration; its target pager no longer configured: sent to every target)",
    ), told
    assert told["c"] == (["chat", "mail"], "cleared (rule removed from the configuration)"), told


def test_a_removed_rules_targets_come_from_its_notices_for_a_state_saved_before_notify_was(tmp_path):
    """A state saved by an older version has no ``notify``: the targets its stored notices went to."""
    clock = SteppedClock()
    cfg = RULE.split("[[alarm]]")[0] + _targets(tmp_path, ["pager", "chat"]) + _rule("a", 'notify = ["pager"]\n')
    store, latest, svc = _start(clock, tmp_path / "k.db", cfg)
    _run(clock, svc, store, latest, 30, lambda s: 0.06)
    st = svc.engine.states["a"].as_dict()  # saved as before: no "notify", no gate
    store.alarm_record("state", "a", json.dumps(st), clock.wall())
    store.write([])
    _s, before = store.alarm_load()
    store.close()
    store, latest, svc = _start(
        clock, tmp_path / "k.db", RULE.split("[[alarm]]")[0] + _targets(tmp_path, ["pager", "chat"]) + _rule("d")
    )
    store.write([])
    _s, notices = store.alarm_load()
    store.close()
    told = [n["targets"] for n in notices[len(before) :] if n["alarm"] == "a"]
    assert told == [["pager"]], told
