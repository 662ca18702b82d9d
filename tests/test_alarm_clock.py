"""Hold and repeat run on the monotonic clock (issue 21 item 7): a one-hour backward step of the
wall clock during a 30 s hold made it raise after 3,630 s, and reminders with ``repeat = 60`` came
3,660 s apart. The service's clocks are injected (no global patching); the store is a real one."""

from __future__ import annotations

from appliance import config
from appliance.alarm_service import AlarmService
from appliance.latest import LatestReadings
from appliance.naming import SeriesKey
from appliance.samples import Sample
from appliance.store import Store

CFG = """
[[instrument]]
model = "372"
name = "N"
transport = "tcp"
host = "h"

[[alarm]]
kind = "above"
name = "mxc-warm"
field = "N::mxc_t"
threshold = 0.05
hold = 30
repeat = 60
"""

MXC = SeriesKey("N", "mxc_t", "K", "mxc")


class SteppedClock:
    """A wall clock that an operator (or NTP) can step, beside a monotonic one that never steps."""

    def __init__(self) -> None:
        self.mono_t = 1000.0
        self.offset = 1_780_000_000.0 - 1000.0

    def mono(self) -> float:
        return self.mono_t

    def wall(self) -> float:
        return self.mono_t + self.offset


def test_a_backward_clock_step_neither_delays_the_hold_nor_the_repeats(tmp_path):
    clock = SteppedClock()
    store = Store(tmp_path / "k.db")
    latest = LatestReadings(clock.mono)
    svc = AlarmService(config.parse(CFG), store, latest=latest, wall=clock.wall, mono=clock.mono)
    start = clock.mono()
    raised_at = None
    notices: list[tuple[float, str]] = []
    seen = 0
    for second in range(400):
        if second == 10:
            clock.offset -= 3600  # one hour back, ten seconds into the hold (the field is warm from t=0)
        if second == 200:
            clock.offset += 3600  # and forward again, between two reminders
        value = 0.5  # warm all along: 10x the threshold
        latest.update([Sample(MXC, clock.wall(), value, 0)])
        svc.tick(svc.observe())
        if raised_at is None and svc.engine.states["mxc-warm"].active:
            raised_at = clock.mono() - start
        _states, got = store.alarm_load()
        for n in got[seen:]:
            notices.append((clock.mono() - start, n["kind"]))
        seen = len(got)
        if second % 50 == 0:
            store.write([])  # the writer's commit (no thread here: one step at a time)
        clock.mono_t += 1.0
    store.close()
    assert raised_at == 30, raised_at  # 30 s of hold, not 3,630
    kinds = [k for _t, k in notices]
    times = [t for t, _k in notices]
    assert kinds[0] == "raised" and set(kinds[1:]) == {"repeat"}, notices
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps and all(g == 60 for g in gaps), notices  # every reminder 60 s after the last, across both steps
    assert len(notices) == 1 + (399 - 30) // 60
    # what a person reads is still the wall clock: "since" is when it was raised on the (stepped) clock
    assert abs(svc.engine.states["mxc-warm"].since - (1_780_000_000.0 - 3600 + 30)) < 1e-6
