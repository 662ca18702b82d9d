"""The whole plant at once: the appliance polls an emulated Cryomech CPA (Modbus TCP), a Pfeiffer
TPG 366 (TCP) and a Bluefors log folder while the compressor trips on its cooling water.

produced: the emulators' ledgers (the CPA's whole answers, the TPG's, every Bluefors line written);
stored:   the appliance's store;
served:   the Grafana JSON datasource over HTTP and sisock ``get_data`` through a real crossbar router;
pushed:   the OCS feeds (``ptc_status``, ``pressures``, ``bluefors`` as socs' agents name them) and
          InfluxDB (Debian's influxd) hold every stored non-NULL reading, and a real remote-write
          receiver (VictoriaMetrics) holds every stored sample and status.
The trip: ``compressor-stopped`` is raised within one poll interval (plus the alarm loop's shortest
tick) of the moment the CPA emulator's ledger says it tripped, and a real webhook receiver on
loopback (``make run``'s, tools/devrun.py) gets it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter

import pytest

from appliance.alarm_service import MIN_TICK
from drivers.cpa import FIELDS
from firmware_host.bluefors_writer import BlueforsWriter
from firmware_host.cpa_server import CpaEmulator
from firmware_host.pfeiffer_emulator import PfeifferEmulator
from tools.devrun import Receiver as WebhookReceiver

from .conftest import SERVER_SECRET, start_appliance, wait_for
from .support.receivers import VictoriaMetrics, differences, every_uplink_marks, expected
from .support.reconcile import forwarded, forwarding_gaps, reconcile, stored, windows
from .support.routers import FeedListener
from .test_bluefors_appliance import LIGHT, TZ, diff, produced
from .test_bluefors_appliance import stored as bluefors_stored

pytestmark = every_uplink_marks()

INTERVAL = 0.25  # the CPA's and the gauges' poll interval
FEEDS = ("ptc_status", "pressures", "bluefors")  # socs: cryomech_cpa agent.py:45, pfeiffer_tpg366 :28, bluefors


def secret(path, text: str):
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def fridge_config(tmp_path, cpa_port: int, tpg_port: int, logs, router, influx, vm, hook_url: str) -> str:
    return f"""
[[instrument]]
model = "cpa"
name = "ptc1"
transport = "tcp"
host = "127.0.0.1"
port = {cpa_port}
interval = {INTERVAL}
timeout = 0.5

[[instrument]]
model = "tpg366"
name = "TPG366A"
transport = "tcp"
host = "127.0.0.1"
port = {tpg_port}
interval = {INTERVAL}
timeout = 0.5

[[instrument]]
model = "bluefors-logs"
name = "bluefors"
transport = "folder"
log_dir = "{logs}"
timezone = "Europe/Helsinki"
interval = 0.2

[polling]
backoff_initial = 0.05
backoff_max = 0.2

[store]
path = "{tmp_path / "k.db"}"
commit_interval = 0.1

[web]
bind = "127.0.0.1"
port = 0

[[uplink]]
kind = "sisock"
url = "{router.wss_url}"
secret_file = "{secret(tmp_path / "wamp-secret", SERVER_SECRET)}"
ca_file = "{router.cert}"

[[uplink]]
kind = "ocs"
url = "{router.ws_url}"

[[uplink]]
kind = "influxdb"
url = "{influx.url}"
database = "ocs_feeds"

[[uplink]]
kind = "remote_write"
url = "{vm.write_url}"

[[notify]]
kind = "webhook"
name = "loopback"
url_file = "{secret(tmp_path / "webhook-url", hook_url)}"
backoff_initial = 0.2
backoff_max = 1.0

[[alarm]]
kind = "below"
name = "compressor-stopped"
severity = "critical"
field = "ptc1::cparun"
threshold = 0.5

[[alarm]]
kind = "above"
name = "cooling-water-hot"
severity = "critical"
field = "ptc1::cpatempwo"
threshold = 110.0
hysteresis = 2.0

