"""The 336's declared settings through the control API (authenticated, audited), each read back by Lake
Shore's own ``lakeshore.Model336`` on the emulator's second TCP connection; bad values answer 400 naming
the limit and change nothing."""

from __future__ import annotations

import json

import lakeshore
import pytest

from appliance import config as _config
from appliance.service import Appliance
from firmware_host.emulator import Emulator
from tests.conftest import run_with_timeout as within
from tests.conftest import wait_for
from tests.test_security import TOKEN, call, secret_file

pytestmark = pytest.mark.slow  # one appliance against the emulator for the module (about 2 s)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
M = lakeshore.Model336


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ls336settings")
    emu = Emulator.ls336(seed=41)
    host, port = emu.listen_tcp("127.0.0.1", 0)
    tok = secret_file(tmp / "token", TOKEN)
    cfg = (
        f'[[instrument]]\nmodel = "336"\nname = "LSA336A"\ntransport = "tcp"\nhost = "{host}"\nport = {port}\n'
        f"timeout = 1.0\ninterval = 0.5\n"
        f'[store]\npath = "{tmp / "kelvinpi.db"}"\ncommit_interval = 0.2\n'
        f'[web]\nbind = "127.0.0.1"\nport = 0\n'
        f'[control]\nenabled = true\ntoken_file = "{tok}"\nmax_setpoint_kelvin = 300\n'
    )
    app = Appliance(_config.parse(cfg))
    app.start()
    app.base_url = f"http://127.0.0.1:{app.web_address[1]}"
    wait_for(lambda: all(p.health.connected for p in app.pollers), 20, what="connected")
    vendor = within(lambda: lakeshore.Model336(ip_address=host, tcp_port=port, timeout=2))
    yield app, emu, vendor
    within(lambda: vendor.disconnect_tcp())
    app.stop()
    emu.stop()


def put(app, name, target, values):
    status, _, body = call(
        f"{app.base_url}/api/v1/control/LSA336A/settings/{name}", "PUT", {"target": target, "values": values}, AUTH
    )
    return status, json.loads(body)


# (setting, target, values, what lakeshore.Model336 reads back)
CASES = [
    ("heater_setup", "1", {"resistance": 2, "max_current": 0, "max_user_current": 0.8, "display": 2},
     lambda o: (lambda h: [2 if h["heater_resistance"] == M.HeaterResistance.HEATER_50_OHM else 1, 0, h["max_current"],
                          int(h["output_display_mode"])])(o.get_heater_setup(1))),
    ("output_mode", "1", {"mode": 1, "input": 3, "powerup": 0},
     lambda o: (lambda m: [int(m["mode"]), int(m["channel"]), int(m["powerup_enable"])])(o.get_heater_output_mode(1))),
    ("pid", "1", {"p": 45.5, "i": 12, "d": 3},
     lambda o: (lambda p: [p["gain"], p["integral"], p["derivative"]])(o.get_heater_pid(1))),
    ("setpoint", "1", {"value": 1.2}, lambda o: [o.get_control_setpoint(1)]),
    ("heater_range", "1", {"range": 2}, lambda o: [int(o.get_heater_range(1))]),
    ("manual_output", "2", {"value": 7.25}, lambda o: [o.get_manual_output(2)]),
    ("input_type", "D", {"sensor_type": 1, "autorange": 0, "range": 1, "compensation": 0, "units": 1},
     lambda o: (lambda s: [int(s.sensor_type), int(s.autorange_enable), int(s.input_range), int(s.compensation),
                           int(s.units)])(o.get_input_sensor("D"))),
    ("curve", "D", {"curve": 1}, lambda o: [o.get_input_curve("D")]),
    ("name", "B", {"name": "Second Stage"}, lambda o: [o.get_sensor_name("B")]),
]  # fmt: skip


