"""Issue 22 red team, finding 4: a setting that changes the inputs re-plans the acquisition.

The poller learned the inputs' setup only on connect: an input enabled through the API was never
read until a reconnect, and after a longer pause the 372's held value was stored as fresh readings
for the difference. Against the emulated 372 (real time), through the control API.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_for
from tests.test_settings import app, put  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

NODE = "LSA23JD"


def latest(appliance, field: str, since: float) -> tuple[float, float] | None:
    """The field's newest stored reading (time, value) if it is newer than ``since``."""
    for f in appliance.store.latest():
        if f["field"] == field and f["t"] > since:
            return f["t"], f["value"]
    return None


def test_an_input_enabled_through_the_api_is_read_within_a_scan_cycle(app, emu372):  # noqa: F811
    # the scanner parked on input 4 (disabled): nothing of it is read yet
    assert put(app, NODE, "scanner", None, {"channel": 4, "autoscan": 0})[0] == 200
    status, body = put(app, NODE, "input", "4", {"enabled": 1, "pause": 3, "dwell": 1})
    assert status == 200, body
    plans = app.pollers[0].plans
    assert "4" in plans, "the new input is not planned"
    field = plans["4"].sensor.name
    since = time.time()
    wait_for(lambda: latest(app, field, since), 15, what="input 4 stored")
    assert any(e["kind"] == "replanned" for e in app.store.events(limit=200))


def test_a_longer_pause_stores_no_held_value_as_fresh(app, emu372):  # noqa: F811
    plan = app.pollers[0].plans["2"]
    field = plan.sensor.name
    assert put(app, NODE, "scanner", None, {"channel": 1, "autoscan": 0})[0] == 200
    assert put(app, NODE, "input", "2", {"pause": 8})[0] == 200
    assert put(app, NODE, "scanner", None, {"channel": 2, "autoscan": 0})[0] == 200
    switched = time.time()  # the 372 switched before the answer: its pause of 8 s counts from before now
    rows: set[tuple[float, float]] = set()
    end = time.monotonic() + 12
    while time.monotonic() < end:  # every reading stored, as the store's newest (a cycle is 0.2 s)
        got = latest(app, field, switched - 1)
        if got:
            rows.add(got)
        time.sleep(0.05)
    assert [r for r in rows if r[0] >= switched + 7.5], "input 2 was not read after its pause"
    # inside the new pause the 372 repeats the old value: nothing stored from it
    early = [(round(t - switched, 2), v) for t, v in rows if t < switched + 7.5]
    assert not early, f"held values stored as fresh inside the 8 s pause: {early}"