[[alarm]]
kind = "above"
name = "p1-rising"
severity = "critical"
field = "TPG366A::p1"
threshold = 1e-4

[[alarm]]
kind = "below"
name = "flow-below-floor"
severity = "critical"
field = "bluefors::flow"
threshold = 0.3
"""


class Feeds:
    """The three OCS feeds, read as one (``reconcile.forwarded`` asks one listener for samples)."""

    def __init__(self, loop, router) -> None:
        self.listeners = [FeedListener(loop, router, feed=f) for f in FEEDS]
        for x in self.listeners:
            assert x.joined.wait(20)

    def samples(self) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list] = {}
        for x in self.listeners:
            for k, v in x.samples().items():
                out.setdefault(k, []).extend(v)
        return out


def alarm(base: str, name: str) -> dict:
    with urllib.request.urlopen(base + "/api/v1/alarms", timeout=10) as r:
        got = json.load(r)
    return next(a for a in (got["alarms"] if isinstance(got, dict) else got) if a["name"] == name)


def grafana_points(base: str, names: list[str], t0: float, t1: float) -> int:
    """Raw points the Grafana JSON datasource serves (90 s windows, at most 60 targets a query)."""
    n = 0
    for (a, b), some in ((ab, names[i : i + 60]) for ab in windows(t0, t1, 90) for i in range(0, len(names), 60)):
        body = json.dumps(
            {
                "range": {"from": repr(a), "to": repr(b)},
                "maxDataPoints": 100000,
                "intervalMs": 0,
                "targets": [{"target": x} for x in some],
            }
        ).encode()
        req = urllib.request.Request(f"{base}/grafana/query", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            n += sum(len(t["datapoints"]) for t in json.load(r))
    return n


def sisock_points(consumer, node: str, fields: list[str], t0: float, t1: float) -> int:
    n = 0
    for a, b in windows(t0, t1, 3000):
        got = consumer.get_data(node, fields, a, b)
        n += sum(len(v) for v in got["data"].values())
    return n


@pytest.mark.timeout(180)
def test_whole_plant_trip_reconciled_on_every_uplink(tmp_path, router, hub, consumer, wamp_loop, influx):
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    feeds = Feeds(wamp_loop, router)
    hook = WebhookReceiver(lambda _line: None).start()
    cpa = CpaEmulator()
    _, cpa_port = cpa.listen_tcp("127.0.0.1", 0)
    tpg = PfeifferEmulator.tpg366(seed=5)
    _, tpg_port = tpg.listen_tcp("127.0.0.1", 0)
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = BlueforsWriter(logs, TZ, time.time() - 600, periods=LIGHT)
    writer.advance(540)  # nine minutes of the Bluefors PC's logs before the appliance starts
    app = None
    try:
        t_start = time.time() - 700
        app = start_appliance(fridge_config(tmp_path, cpa_port, tpg_port, logs, router, influx, vm, hook.url))
        base = app.base_url
        wait_for(lambda: all(p.health.connected for p in app.pollers), 20, what="all three plant instruments")
        wait_for(lambda: len(stored(app.store, "ptc1::cparun")) >= 3, 20, what="the compressor's first readings")
        assert not alarm(base, "compressor-stopped")["active"]

        # the cooling water stops: in the CPA's simulated time the coolant out warms past its warning
        # limit (110 F, about 90 s) and the cooling-water rule fires before the compressor stops ...
        assert cpa.control("trip water") == "ok"
        assert cpa.control("advance 110") == "ok"
        wait_for(lambda: alarm(base, "cooling-water-hot")["active"], 10, 0.02, what="cooling-water-hot raised")
        assert not cpa.ledger.trips and not alarm(base, "compressor-stopped")["active"]
        # ... then past its alarm limit (125 F, about 143 s) the CPA trips; the Bluefors PC logs it off
        assert cpa.control("advance 60") == "ok"
        (trip,) = cpa.ledger.trips
        assert trip["cause"] == "water"
        writer.set("compressor", 0.0)
        writer.advance(60)
        wait_for(lambda: alarm(base, "compressor-stopped")["active"], 10, 0.02, what="compressor-stopped raised")
        raised = alarm(base, "compressor-stopped")
        # within a poll and a tick, plus 1 s for a loaded machine (0.1 s left it nothing;
        # it is scheduling); the raise is stamped when the alarm tick ran, not when the reading was taken
        assert raised["since"] - trip["t"] <= INTERVAL + MIN_TICK + 1.0, (raised, trip)
        assert not alarm(base, "p1-rising")["active"] and not alarm(base, "flow-below-floor")["active"]
        wait_for(
            lambda: any(b.get("alarm") == "compressor-stopped" and b.get("event") == "raised" for b in hook.got),
            20,
            what="the webhook receiver got compressor-stopped raised",
        )
        (note,) = [b for b in hook.got if b.get("alarm") == "compressor-stopped"]
        assert note["field"] == "ptc1::cparun" and note["severity"] == "critical"

        # quiet: nothing more produced, then produced = stored = served, and pushed on every uplink
        cpa.control("mute on")
        tpg.control("mute on")
        cpa_produced = cpa.ledger.snapshot()
        want_logs = produced(writer)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            sum(len(stored(app.store, f"ptc1::{f}")) for f in FIELDS) < sum(map(len, cpa_produced.values()))
            or sum(bluefors_stored(app.store).values()) < sum(want_logs.values())
        ):
            time.sleep(0.05)
        time.sleep(1.0)  # past a timeout and a backoff: nothing in flight (the TPG's last answer stored)

        # the compressor: every value of every whole answer, once
        for f in FIELDS:
            got = Counter(v for _, v in stored(app.store, f"ptc1::{f}"))
            assert got == Counter(cpa_produced.get(f, [])), f
        n_cpa = sum(map(len, cpa_produced.values()))
        # the gauges: the TPG's ledger through the reconcile every instrument test uses
        tally = reconcile(app.store, {"TPG366A": tpg}, consumer=consumer, http_base=base)
        assert tally.produced > 0 and tally.lost == 0 and tally.foreign == 0, tally.per_series
        assert tally.stored == tally.produced == tally.served_wamp == tally.served_http, tally.line()
        # the Bluefors folder: every line's values, once
        got_logs = bluefors_stored(app.store)
        assert got_logs == want_logs, diff(want_logs, got_logs)
        t0, t1 = min(t for _, t, _ in want_logs) - 1, time.time() + 1
        names = {f.node: [] for f in app.store.fields()}
        for f in app.store.fields():
            names[f.node].append(f)
        for node, n_want in (("ptc1", n_cpa), ("bluefors", sum(want_logs.values()))):
            assert grafana_points(base, [f.name for f in names[node]], t0, t1) == n_want, node
            assert sisock_points(consumer, node, [f.field for f in names[node]], t0, t1) == n_want, node

        # the push uplinks: the OCS feeds and InfluxDB hold exactly what is stored, VictoriaMetrics too
        deadline = time.monotonic() + 30
        while (gaps := forwarding_gaps(app.store, feeds, influx)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not gaps, f"(stored, OCS wrong, InfluxDB wrong) per series: {gaps}"
        pushed = forwarded(app.store, feeds, influx)
        assert {name.split("::")[0] for name, (n, _, _) in pushed.items() if n} == {"ptc1", "TPG366A", "bluefors"}
        end = time.time() + 1
        want_rw = expected(app.store, t_start, end)
        deadline = time.monotonic() + 30
        while (bad := differences(want_rw, vm.samples(t_start, end))) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not bad, f"remote write: (wanted, missing, extra) per series: {bad}"
        print(
            f"whole plant: CPA {n_cpa}, TPG {tally.produced}, Bluefors {sum(want_logs.values())} readings;"
            f" trip alarm {raised['since'] - trip['t']:.3f} s after the trip"
        )
    finally:
        if app is not None:
            app.stop()
        cpa.stop()
        tpg.stop()
        hook.stop()
        vm.stop()
