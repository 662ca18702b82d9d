"""Fault campaign: every scenario ends by reconciling the instruments' ledgers with the store and
with what readers are served (issue 6). Counts are printed so the run log is the evidence."""
from __future__ import annotations

import time

from appliance import config as _config
from appliance.service import Appliance
from firmware_host.emulator import Emulator
from tests.conftest import appliance_config, wait_for
from tests.reconcile import reconcile


def quiesce(*emus: Emulator, settle: float = 2.5) -> None:
    """Stop the instruments answering, so nothing is in flight when the appliance stops."""
    for e in emus:
        e.control("mute on")
    time.sleep(settle)


def _max_gap(db_path, name: str, t0: float, t1: float) -> float:
    import sqlite3

    db = sqlite3.connect(db_path)
    ts = [r[0] / 1000 for r in db.execute(
        "SELECT t FROM raw JOIN series ON series.id = raw.series WHERE series.name=? AND t>=? AND t<? ORDER BY t",
        (name, int(t0 * 1000), int(t1 * 1000)))]
    db.close()
    return max((b - a for a, b in zip(ts, ts[1:])), default=float("inf"))


def test_instrument_faults_lose_nothing_delivered(tmp_path, emu372, emu240):
    app = Appliance(_config.parse(appliance_config(tmp_path, emu372, emu240)))
    app.start()
    base = f"http://127.0.0.1:{app.web_address[1]}"
    try:
        wait_for(lambda: all(p.health.connected for p in app.pollers), 20, what="both instruments connected")
        time.sleep(2)
        t_fault = time.time()
        # the 372: each fault, then recovery within its backoff (backoff_max 1 s + timeout 1 s)
        for fault, hold in [("drop", 0), ("mute on", 2.0), ("slow 1.5", 2.5), ("garbage 3", 0), ("partial 2", 0),
                            ("reset", 0)]:
            before = app.pollers[0].health.samples
            assert emu372.control(fault) == "ok"
            time.sleep(hold)
            emu372.control("clear")
            wait_for(lambda: app.pollers[0].health.samples > before + 4, 15, what=f"372 polling again after {fault}")
        # the 240: garbled bytes, a cut line, its USB vanishing and coming back under the same serial number
        for fault in ["garbage 2", "partial 1", "unplug 2"]:
            before = app.pollers[1].health.samples
            assert emu240.control(fault) == "ok"
            wait_for(lambda: app.pollers[1].health.samples > before + 4, 20, what=f"240 polling again after {fault}")
        t_end = time.time()
        quiesce(emu372, emu240)
        db = str(tmp_path / "kelvinpi.db")
        tally = reconcile(db, {"LSA23JD": emu372, "LSA24AZ": emu240}, http_base=base)
    finally:
        app.stop()
    # the 240 went on reading while the 372 was faulted ...
    assert _max_gap(db, "LSA24AZ::50k_plate_t", t_fault, t_fault + 8) < 1.5
    # ... and the 372's silence shows as a gap, not as invented values
    assert _max_gap(db, "LSA23JD::mxc_control_t", t_fault, t_end) >= 1.5
    print("instrument faults:", tally.line(), "faulted replies:", emu372.ledger.faulted + emu240.ledger.faulted)
    assert tally.produced > 200
    assert emu240.ledger.faulted >= 2  # the faults really hit readings (the 372 ones mostly hit SCAN?)
    assert tally.lost == 0, tally.per_series
    assert tally.foreign == 0
    assert tally.served_http == tally.stored
