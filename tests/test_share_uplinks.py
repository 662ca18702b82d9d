"""Issue 26 on every uplink: produced = stored = served = pushed with lost = 0 while a share client
switches the 372's scanner every few seconds and another client reads through the share.

produced: the emulated 372's ledger, without the readings the share's clients were given (they are the
          clients', not the log's: ``ShareClientsLeftOut``);
stored:   the appliance's store;
served:   the Grafana JSON datasource over HTTP and sisock ``get_data`` through a real crossbar router;
pushed:   the OCS ``temperatures`` feed and InfluxDB (Debian's influxd) hold every stored non-NULL reading;
          a real remote-write receiver (VictoriaMetrics) holds every stored sample and status.
lost = 0 and foreign = 0; every scanner move is audited and recorded as a replan, and the readings
the moves displaced (the new channel's pause) are counted, never silently missing.
"""

from __future__ import annotations

import threading
import time

import pytest

from appliance.uplinks.remote_write import STATUS_METRIC

from .conftest import start_appliance, wait_for
from .support.receivers import VictoriaMetrics, differences, every_uplink_marks, expected
from .support.reconcile import ShareClientsLeftOut, forwarded, forwarding_gaps, quiesce, reconcile
from .support.routers import FeedListener
from .test_share import NODE, LineClient, port_of, readings_delivered, share_config
from .test_uplinks import uplink_config

pytestmark = every_uplink_marks()

# where the mover puts the scanner, and how long it stays (s): every move changes the channel, every
# ~1.5-3 s, about 15 s in all (the scanned inputs' pause is 1 s here, so most holds also give readings)
MOVES = [(2, 1.5), (3, 2.5), (1, 3.0), (5, 1.5), (2, 2.0), (1, 3.0), (3, 1.5)]


def moving_the_scanner(port: int) -> tuple[list[tuple[str, str]], list[str]]:
    """socs' way (LS372.set_active_channel, socs/Lakeshore/Lakeshore372.py:328-339: ``SCAN?`` then
    ``SCAN <ch>,<auto>``) for every move of ``MOVES`` while a second client reads the active channel as
    socs' acquisition loop does (``SCAN?``, ``KRDG? <ch>``). Returns the reader's (channel, answer) and
    the mover's read-backs."""
    mover, reader = LineClient(port), LineClient(port)
    stop = threading.Event()
    reads: list[tuple[str, str]] = []
    failed: list[BaseException] = []

    def read_loop() -> None:
        try:
            while not stop.is_set():
                ch = reader.msg("SCAN?").split(",")[0]
                reads.append((ch, reader.msg(f"KRDG? {ch}")))
                time.sleep(0.05)
        except BaseException as exc:  # raised below, in the test's thread
            failed.append(exc)

    t = threading.Thread(target=read_loop, daemon=True)
    t.start()
    backs = []
    try:
        for ch, hold in MOVES:
            auto = mover.msg("SCAN?").split(",")[1]
            mover.msg(f"SCAN {ch},{auto}")
            backs.append(mover.msg("SCAN?"))
            assert backs[-1].startswith(f"{ch:02d},"), (ch, backs[-1])
            time.sleep(hold)
    finally:
        stop.set()
        t.join(10)
        mover.close()
        reader.close()
    assert not t.is_alive(), "the reading client did not stop"
    assert not failed, f"the reading client failed: {failed[0]!r}"
    return reads, backs


@pytest.mark.timeout(180)
def test_a_client_switching_the_scanner_reconciled_on_every_uplink(
    tmp_path, emu372, router, hub, consumer, wamp_loop, influx
):
    for ch in ("1", "2", "3", "5"):
        emu372.device.channels[ch].pause = 1  # short pauses: each hold gives readings as well as displacing
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    feed = FeedListener(wamp_loop, router, feed="temperatures")  # socs' LS372_Agent names it so
    assert feed.joined.wait(20)
    app = None
    try:
        t_start = time.time() - 1
        extra = (
            uplink_config(router, tmp_path, influx=influx)
            + f'\n[[uplink]]\nkind = "remote_write"\nurl = "{vm.write_url}"\n'
        )
        app = start_appliance(share_config(tmp_path, emu372, share='policy = "full"', extra=extra))
        poller = app.pollers[0]
        assert poller.connected_event.wait(20), poller.health.last_error
        wait_for(lambda: emu372.ledger.total() >= 8, 30, what="the 372 polled")

        reads, _ = moving_the_scanner(port_of(app))
        assert len(reads) >= 20, "the reading client hardly read"
        for ch, value in reads:  # each answer one the 372 gave for that channel
            assert float(value) in readings_delivered(emu372.ledger, ch.lstrip("0"), "kelvin"), (ch, value)
        quiesce(emu372, settle=2.5, app=app)

        # the moves: each audited with the old and new value, each a replan, and the displaced readings counted
        events = app.store.events(limit=1000)
        audit = [e["detail"] for e in events if e["kind"] == "control" and "share client" in e["detail"]]
        assert sum("applied" in d and "was " in d and "now " in d for d in audit) == len(MOVES), audit
        share_events = [e["detail"] for e in events if e["kind"] == "share"]
        assert sum("acquisition replanned" in d for d in share_events) == len(MOVES), share_events
        assert sum(e["kind"] == "replanned" for e in events) >= len(MOVES)
        displaced = poller.health.share.displaced
        assert displaced > 0 and any("displaced" in d for d in share_events), share_events

        # produced = stored = served (HTTP and sisock), lost = 0, foreign = 0
        tally = reconcile(
            app.store, {NODE: ShareClientsLeftOut(emu372.ledger)}, consumer=consumer, http_base=app.base_url
        )
        print("share (372 TCP, scanner moved by a client):", tally.line(), "displaced:", displaced, tally.per_series)
        assert tally.lost == 0 and tally.foreign == 0, tally.per_series
        assert tally.produced == tally.stored == tally.served_wamp == tally.served_http, tally.line()
        scanned = {name for name in tally.per_series if "mxc_control" not in name}
        assert sum(tally.per_series[n][1] for n in scanned) > 0, f"no scanned channel stored: {tally.per_series}"

        # pushed: the OCS feed and InfluxDB hold exactly what is stored, VictoriaMetrics too
        deadline = time.monotonic() + 30
        while (gaps := forwarding_gaps(app.store, feed, influx)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not gaps, f"(stored, OCS wrong, InfluxDB wrong) per series: {gaps}"
        pushed = forwarded(app.store, feed, influx)
        readings = {n: pushed[n][0] for n in tally.per_series if n in pushed}
        assert sum(readings.values()) == tally.stored, (readings, tally.per_series)
        end = time.time() + 1
        want_rw = expected(app.store, t_start, end)
        deadline = time.monotonic() + 30
        while (bad := differences(want_rw, got_rw := vm.samples(t_start, end))) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not bad, f"remote write: (wanted, missing, extra) per series: {bad}"
        in_vm = sum(len(v) for (m, name), v in got_rw.items() if name in tally.per_series and m != STATUS_METRIC)
        assert in_vm == tally.stored, (in_vm, tally.line())
        print(
            f"pushed: ocs={sum(readings.values())} influxdb={sum(readings.values())} remote_write={in_vm} (of the readings)"
        )
    finally:
        if app is not None:
            app.stop()
        vm.stop()
