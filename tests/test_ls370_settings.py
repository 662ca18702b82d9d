"""The 370's declared settings (appliance/settings.py SETTINGS["370"]): each written through its
declaration on the driver the poller uses, and read back by a second client that speaks the bytes
as socs' Lakeshore370.py does; through the control API, audited, with limits answered 400."""

from __future__ import annotations

import json
import socket

import pytest

from appliance.settings import SETTINGS
from drivers.base import Pacing
from drivers.errors import ConnectionLost
from drivers.ls370 import Model370
from drivers.transport import TcpTransport
from firmware_host.emulator import Emulator
from tests.conftest import start_appliance, wait_for
from tests.test_security import TOKEN, call, secret_file

# (setting, target, values, the raw query a second client reads it back with, and its reply)
CASES = [
    ("input", "7", {"enabled": 1, "dwell": 17, "pause": 9, "curve": 2, "tempco": 2}, "INSET? 7", "1,017,009,02,2"),
    ("input_range", "5", {"mode": 1, "excitation": 7, "range": 9, "autorange": 0, "cs_off": 0}, "RDGRNG? 5", None),
    ("scanner", "", {"channel": 5, "autoscan": 0}, "SCAN?", "05,0"),
    ("control_mode", "", {"mode": 3}, "CMODE?", "3"),
    (
        "control_setup",
        "",
        {"channel": 5, "filtered": 1, "units": 1, "delay": 20, "display": 2, "limit": 6, "resistance": 100.0},
        "CSET?",
        "05,1,1,020,2,6,100",
    ),
    ("heater_range", "0", {"range": 4}, "HTRRNG?", "4"),
    ("setpoint", "0", {"value": 0.02}, "SETP?", "+020.000E-03"),
    ("pid", "0", {"p": 25.0, "i": 120.0, "d": 1.5}, "PID?", "+00025.0,+00120.0,+0001.5"),
    ("manual_output", "0", {"value": 12.5}, "MOUT?", "+012.500E+00"),
]


@pytest.fixture(scope="module")
def emu():
    e = Emulator.ls370(seed=11)
    e.device.strict_pacing = False  # fast: the pacing rule has its own tests
    e.listen_tcp("127.0.0.1", 0)
    yield e
    e.stop()


def raw(emu, line: str) -> str:
    """A second client, as socs' ``msg`` (l.230-235): the line with CR LF, one reply line. The emulator
    takes two clients, as the real TCP side would: wait until the last call's connection is let go."""
    wait_for(lambda: len(emu.tcp.clients) < emu.tcp.max_clients, 5, 0.01, what="a free client slot")
    with socket.create_connection(emu.tcp.address, timeout=2) as s:
        f = s.makefile("rwb")
        f.write(line.encode() + b"\r\n")
        f.flush()
        return f.readline().decode().strip()


def test_every_declaration_round_trips_and_a_second_client_reads_it(emu):
    assert {c[0] for c in CASES} == set(SETTINGS["370"])  # every declaration is exercised
    m = Model370(TcpTransport(*emu.tcp.address), timeout=2, pacing=Pacing(0, 0, 0))  # the emulator's rule is off
    m.connect()
    try:
        for name, target, values, query, reply in CASES:
            s = SETTINGS["370"][name]
            full = {**s.read(m, target), **{k: s.arg(k).check(v, target) for k, v in values.items()}}
            s.write(m, target, full)
            got = s.read(m, target)
            assert all(got[k] == pytest.approx(v) for k, v in values.items()), (name, got)
            if reply is not None:
                assert raw(emu, query) == reply, name
        assert raw(emu, "RDGRNG? 5").split(",") == ["1", "07", "09", "0", "0"]
        assert raw(emu, "*ESR?") == "0"  # nothing was refused (the power-on bit was read by the driver)
    finally:
        m.close()


def test_limits_are_the_declarations():
    s = SETTINGS["370"]
    with pytest.raises(ValueError, match="curve is an integer from 0 to 20"):
        s["input"].arg("curve").check(21, "5")
    with pytest.raises(ValueError, match="range is an integer from 0 to 8"):
        s["heater_range"].arg("range").check(9, "0")
    assert s["input"].targets(None) == [str(i) for i in range(1, 17)]  # no input A


