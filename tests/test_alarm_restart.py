"""What a person is owed survives a restart (red-team finding on issue 21): a flapping rule whose
last notice said "now raised" cleared, and the appliance restarted within the quiet period; the
"cleared" was never sent, because what the person was told, what was owed and the flapping
history lived only in memory. They are saved with the rule's state now, with the hourly cap's
count. Real AlarmService and Store, injected clocks."""

from __future__ import annotations

from appliance import config
from appliance.alarm_service import AlarmService
from appliance.latest import LatestReadings
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