def test_settings_round_trip_and_lake_shores_driver_reads_them(rig):
    app, emu, vendor = rig
    for name, target, values, read in CASES:
        status, body = put(app, name, target, values)
        assert status == 200, (name, body)
        got = within(lambda read=read: read(vendor))
        want = list(values.values())
        assert got == pytest.approx(want) if not isinstance(want[0], str) else got == want, (name, got)
    # the heater setting took effect in the emulated controller: output 1 now heats the still
    assert emu.device.outputs[1].range == 2 and emu.device.outputs[1].setp == pytest.approx(1.2)
    events = [e["detail"] for e in app.store.events(limit=1000) if e["kind"] == "control"]
    assert any("heater_range" in e and "applied" in e for e in events), events


@pytest.mark.parametrize(
    ("name", "target", "values", "message"),
    [
        ("heater_range", "1", {"range": 4}, "range is an integer from 0 to 3"),
        ("heater_range", "3", {"range": 2}, "range is an integer from 0 to 1"),
        ("pid", "2", {"p": 0}, "p is a number from 0.1 to 1000"),
        ("output_mode", "9", {"mode": 1}, "needs a target"),
        ("setpoint", "1", {"value": 301}, "300"),
        ("name", "A", {"name": "x" * 16}, "at most 15"),
    ],
)
def test_bad_values_are_refused_naming_the_limit(rig, name, target, values, message):
    app, emu, _ = rig
    before = (emu.device.outputs[1].range, emu.device.outputs[2].p, emu.device.ins["A"].name)
    status, body = put(app, name, target, values)
    assert status == 400 and message in body["error"]["message"], body
    assert (emu.device.outputs[1].range, emu.device.outputs[2].p, emu.device.ins["A"].name) == before


def post_setpoint(app, body):
    status, _, text = call(f"{app.base_url}/api/v1/control/LSA336A/setpoint", "POST", body, AUTH)
    return status, json.loads(text)


def test_setpoint_on_an_output_with_no_control_input(rig):
    """Red team 336 item 3: the factory OUTMODE 0,0,0 leaves an output without an input; SETP still works
    there (the emulator, like the instrument, takes it), so the appliance must not refuse it as input ''."""
    app, emu, vendor = rig
    assert emu.device.outputs[3].input == 0 and emu.device.outputs[2].input == 0  # factory state
    status, body = put(app, "setpoint", "3", {"value": 1.5})
    assert status == 200, body
    assert vendor.get_control_setpoint(3) == pytest.approx(1.5)
    status, body = post_setpoint(app, {"output": 2, "kelvin": 2.5})
    assert status == 200 and body["setpoint"] == pytest.approx(2.5), body
    assert vendor.get_control_setpoint(2) == pytest.approx(2.5)


def test_post_setpoint_uses_the_336s_own_outputs(rig):
    app, emu, _ = rig
    status, body = post_setpoint(app, {"output": 0, "kelvin": 1.0})  # the 372's sample heater: not a 336 output
    message = body["error"]["message"]
    assert status == 400 and "output must be 1 (heater 1), 2 (heater 2), 3 (analog 3) or 4 (analog 4)" in message
    assert "got 0" in message and "sample heater" not in message
    status, body = post_setpoint(app, {"kelvin": 1.75})  # the default is the model's first output
    assert status == 200 and body["output"] == 1, body
    assert emu.device.outputs[1].setp == pytest.approx(1.75)


def test_setpoint_from_a_celsius_input_is_refused_naming_celsius(rig):
    app, emu, _ = rig
    assert put(app, "output_mode", "4", {"mode": 1, "input": 2, "powerup": 0})[0] == 200  # output 4 from B
    units = {"sensor_type": 1, "autorange": 0, "range": 0, "compensation": 0}
    assert put(app, "input_type", "B", {**units, "units": 2})[0] == 200
    try:
        before = emu.device.outputs[4].setp
        status, body = put(app, "setpoint", "4", {"value": 1.0})
        message = body["error"]["message"]
        assert status == 400 and "reads in Celsius" in message and "ohms" not in message, body
        assert emu.device.outputs[4].setp == before
    finally:
        assert put(app, "input_type", "B", {**units, "units": 1})[0] == 200


def test_settings_target_d1_is_d(rig):
    app, emu, vendor = rig
    status, body = put(app, "name", "D1", {"name": "Pot via D1"})
    assert status == 200, body
    assert vendor.get_sensor_name("D") == "Pot via D1" and emu.device.ins["D"].name == "Pot via D1"