@pytest.mark.slow
def test_control_api_sets_a_370_over_its_pty(tmp_path):
    """PUT through the control API on an appliance polling the 370's pty; a second client (the
    emulator's TCP side) reads the values; a setpoint in ohms and an out-of-range value are refused."""
    e = Emulator.ls370(seed=12)
    e.device.select_scan("5", 0)
    e.listen_tcp("127.0.0.1", 0)
    link = e.listen_pty(str(tmp_path / "ls370"))
    tok = secret_file(tmp_path / "token", TOKEN)
    app = start_appliance(
        f'[[instrument]]\nmodel = "370"\nname = "LS370X"\ntransport = "serial"\ndevice = "{link}"\n'
        f'timeout = 1.0\ninterval = 0.2\n[store]\npath = "{tmp_path / "k.db"}"\n'
        '[web]\nbind = "127.0.0.1"\nport = 0\n'
        f'[control]\nenabled = true\ntoken_file = "{tok}"\nmax_setpoint_kelvin = 2\n'
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def put(name, target, values):
        url = f"{app.base_url}/api/v1/control/LS370X/settings/{name}"
        status, _, body = call(url, "PUT", {"target": target, "values": values}, auth)
        return status, json.loads(body)

    try:
        wait_for(lambda: app.pollers[0].health.connected, 20, what="connected")
        assert put("setpoint", "0", {"value": 0.015})[0] == 200
        assert put("heater_range", "0", {"range": 3})[0] == 200
        assert put("pid", "0", {"p": 30, "i": 90, "d": 0})[0] == 200
        assert put("input", "5", {"dwell": 15})[0] == 200
        status, body = put("heater_range", "0", {"range": 9})
        assert status == 400 and "range is an integer from 0 to 8" in body["error"]["message"]
        status, body = put("input_range", "5", {"mode": 0, "excitation": 15})  # was a 409 from the instrument
        assert status == 400 and "1 to 12 under voltage excitation" in body["error"]["message"], body
        status, body = put("setpoint", "0", {"value": 5})
        assert status == 400 and "max_setpoint_kelvin" in body["error"]["message"]
        # 0.015 K would become 0.015 ohm: the kelvin cap cannot follow it there (red team fault 1)
        status, body = put("control_setup", "", {"units": 2})
        assert status == 400 and "max_setpoint_kelvin is 2 K" in body["error"]["message"], body
        assert raw(e, "CSET?").split(",")[2] == "1"
        e.device.control.units = 2  # the front panel: ohms
        status, body = put("setpoint", "0", {"value": 0.01})
        assert status == 400 and "controls in ohms" in body["error"]["message"]
        assert put("control_setup", "", {"units": 1})[0] == 200  # back to kelvin: 0.015 K is under the cap
        assert raw(e, "SETP?") == "+015.000E-03" and raw(e, "HTRRNG?") == "3"
        assert raw(e, "PID?") == "+00030.0,+00090.0,+0000.0" and raw(e, "INSET? 5").split(",")[1] == "015"
        audited = [ev["detail"] for ev in app.store.events(limit=200) if ev["kind"] == "control"]
        assert any("setpoint (SETP) output 0 set {'value': 0.015}" in d for d in audited), audited
    finally:
        app.stop()
        e.stop()


def test_a_curve_uploads_to_a_370_slot_and_the_curve_api_finds_its_users(emu):
    """A user curve in slot 10 (the 370's 1-20, formats 3 and 4); the curve API's in-use check
    asks INSET? of channels 1-16 only (the 370 has no input A)."""
    from appliance.curve_api import inputs_using
    from drivers.curves import Curve

    m = Model370(TcpTransport(*emu.tcp.address), timeout=2, pacing=Pacing(0, 0, 0))

    def connected() -> bool:
        # the emulator takes two clients, as the 370 does: another worker's poller still retrying a port
        # its own emulator left (the kernel hands port numbers out again) can hold a slot for a moment
        try:
            m.connect()
        except ConnectionLost:
            return False
        return True

    wait_for(connected, 20, 0.2, what="a client slot on the 370 emulator")
    try:
        curve = Curve("RX-TEST", "SN370", 4, 40.0, 1, [(2.5, 30.0), (3.0, 1.0), (3.5, 0.05)])
        m.upload_curve(10, curve)
        assert m.download_curve(10).points == curve.points
        assert raw(emu, "CRVHDR? 10") == "RX-TEST,SN370,4,+040.000,1"
        with pytest.raises(ValueError, match="not 1-20"):
            m.upload_curve(21, curve)
        emu.device.power_on()
        assert inputs_using(m, 2) == ["5"] and inputs_using(m, 1) == ["1", "2", "3"]
    finally:
        m.close()
