"""The Lake Shore rack on every uplink (issue 24): one appliance polls an emulated Model 336 over TCP
and an emulated Model 370 over its RS-232 pty at once, each through a disconnect and a garbled reply.

produced: the emulators' ledgers (readings whose replies left whole and on time);
stored:   the appliance's store;
served:   the Grafana JSON datasource over HTTP and sisock ``get_data`` through a real crossbar router;
pushed:   the OCS ``temperatures`` feed (socs' LS336_Agent and LS370_Agent name it so) and InfluxDB
          (Debian's influxd) hold every stored non-NULL reading; a real remote-write receiver
          (VictoriaMetrics) holds every stored sample and status.
lost = 0 and foreign = 0 (no garbled bytes stored as a value) on both instruments.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from firmware_host.emulator import Emulator
from firmware_host.protocol import parse_message

from .conftest import start_appliance, wait_for
from .support.receivers import VictoriaMetrics, differences, every_uplink_marks, expected
from .support.reconcile import forwarded, forwarding_gaps, quiesce, reconcile, stored
from .support.routers import FeedListener
from .test_uplinks import uplink_config

pytestmark = every_uplink_marks()


def rack_config(tmp_path, port: int, link: str, router, influx, vm) -> str:
    return (
        '[[instrument]]\nmodel = "336"\nname = "LSA336A"\ntransport = "tcp"\nhost = "127.0.0.1"\n'
        f"port = {port}\ntimeout = 0.5\ninterval = 0.2\nread_heater = true\n"
        f'[[instrument]]\nmodel = "370"\nname = "LS370X"\ntransport = "serial"\ndevice = "{link}"\n'
        "timeout = 1.0\ninterval = 0.2\nread_heater = true\n"
        "[polling]\nbackoff_initial = 0.2\nbackoff_max = 0.5\n"
        f'[store]\npath = "{tmp_path / "k.db"}"\ncommit_interval = 0.2\n'
        '[web]\nbind = "127.0.0.1"\nport = 0\nstale_after = 30\n'
        + uplink_config(router, tmp_path, influx=influx)
        + f'\n[[uplink]]\nkind = "remote_write"\nurl = "{vm.write_url}"\n'
    )


def heater_replies(emu: Emulator, output: str = "") -> Counter:
    """The ``HTR?`` answers (of ``output``) the emulator sent whole: a heater series' produced side
    (the ledger keeps readings only)."""
    out: Counter = Counter()
    for line, reply in list(emu.ledger.exchanges):
        answers = reply.split(";")
        parts = [parse_message(p) for p in line.split(";")]
        if len(parts) != len(answers):
            continue
        for (name, args), a in zip(parts, answers, strict=True):
            if name == "HTR?" and (args[0].strip() if args else "") == output:
                out[float(a)] += 1
    return out


@pytest.mark.timeout(120)
def test_336_over_tcp_and_370_over_a_pty_reconciled_on_every_uplink(tmp_path, router, hub, consumer, wamp_loop, influx):
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    feed = FeedListener(wamp_loop, router, feed="temperatures")  # socs' LS336_Agent and LS370_Agent
    assert feed.joined.wait(20)
    ls336 = Emulator.ls336(seed=31)
    _, port = ls336.listen_tcp("127.0.0.1", 0)
    ls370 = Emulator.ls370(seed=9)
    ls370.device.select_scan("5", 0)  # held on the mixing chamber: every cycle reads it
    link = ls370.listen_pty(str(tmp_path / "ls370"))
    app = None
    try:
        t_start = time.time() - 1
        app = start_appliance(rack_config(tmp_path, port, link, router, influx, vm))

        def mxc() -> int:  # channel 5 readings the 370 delivered whole (its ledger)
            return ls370.ledger.counts().get("5/kelvin", 0)

        # the 370's first reading comes once its scanner's 3 s change pause has passed
        wait_for(lambda: ls336.ledger.total() >= 16 and mxc() >= 2, 30, what="both instruments polled")
        # a garbled reply on each, then a disconnect on each (the 336's TCP dropped, the 370's cable pulled)
        assert ls336.control("garbage 1") == "ok"
        assert ls370.control("garbage 1 RDGR?") == "ok"
        wait_for(lambda: not ls336.faults.garbage and not ls370.faults.garbage, 10, what="garbled replies sent")
        n336, n370 = ls336.ledger.total(), mxc()
        assert ls336.control("drop") == "ok"
        assert ls370.control("unplug 1") == "ok"
        wait_for(lambda: ls336.ledger.total() >= n336 + 16 and mxc() >= n370 + 3, 30, what="readings after")
        quiesce(ls336, ls370, settle=2.5, app=app)

        emus = {"LSA336A": ls336, "LS370X": ls370}
        tally = reconcile(app.store, emus, consumer=consumer, http_base=app.base_url)
        print("rack (336 TCP + 370 pty):", tally.line(), "370 faulted:", ls370.ledger.faulted)
        assert ls370.ledger.faulted >= 1  # the garbled 370 reply was left out of its ledger
        for node, emu in emus.items():  # each instrument contributed, not only the sum
            assert sum(map(len, emu.ledger.snapshot().values())) >= 8, node
        assert tally.lost == 0 and tally.foreign == 0, tally.per_series
        assert tally.produced == tally.stored == tally.served_wamp == tally.served_http, tally.line()

        # the 336's heater output: every stored value an ``HTR? 1`` answer the emulator sent whole
        got = Counter(v for _, v in stored(app.store, "LSA336A::heater_1"))
        assert got and not got - heater_replies(ls336, "1"), got - heater_replies(ls336, "1")
        # the 370's sample heater: its ledger keeps reading groups only (no exchanges), so here no more
        # rows than ``HTR?`` questions it heard
        asked = sum(1 for line in list(ls370.ledger.heard) if line.strip().upper() == "HTR?")
        assert 0 < len(stored(app.store, "LS370X::sample_heater")) <= asked

        # the push uplinks: the OCS feed and InfluxDB hold exactly what is stored, VictoriaMetrics too
        deadline = time.monotonic() + 30
        while (gaps := forwarding_gaps(app.store, feed, influx)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not gaps, f"(stored, OCS wrong, InfluxDB wrong) per series: {gaps}"
        pushed = forwarded(app.store, feed, influx)
        for series in ("LSA336A::still_t", "LSA336A::heater_1", "LS370X::channel_5_t", "LS370X::sample_heater"):
            assert pushed.get(series, (0,))[0] > 0, (series, sorted(pushed))
        assert {n.split("::")[0] for n, (k, _, _) in pushed.items() if k} == {"LSA336A", "LS370X"}
        end = time.time() + 1
        want_rw = expected(app.store, t_start, end)
        assert {name.split("::")[0] for _, name in want_rw} == {"LSA336A", "LS370X"}
        deadline = time.monotonic() + 30
        while (bad := differences(want_rw, vm.samples(t_start, end))) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not bad, f"remote write: (wanted, missing, extra) per series: {bad}"
    finally:
        if app is not None:
            app.stop()
        ls336.stop()
        ls370.stop()
        vm.stop()
