"""The whole /metrics exposition against a golden file (node_exporter's e2e-output.txt, here
tests/data/metrics-golden.txt): a seeded 372 emulator's readings in a real store, fixed health
records, a fixed clock. A renamed metric, a changed help text, a lost or extra sample, a label
order: each shows as a diff. Regenerate after an intended change with

    KELVINPI_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_metrics_golden.py

and read the diff before committing it. Three values the machine measures (the file's and the
pages' bytes, the last commit's duration) are masked, not their presence.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from pathlib import Path

from prometheus_client import generate_latest

from appliance import config
from appliance.health import InstrumentHealth, UplinkHealth
from appliance.naming import SeriesKey
from appliance.notify import Lane, sender_for
from appliance.samples import Sample, SampleQueue
from appliance.store import Store
from appliance.web.metrics import make_registry
from drivers.ls372 import Model372
from drivers.transport import TcpTransport
from firmware_host.emulator import Emulator

GOLDEN = Path(__file__).parent / "data" / "metrics-golden.txt"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: every reading time and "now" are fixed
MEASURED = ("kelvinpi_store_file_bytes", "kelvinpi_store_used_bytes", "kelvinpi_store_commit_seconds")


class Alarms:
    """What the collector reads of the alarm service: the rules' states and the delivery lanes."""

    def __init__(self, lanes: dict[str, Lane]) -> None:
        self.lanes = lanes

    def alarms(self) -> list[dict]:
        return [
            {"name": "mxc-warm", "severity": "critical", "active": True, "acked": True},
            {"name": "still-silent", "severity": "warning", "active": False, "acked": False},
        ]


def readings(seed: int) -> list[Sample]:
    """Five channels of a seeded emulator (time nearly frozen), read through the real driver."""
    emu = Emulator.ls372(seed=seed, time_scale=1e-9)
    emu.listen_tcp("127.0.0.1", 0)
    try:
        m = Model372(TcpTransport(*emu.tcp.address), timeout=2)
        m.connect()
        out = []
        for i, ch in enumerate(("A", 1, 2, 5, 6)):
            r = m.read(ch)
            name = f"ch{ch}".lower()
            kelvin = SeriesKey("LSA23JD", f"{name}_t", "K", "LSA23JD")
            ohms = SeriesKey("LSA23JD", f"{name}_r", "Ohm", "LSA23JD")
            out += [Sample(kelvin, T0 - 10 + i, r.kelvin, r.status), Sample(ohms, T0 - 10 + i, r.sensor, r.status)]
        m.close()
    finally:
        emu.stop()
    out.append(Sample(SeriesKey("LSA23JD", "heater_pct", "%", "LSA23JD"), T0 - 3, 12.5, 0))
    return out


def exposition(tmp_path: Path) -> str:
    store = Store(tmp_path / "k.db")
    try:
        store.write(readings(seed=11))
        queue = SampleQueue(1000)
        pollers = [
            type("P", (), {"health": InstrumentHealth("LSA23JD", "372", "tcp")})(),
            type("P", (), {"health": InstrumentHealth("LSA24AZ", "240", "serial")})(),
        ]
        h = pollers[0].health
        h.connected, h.last_good, h.errors = True, T0 - 6, Counter(timeout=2, bad_reply=1)
        h.reconnects, h.cycles, h.overruns = 3, 120, 1
        pollers[1].health.errors["internal"] += 1  # never answered: no last_good sample
        uplinks = [UplinkHealth("uplink[0]", "remote_write", True, T0 - 1, 12, 4000), UplinkHealth("uplink[1]", "ocs")]
        url = tmp_path / "url"
        url.write_text("http://127.0.0.1:9/hook\n")
        url.chmod(0o600)
        target = config.WebhookNotify(kind="ntfy", name="on-call", url_file=url)
        lane = Lane(sender_for(target), store, threading.Event())  # not started: its counters only
        lane.failures = 4
        lane.put({"id": 1, "body": {}, "queued": 0.0})
        registry = make_registry(
            store=store,
            pollers=pollers,  # type: ignore[arg-type]
            queue=queue,
            clock_synced=lambda: True,
            uplink_health=lambda: uplinks,
            alarms=Alarms({"on-call": lane}),  # type: ignore[arg-type]
            now=lambda: T0,
        )
        text = generate_latest(registry).decode()
    finally:
        store.close()
    return re.sub(rf"^({'|'.join(MEASURED)}) \S+$", r"\1 <measured>", text, flags=re.M)


def test_metrics_exposition_matches_the_golden_file(tmp_path):
    got = exposition(tmp_path)
    if os.environ.get("KELVINPI_REGEN_GOLDEN"):
        GOLDEN.write_text(got)
    want = GOLDEN.read_text()
    assert got == want, "the /metrics exposition changed: diff it against tests/data/metrics-golden.txt"


def test_a_store_health_field_is_declared_once_for_both_views(tmp_path):
    """/api/v1/health's store section and the store's /metrics come from one StoreStats record: the
    health keys are the ones the API has always had, and each metric field's sample is its value."""
    from appliance.health import StoreStats, metric_fields

    store = Store(tmp_path / "k.db")
    try:
        store.write(readings(seed=11))
        stats = StoreStats.read(store, SampleQueue(10), used_bytes=True)
        registry = make_registry(
            store=store, pollers=[], queue=SampleQueue(10), clock_synced=lambda: None, uplink_health=lambda: []
        )
        text = generate_latest(registry).decode()
    finally:
        store.close()
    assert set(stats.as_dict()) == {
        "path", "file_bytes", "max_bytes", "written", "commits", "last_commit", "commit_seconds", "write_errors",
        "last_error", "queue", "dropped", "records_queued", "records_dropped", "rejected", "sealed_blocks", "writing",
    }  # fmt: skip
    for name, spec in metric_fields(StoreStats):
        sample = spec.name + ("_total" if spec.counter else "")
        (line,) = [ln for ln in text.splitlines() if ln.startswith(sample + " ")]
        if spec.name not in MEASURED:
            assert float(line.split()[1]) == float(getattr(stats, name)), line
