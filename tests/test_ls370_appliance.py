"""The appliance polling an emulated Model 370 over its RS-232 pty, end to end.

produced (the 370's ledger: readings whose three replies left whole) = stored (the store) =
served (the Grafana JSON datasource over HTTP), through a garbled reply and a pulled cable; the
series, OCS names and status names the model registry gives a 370.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from firmware_host.emulator import Emulator
from tests.conftest import start_appliance, wait_for
from tests.support.reconcile import quiesce, reconcile

pytestmark = pytest.mark.slow  # a whole appliance on a 9600-baud-paced link: about 15 s


def config(tmp_path, link: str) -> str:
    return (
        f'[[instrument]]\nmodel = "370"\nname = "LS370X"\ntransport = "serial"\ndevice = "{link}"\n'
        "timeout = 1.0\ninterval = 0.2\nread_heater = true\n"
        "[polling]\nbackoff_initial = 0.2\nbackoff_max = 1.0\n"
        f'[store]\npath = "{tmp_path / "kelvinpi.db"}"\ncommit_interval = 0.2\n'
        '[web]\nbind = "127.0.0.1"\nport = 0\nstale_after = 30\n'
    )


def get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)


def test_appliance_reconciles_a_370_through_a_garbled_reply_and_an_unplug(tmp_path):
    emu = Emulator.ls370(seed=9)
    emu.device.select_scan("5", 0)  # held on the mixing chamber: every cycle reads it
    link = emu.listen_pty(str(tmp_path / "ls370"))
    app = start_appliance(config(tmp_path, link))
    try:
        h = app.pollers[0].health

        def readings() -> int:  # channel 5 readings the 370 delivered whole (its ledger)
            return emu.ledger.counts().get("5/kelvin", 0)

        # the first reading comes once the scanner's 3 s change pause has passed (as socs' agent waits)
        wait_for(lambda: h.connected and readings() >= 4, 30, what="the 370 polled")
        # a garbled reading reply, then the cable pulled for a second
        for fault in ("garbage 1 RDGR?", "unplug 1"):
            before = readings()
            assert emu.control(fault) == "ok"
            wait_for(lambda: not emu.faults.garbage, 10, what=f"{fault} consumed")
            wait_for(lambda b=before: readings() > b + 3, 30, what=f"reading again after {fault}")
        quiesce(emu, app=app)  # nothing in flight, and every reading handed on written
        tally = reconcile(app.store, {"LS370X": emu}, http_base=app.base_url)
        fields = {f["field"]: f for f in get(app.base_url, "/api/v1/fields")["fields"]}
        ocs = {f.name: f.ocs for f in app.store.fields()}
        latest = {r["field"]: r for r in get(app.base_url, "/api/v1/latest")}
        events = [e["kind"] for e in get(app.base_url, "/api/v1/events")["events"]]
    finally:
        app.stop()
        emu.stop()
    print("370 over a pty:", tally.line(), "faulted replies:", emu.ledger.faulted)
    assert tally.produced > 20 and emu.ledger.faulted >= 1
    assert tally.lost == 0 and tally.foreign == 0, tally.per_series
    assert tally.stored == tally.produced == tally.served_http
    # naming: the 370 keeps no channel names: "Channel 5" -> channel_5_t/_r; socs' LS370_Agent names
    assert {"LS370X::channel_5_t", "LS370X::channel_5_r", "LS370X::sample_heater"} <= set(fields)
    assert ocs["LS370X::channel_5_t"] == "Channel_5_T" and ocs["LS370X::channel_5_r"] == "Channel_5_R"
    assert ocs["LS370X::sample_heater"] == "sample_heater_out"
    assert set(latest["LS370X::channel_5_t"]["status_bits"]) <= {"CLOCK_UNSYNCED"}  # the host's, not the 370's
    assert "disconnected" in events or "reconnected" in events or events.count("connected") >= 2, events
