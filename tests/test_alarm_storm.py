"""An alarm storm is bounded (issue 21 item 6): 80 rules with the defaults (``hold = 0``,
``hysteresis = 0``) on a noisy channel sent 6,400 notices in 150 s. Now every transition is
still an event, but each flapping rule sends at most ``NOTICES_PER_HOUR`` notices an hour
("flapping: raised N times in the last hour" once per repeat interval), and once the channel
settles, each rule's last notice says how it really is.

A simulated hour (then a quiet one) on an injected monotonic clock, a real store, one tick a second."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from appliance import config
from appliance.alarm_service import AlarmService
from appliance.alarms import NOTICES_PER_HOUR, AlarmEngine, Observation
from appliance.latest import LatestReadings
from appliance.naming import SeriesKey
from appliance.samples import Sample
from appliance.store import Store

RULES = 80
NOISY = SeriesKey("N", "mxc_t", "K", "mxc")


def storm_config() -> str:
    text = '[[instrument]]\nmodel = "372"\nname = "N"\ntransport = "tcp"\nhost = "h"\n'
    for i in range(RULES):
        # thresholds spread across the noise; half with a one-minute reminder (so coalescing and the
        # cap both bind), half with the defaults (repeat 1800)
        text += f'\n[[alarm]]\nkind = "above"\nname = "r{i}"\nfield = "N::mxc_t"\nthreshold = {0.05 + (i - 40) * 1e-4:.6f}\n'
        if i % 2:
            text += "repeat = 60\n"
    return text


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_780_000_000.0 + self.t


@pytest.mark.slow  # an hour of 80 flapping rules, ~10-15 s
def test_80_flapping_rules_for_an_hour_send_at_most_the_cap_each(tmp_path):
    cfg = config.parse(storm_config())
    clock = Clock()
    store = Store(tmp_path / "k.db")
    latest = LatestReadings(clock.mono)
    svc = AlarmService(cfg, store, latest=latest, wall=clock.wall, mono=clock.mono)
    shadow = AlarmEngine(cfg.alarm)  # the same rules, to count every transition independently
    rng = random.Random(21)
    transitions = Counter()
    hour, quiet = 3600, 3700
    for second in range(hour + quiet):
        value = 0.05 * (1 + rng.gauss(0, 0.05)) if second < hour else 0.01  # noisy, then settled cold
        t = clock.wall()
        latest.update([Sample(NOISY, t, value, 0)])
        svc.tick(svc.observe())
        for tr in shadow.step(Observation(now=t, mono=clock.t, latest={"N::mxc_t": (t, value)})):
            transitions[tr.kind] += 1
        if second % 20 == 0:
            store.write([])  # the writer commits the queued records
        clock.t += 1.0
    store.write([])
    _states, notices = store.alarm_load()
    events = Counter(e["kind"] for e in store.events(0, 10**7))
    store.close()
    # events keep every transition
    assert transitions["raised"] > 10_000, transitions  # a storm indeed: ~80 rules flapping every few seconds
    assert events["alarm_raised"] == transitions["raised"] and events["alarm_cleared"] == transitions["cleared"]
    # notices are bounded: per rule, at most the cap in the noisy hour (and in the quiet one)
    per_rule_hour = Counter(n["alarm"] for n in notices if n["t"] < clock.wall() - quiet)
    assert len(per_rule_hour) == RULES
    assert max(per_rule_hour.values()) <= NOTICES_PER_HOUR, per_rule_hour.most_common(3)
    assert sum(per_rule_hour.values()) <= RULES * NOTICES_PER_HOUR < transitions["raised"] / 10
    flapping = [n for n in notices if n["kind"] == "flapping"]
    assert flapping and all("flapping: raised" in n["body"]["detail"] for n in flapping)
    assert any("times in the last hour" in n["body"]["detail"] for n in flapping)
    # rules with a one-minute repeat are told about the flapping again each minute, up to the cap
    assert max(per_rule_hour[f"r{i}"] for i in range(1, RULES, 2)) == NOTICES_PER_HOUR
    # settled: each rule's last word is the truth (cleared), and nothing is active
    last = {n["alarm"]: n for n in notices}
    assert {n["kind"] for n in last.values()} == {"cleared"}, Counter(n["kind"] for n in last.values())
    assert all(n["body"]["detail"].startswith("back below") for n in last.values())
    assert not svc.engine.active()
