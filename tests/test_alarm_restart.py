"""What a person is owed survives a restart (red-team finding on issue 21): a flapping rule whose
last notice said "now raised" cleared, and the appliance restarted within the quiet period; the
"cleared" was never sent, because what the person was told, what was owed and the flapping
history lived only in memory. They are saved with the rule's state now, with the hourly cap's
count. Real AlarmService and Store, injected clocks."""

from __future__ import annotations

import os

from appliance import config
from appliance.alarm_service import AlarmService
from appliance.latest import LatestReadings
from appliance.naming import SeriesKey
from appliance.samples import Sample
from appliance.store import Store

from .test_alarm_clock import CFG, MXC, SteppedClock

RULE = CFG.replace("hold = 30", "hold = 0").replace("repeat = 60", "repeat = 600")


def _run(clock, svc, store, latest, secs, value) -> None:
    for s in range(secs):
        latest.update([Sample(MXC, clock.wall(), value(s), 0)])
        svc.tick(svc.observe())
        if s % 5 == 0:
            store.write([])
        clock.mono_t += 1


def _start(clock, path):
    store = Store(path)
    latest = LatestReadings(clock.mono)
    return store, latest, AlarmService(config.parse(RULE), store, latest=latest, wall=clock.wall, mono=clock.mono)


def test_a_cleared_owed_after_flapping_is_sent_after_a_restart_within_the_quiet_period(tmp_path):
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 100, lambda s: 0.06 if (s // 10) % 2 == 0 else 0.04)  # flapping
    _run(clock, svc, store, latest, 5, lambda s: 0.06)  # the last word a person has: "now raised"
    _run(clock, svc, store, latest, 60, lambda s: 0.02)  # really cold again; a minute into the quiet
    _states, notices = store.alarm_load()
    assert notices[-1]["kind"] == "flapping" and "now raised" in notices[-1]["body"]["detail"], notices[-1]
    sent_before = len(svc.gates["mxc-warm"].sent)
    svc.stop()
    store.write([])
    store.close()
    store, latest, svc = _start(clock, tmp_path / "k.db")  # the restart
    assert len(svc.gates["mxc-warm"].sent) == sent_before  # the hourly cap's count survives
    _run(clock, svc, store, latest, 900, lambda s: 0.02)  # cold for 15 minutes after it
    store.write([])
    _states, notices = store.alarm_load()
    store.close()
    assert not svc.engine.states["mxc-warm"].active
    assert notices[-1]["kind"] == "cleared", [(n["kind"], n["body"]["detail"]) for n in notices]
    assert notices[-1]["body"]["detail"] == "back below 0.05 K: 0.02 K", notices[-1]["body"]


def test_a_cleared_owed_when_the_restart_came_without_a_clean_stop_still_says_what_happened(tmp_path):
    """The same, the process killed instead of stopped (no final save): the state saved at most a
    minute before still holds what the rule said when it cleared."""
    clock = SteppedClock()
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 100, lambda s: 0.06 if (s // 10) % 2 == 0 else 0.04)
    _run(clock, svc, store, latest, 5, lambda s: 0.06)
    _run(clock, svc, store, latest, 70, lambda s: 0.02)
    store.write([])
    store.close()  # no svc.stop(): what the periodic save had is all there is
    store, latest, svc = _start(clock, tmp_path / "k.db")
    _run(clock, svc, store, latest, 600, lambda s: 0.02)
    store.write([])
    _states, notices = store.alarm_load()
    store.close()
    assert notices[-1]["kind"] == "cleared", [(n["kind"], n["body"]["detail"]) for n in notices]
    assert notices[-1]["body"]["detail"] == "back below 0.05 K: 0.02 K", notices[-1]["body"]


IDS_CFG = """
[[instrument]]
model = "372"
name = "N"
transport = "tcp"
host = "h"

[[alarm]]
kind = "above"
name = "A-mxc-warm"
field = "N::mxc_t"
threshold = 0.05

[[alarm]]
kind = "above"
name = "B-still-warm"
field = "N::still_t"
threshold = 1.0

[[alarm]]
kind = "above"
name = "C-4k-warm"
field = "N::k4_t"
threshold = 5.0
"""


def test_notice_ids_never_repeat_across_a_power_cut_when_the_clock_boots_behind(tmp_path):
    """Run 1: a notice is journaled, then A raises and its notice goes out at once, before the journal
    has it; power cut. Run 2 boots an hour behind (no RTC) and B raises: its id must be new, or a
    receiver deduplicating on X-Kelvinpi-Notice drops it."""
    cfg = config.parse(IDS_CFG)
    still, k4 = SeriesKey("N", "still_t", "K", "still"), SeriesKey("N", "k4_t", "K", "k4")
    clock = SteppedClock()
    store = Store(tmp_path / "k.db")
    latest = LatestReadings(clock.mono)
    svc = AlarmService(cfg, store, latest=latest, wall=clock.wall, mono=clock.mono)

    def step(latest, svc, vals):
        latest.update([Sample(k, clock.wall(), v, 0) for k, v in vals])
        svc.tick(svc.observe())
        clock.mono_t += 1

    step(latest, svc, [(MXC, 0.01), (still, 0.8), (k4, 6.0)])  # C raised
    store.write([])
    store.write([])  # journaled
    step(latest, svc, [(MXC, 0.06), (still, 0.8), (k4, 6.0)])  # A raised: goes out before its journal
    _states, run1 = store.alarm_load()
    received = {n["id"]: (n["alarm"], n["kind"]) for n in run1}  # what a receiver may hold
    assert ("A-mxc-warm", "raised") in received.values()
    # power cut: nothing more is journaled (the process, and its lock on the store, simply go)
    os.close(store._lock_fd)
    store._lock_fd = -1
    clock.offset -= 3600  # boots an hour behind: no RTC, NTP not synced yet
    store2 = Store(tmp_path / "k.db")
    latest2 = LatestReadings(clock.mono)
    svc2 = AlarmService(cfg, store2, latest=latest2, wall=clock.wall, mono=clock.mono)
    step(latest2, svc2, [(still, 1.5), (MXC, 0.01), (k4, 6.0)])  # B raised first
    _states, run2 = store2.alarm_load()
    store2.close()
    new = [n for n in run2 if n["alarm"] == "B-still-warm"]
    assert new, run2
    assert new[0]["id"] not in received, (new[0]["id"], received)
