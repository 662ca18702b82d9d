"""Fault campaign: every scenario ends by reconciling the instruments' ledgers with the store and
with what readers are served (issue 6). Counts are printed so the run log is the evidence."""

from __future__ import annotations

import sqlite3
import time

import pytest

from appliance import config as _config
from appliance.service import Appliance
from tests.conftest import appliance_config, fill_disk, sisock_uplink, start_appliance, wait_for, wait_nodes
from tests.support.reconcile import forwarded, forwarding_gaps, quiesce, reconcile, rollup_mismatches, stored
from tests.support.routers import FeedListener

pytestmark = pytest.mark.slow  # whole-stack fault campaigns, 15-45 s each


def _max_gap(db_path, name: str, t0: float, t1: float) -> float:
    ts = [t for t, _ in stored(db_path, name, t0, t1)]
    return max((b - a for a, b in zip(ts, ts[1:], strict=False)), default=float("inf"))


def push_uplinks(router, influx) -> str:
    """Config lines for the push uplinks: OCS feeds on the session's router, and InfluxDB."""
    return (
        f'\n[[uplink]]\nkind = "ocs"\nurl = "{router.ws_url}"\n'
        f'\n[[uplink]]\nkind = "influxdb"\nurl = "{influx.url}"\ndatabase = "ocs_feeds"\n'
    )


def wait_forwarded(store, listener, influx, what: str) -> dict:
    """Until the OCS feed and InfluxDB hold exactly what is stored (every series with an OCS name)."""
    deadline = time.monotonic() + 90
    while (gaps := forwarding_gaps(store, listener, influx)) and time.monotonic() < deadline:
        time.sleep(1.0)
    assert not gaps, f"{what}: (stored, OCS wrong, InfluxDB wrong) per series: {gaps}"
    return forwarded(store, listener, influx)


def test_instrument_faults_lose_nothing_delivered(tmp_path, emu372, emu240, router, consumer, wamp_loop, influx):
    listener = FeedListener(wamp_loop, router)
    assert listener.joined.wait(20)
    app = start_appliance(
        appliance_config(tmp_path, emu372, emu240, extra=sisock_uplink(router, tmp_path) + push_uplinks(router, influx))
    )
    base = app.base_url
    try:
        wait_for(lambda: all(p.health.connected for p in app.pollers), 20, what="both instruments connected")
        wait_nodes(consumer)
        cycles = [p.health.cycles for p in app.pollers]
        wait_for(
            lambda: all(p.health.cycles > n + 5 for p, n in zip(app.pollers, cycles, strict=False)),
            20,
            what="both instruments polling steadily before the faults",
        )
        t_fault = time.time()
        # the 372: each fault, then recovery within its backoff (backoff_max 1 s + timeout 1 s)
        recovery: dict[str, float] = {}

        def inject(emu, poller, fault: str, hold: float) -> None:
            h = poller.health
            assert emu.control(fault) == "ok"
            if hold:
                time.sleep(hold)  # the fault lasts a while, as a real one does
                emu.control("clear")
            # garbage/partial clear themselves once they have spoiled their N replies
            wait_for(lambda: not emu.faults.garbage and not emu.faults.partial, 15, what=f"{fault} consumed")
            cleared, before = time.monotonic(), h.samples
            wait_for(lambda: h.samples > before, 20, what=f"{poller.cfg.name} polling again after {fault}")
            recovery[f"{poller.cfg.model} {fault}"] = time.monotonic() - cleared
            wait_for(lambda: h.samples > before + 4, 20, what=f"{poller.cfg.name} polling steadily after {fault}")

        # the 372: each fault, then recovery within its backoff
        for fault, hold in [
            ("drop", 0),
            ("mute on", 2.0),
            ("slow 1.5", 2.5),
            ("garbage 3", 0),
            ("partial 2", 0),
            ("reset", 0),
        ]:
            inject(emu372, app.pollers[0], fault, hold)
        # the 240: garbled bytes, a cut line, its USB vanishing and coming back under the same serial number
        for fault, hold in [("garbage 2", 0), ("partial 1", 0), ("unplug 2", 2.0)]:
            inject(emu240, app.pollers[1], fault, hold)
        t_end = time.time()
        print("recovery after each fault cleared (s):", {k: round(v, 2) for k, v in recovery.items()})
        # backoff_max 1 s (+20 % jitter) + a 1 s timeout for the exchange the fault spoiled + one cycle
        assert max(recovery.values()) < 1.2 + 1.0 + 0.2 + 1.0, recovery
        quiesce(emu372, emu240, app=app)
        db = str(tmp_path / "kelvinpi.db")
        tally = reconcile(app.store, {"LSA23JD": emu372, "LSA24AZ": emu240}, consumer=consumer, http_base=base)
        pushed = wait_forwarded(app.store, listener, influx, "instrument faults")
    finally:
        app.stop()
    print(
        "instrument faults: forwarded to OCS and InfluxDB (stored, OCS wrong, InfluxDB wrong):",
        sum(v[0] for v in pushed.values()),
        "non-NULL samples in",
        len(pushed),
        "series, 0 wrong",
    )
    # the 240 went on reading while the 372 was faulted ...
    assert _max_gap(db, "LSA24AZ::50k_plate_t", t_fault, t_fault + 8) < 1.5
    # ... and the 372's silence shows as a gap, not as invented values
    assert _max_gap(db, "LSA23JD::mxc_control_t", t_fault, t_end) >= 1.5
    print("instrument faults:", tally.line(), "faulted replies:", emu372.ledger.faulted + emu240.ledger.faulted)
    assert tally.produced > 200
    assert emu240.ledger.faulted >= 2  # the faults really hit readings (the 372 ones mostly hit SCAN?)
    assert tally.lost == 0, tally.per_series
    assert tally.foreign == 0
    assert tally.served_wamp == tally.stored == tally.served_http


def _metric(base: str, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_disk_full_queues_counts_drops_and_resumes(
    tmp_path, small_disk, emu372, emu240, router, consumer, wamp_loop, influx
):
    listener = FeedListener(wamp_loop, router)
    assert listener.joined.wait(20)
    text = appliance_config(
        tmp_path, emu372, emu240, extra=sisock_uplink(router, tmp_path) + push_uplinks(router, influx)
    )
    text = text.replace("read_heater = true", "read_heater = false")
    text = text.replace(str(tmp_path / "kelvinpi.db"), str(small_disk / "kelvinpi.db"))
    text = text.replace("commit_interval = 0.2", "commit_interval = 0.2\nqueue_size = 300")
    app = start_appliance(text)
    base = app.base_url
    filler = small_disk / "filler"
    try:
        wait_for(lambda: app.store.written > 100, 20, what="writing")
        fill_disk(filler)
        wait_for(lambda: app.store.write_errors > 0, 20, what="a failed write")
        polled = sum(p.health.samples for p in app.pollers)
        wait_for(lambda: app.queue.dropped > 0, 30, what="the bounded queue overflowing")
        health = app.health()
        assert "full" in health["store"]["last_error"] and health["ok"] is False
        assert health["store"]["dropped"] > 0 and health["store"]["queue"] <= 300
        assert _metric(base, "kelvinpi_queue_dropped_samples_total") > 0
        assert _metric(base, "kelvinpi_store_write_errors_total") > 0
        assert sum(p.health.samples for p in app.pollers) > polled  # polling never stopped
        written = app.store.written
        filler.unlink()  # space comes back
        wait_for(lambda: app.store.written > written + 100 and len(app.queue) < 100, 30, what="writes resumed")
        quiesce(emu372, emu240, app=app)
        wait_nodes(consumer)
        tally = reconcile(app.store, {"LSA23JD": emu372, "LSA24AZ": emu240}, consumer=consumer, http_base=base)
        dropped = app.queue.dropped
        pushed = wait_forwarded(app.store, listener, influx, "disk full")  # exactly what was stored, no more
    finally:
        app.stop()
        filler.unlink(missing_ok=True)
    print(
        "disk full:",
        tally.line(),
        f"dropped={dropped} (counted); forwarded to OCS and InfluxDB:",
        sum(v[0] for v in pushed.values()),
    )
    assert dropped > 0
    assert tally.produced == tally.stored + dropped  # every reading is stored or counted as dropped
    assert tally.foreign == 0 and tally.served_wamp == tally.stored == tally.served_http
    assert sqlite3.connect(app.store.path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_disk_full_during_a_reconnect_and_a_clock_step(tmp_path, small_disk, emu372, emu240, monkeypatch):
    """Only the writer touches the file: on a full disk an instrument that drops out reconnects and
    polls on, and the clock watcher records a step and keeps watching; their events wait in memory
    and reach the store when space comes back. (v1: the event's SQLite error inside the poller's
    connect was taken for an instrument failure, so the poller reconnected forever taking no
    readings, and the clock watcher's ended the service's main loop.)"""
    import threading

    real_time = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
    text = appliance_config(tmp_path, emu372, emu240).replace("read_heater = true", "read_heater = false")
    text = text.replace(str(tmp_path / "kelvinpi.db"), str(small_disk / "kelvinpi.db"))
    app = start_appliance(text)
    watcher = threading.Thread(target=app.watch_clock, daemon=True)
    watcher.start()
    filler = small_disk / "filler"
    try:
        wait_for(lambda: app.store.written > 100, 20, what="writing")
        fill_disk(filler)
        wait_for(lambda: app.store.write_errors > 0, 20, what="a failed write")
        p240 = app.pollers[1]
        reconnects = p240.health.reconnects
        assert emu240.control("unplug 2") == "ok"  # its USB vanishes and comes back
        time.sleep(2.0)  # the unplug lasts its 2 s
        emu240.control("clear")
        wait_for(lambda: p240.health.reconnects > reconnects, 20, what="the 240 reconnecting on a full disk")
        before = p240.health.samples
        wait_for(lambda: p240.health.samples > before + 5, 20, what="the 240 polling after its reconnect")
        offset[0] = 30.0  # NTP steps the clock while the disk is full
        wait_for(lambda: app.clock_steps == 1, 10, what="the clock step noticed")
        time.sleep(1.5)  # past the watcher's next pass (every 1 s): it must not have died recording the step
        assert watcher.is_alive() and app.store.write_errors > 0 and p240.health.connected
        written = app.store.written
        filler.unlink()  # space comes back
        wait_for(lambda: app.store.written > written + 100 and len(app.queue) < 100, 30, what="writes resumed")
        wait_for(
            lambda: "clock_step" in {e["kind"] for e in app.store.events(limit=1000)},
            10,
            what="the queued events committed",
        )
        kinds = [e["kind"] for e in app.store.events(limit=1000)]
        quiesce(emu372, emu240, app=app)
        tally = reconcile(app.store, {"LSA23JD": emu372, "LSA24AZ": emu240})
        dropped = app.queue.dropped + app.store.records_dropped
    finally:
        app.stop()
        offset[0] = 0.0
        watcher.join(3)
        filler.unlink(missing_ok=True)
    print(
        "disk full during a reconnect and a clock step:",
        tally.line(),
        f"events={kinds.count('connected')} connected, {kinds.count('disconnected')} disconnected",
    )
    assert "disconnected" in kinds and kinds.count("connected") >= 3  # two at start, one after the unplug
    assert dropped == 0 and tally.lost == 0 and tally.foreign == 0, tally.per_series


def test_clock_steps_back_an_hour_and_forward_a_day(tmp_path, emu372, emu240, monkeypatch, router, consumer):
    """The wall clock jumps (NTP's first sync on a Pi without RTC) while polling: every reading is
    kept under its own key, each stretch stays in acquisition order, rollups equal the raw rows,
    and both jumps are recorded. The whole process sees the stepped clock, as on a real Pi."""
    import threading

    real_time = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
    app = start_appliance(appliance_config(tmp_path, emu372, emu240, extra=sisock_uplink(router, tmp_path)))
    watcher = threading.Thread(target=app.watch_clock, daemon=True)
    watcher.start()
    t_start = time.time()
    try:
        wait_for(lambda: all(p.health.connected for p in app.pollers), 20, what="connected")
        # three stretches of polling, each seconds long, between the two steps
        time.sleep(3)
        offset[0] = -3600.0
        time.sleep(4)
        offset[0] = 86400.0
        time.sleep(4)
        quiesce(emu372, emu240, app=app)
        wait_nodes(consumer)
        tally = reconcile(app.store, {"LSA23JD": emu372, "LSA24AZ": emu240}, consumer=consumer, http_base=app.base_url)
        steps = app.clock_steps
    finally:
        app.stop()
        watcher.join(3)
    print("clock steps:", tally.line(), f"steps recorded={steps}")
    assert tally.produced > 100 and tally.lost == 0 and tally.foreign == 0, tally.per_series
    assert tally.served_wamp == tally.stored == tally.served_http
    db = sqlite3.connect(app.store.path)
    kinds = [r[0] for r in db.execute("SELECT detail FROM event WHERE kind='clock_step' ORDER BY id")]
    assert (
        steps == 2 and len(kinds) == 2 and kinds[0].startswith("-36") and kinds[1].startswith("+90000")
    )  # -1 h to +1 d
    # each stretch in acquisition order: sorted by time the stretches come back B (an hour early), A, C
    ledger = emu240.ledger.snapshot()[("1", "kelvin")]
    got = stored(app.store, "LSA24AZ::50k_plate_t")
    rows, ts = [v for _, v in got], [t for t, _ in got]
    b = [v for v, t in zip(rows, ts, strict=False) if t < t_start - 1000]
    a = [v for v, t in zip(rows, ts, strict=False) if t_start - 1000 <= t < t_start + 43200]
    c = [v for v, t in zip(rows, ts, strict=False) if t >= t_start + 43200]
    assert a and b and c and a + b + c == ledger
    # what readers get at every rollup tier is the exact aggregate of the stored samples,
    # whatever order they arrived in (and whether the forward step got them sealed already)
    bad = rollup_mismatches(app.store)
    assert not bad, bad[:5]
    db.close()


def test_fifty_http_clients_while_polling(tmp_path, emu372, emu240):
    """50 concurrent clients poll /api/v1/latest and run Grafana queries over 30 days of history
    while both instruments are polled once a second: every answer is whole, at most 3 poll cycles
    overrun, no gap in the stored readings, nothing lost; latency percentiles are printed (targets:
    make bench-web). The clients are a process of their own, 5 requests a second each
    (tests/support/http_load.py), as browsers are."""
    import json
    import os
    import statistics
    import subprocess
    import sys
    from pathlib import Path

    from appliance.naming import SeriesKey
    from appliance.samples import Sample
    from appliance.store import Store

    db = tmp_path / "kelvinpi.db"
    seed = Store(db)
    now = time.time()
    keys = [
        SeriesKey("LSA24AZ", "50k_plate_t", "K", "50k_plate"),
        SeriesKey("LSA24AZ", "4k_plate_t", "K", "4k_plate"),
        SeriesKey("LSA23JD", "mxc_control_t", "K", "mxc_control"),
        SeriesKey("LSA23JD", "mxc_control_r", "Ohm", "mxc_control"),
    ]
    t0 = now - 30 * 86400
    for day in range(30):
        seed.write(
            [
                Sample(k, t0 + day * 86400 + m * 60 + i * 0.001, 1.0 + m % 7, 0)
                for m in range(1440)
                for i, k in enumerate(keys)
            ]
        )
    seed.close()
    text = appliance_config(tmp_path, emu372, emu240, interval=1.0)
    app = Appliance(_config.parse(text))
    app.start()
    port = app.web_address[1]
    try:
        wait_for(lambda: all(p.health.connected for p in app.pollers) and app.store.written > 20, 20, what="polling")
        over0 = [p.health.overruns for p in app.pollers]
        t_load = time.time()
        root = Path(__file__).resolve().parent.parent
        load = subprocess.run(
            [sys.executable, "-m", "tests.support.http_load", str(port), "20", "50", *(k.name for k in keys)],
            capture_output=True,
            text=True,
            timeout=75,  # 20 s of load, a request's 30 s timeout, slack; pytest's own is 120 s
            cwd=root,
            env=dict(os.environ, PYTHONPATH=str(root)),
        )
        try:
            result = json.loads(load.stdout)
        except ValueError:
            raise AssertionError(
                f"http_load exited {load.returncode}: {load.stdout[-1000:]!r} {load.stderr[-2000:]}"
            ) from None
        latencies, failures = result["latencies"], result["failures"]
        assert result["unfinished"] == 0, result["unfinished"]
        t_done = time.time()
        overruns = [p.health.overruns - o for p, o in zip(app.pollers, over0, strict=False)]
        quiesce(emu372, emu240, app=app)
        tally = reconcile(
            app.store, {"LSA23JD": emu372, "LSA24AZ": emu240}, since=now, http_base=f"http://127.0.0.1:{port}"
        )
    finally:
        app.stop()
    print("load:", tally.line())
    assert tally.produced > 100 and tally.lost == 0 and tally.foreign == 0 and tally.served_http == tally.stored
    total = sum(len(v) for v in latencies.values())

    def pct(v, q):
        return statistics.quantiles(v, n=100)[q - 1] * 1000 if len(v) > 1 else float("nan")

    print(
        f"load: {total} requests in 20 s by 50 clients ({total / 20:.0f}/s); "
        + "; ".join(
            f"{k} n={len(v)} p50={pct(v, 50):.1f} ms p99={pct(v, 99):.1f} ms max={max(v) * 1000:.1f} ms"
            for k, v in latencies.items()
        )
        + f"; poll overruns={overruns}; failures={len(failures)}"
    )
    assert not failures, failures[:5]
    assert len(latencies["latest"]) > 200 and len(latencies["grafana"]) > 50
    # ~100 cycles each in the 20 s: starving the pollers would overrun most of them; a loaded CI host
    # (an image build beside the suite) overran one cycle once with no help from the clients. The
    # latency aims themselves are make bench-web's, measured against a baseline in the same run.
    assert all(n <= 3 for n in overruns), overruns
    assert _max_gap(str(db), "LSA24AZ::50k_plate_t", t_load, t_done) < 2.0
    assert _max_gap(str(db), "LSA23JD::mxc_control_t", t_load, t_done) < 2.0
