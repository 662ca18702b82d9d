"""Declared instrument settings (issue 22): each set through the control API, read back by Lake Shore's
own driver as the value set; limits answer 400 naming them, a setting the instrument does not take 409."""

from __future__ import annotations

import json
import subprocess
import sys

import lakeshore
import pytest

from appliance import config as _config
from appliance.service import Appliance
from appliance.settings import SETTINGS
from tests.conftest import appliance_config, wait_for
from tests.conftest import run_with_timeout as within
from tests.test_security import TOKEN, call, secret_file

pytestmark = pytest.mark.slow  # each test runs an appliance against the emulators (1-2 s)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start(tmp_path, emu372, emu240, control: str) -> Appliance:
    a = Appliance(_config.parse(appliance_config(tmp_path, emu372, emu240, extra=control)))
    a.start()
    a.base_url = f"http://127.0.0.1:{a.web_address[1]}"
    return a


@pytest.fixture
def app(tmp_path, emu372, emu240):
    tok = secret_file(tmp_path / "token", TOKEN)
    a = start(tmp_path, emu372, emu240, f'\n[control]\nenabled = true\ntoken_file = "{tok}"\nmax_setpoint_kelvin = 2\n')
    a.token_file = tok
    wait_for(lambda: all(p.health.connected for p in a.pollers), 20, what="connected")
    yield a
    a.stop()


def put(app, node, name, target, values):
    status, _, body = call(
        f"{app.base_url}/api/v1/control/{node}/settings/{name}", "PUT", {"target": target, "values": values}, AUTH
    )
    return status, json.loads(body)


def message(body: dict) -> str:
    return body["error"]["message"]


def control_events(app) -> list[str]:
    return [e["detail"] for e in reversed(app.store.events(limit=1000)) if e["kind"] == "control"]


def pair(app, what: str) -> list[str]:
    """The two audit events of the request whose first event names ``what``."""
    events = control_events(app)
    first = next(e for e in events if "requested by 127.0.0.1" in e and what in e)
    rid = first.split("]")[0] + "]"
    return [e for e in events if e.startswith(rid)]


@pytest.fixture
def oracle372(app, emu372):
    """Lake Shore's own driver on the emulator's second TCP socket (a 372 takes two)."""
    host, port = emu372.tcp.address
    o = within(lambda: lakeshore.Model372(baud_rate=None, ip_address=host, tcp_port=port, timeout=2))
    yield o
    within(lambda: o.disconnect_tcp())


# (setting, target, values set, what Lake Shore's driver reads back as those values)
CASES_372 = [
    (
        "input",
        "5",
        {"enabled": 1, "dwell": 17, "pause": 9, "curve": 21, "tempco": 2},
        lambda o: (
            lambda s: [int(s.enable), s.dwell_time, s.pause_time, s.curve_number, int(s.temperature_coefficient)]
        )(o.get_input_channel_parameters(5)),
    ),
    (
        "input_type",
        "6",
        {"mode": 1, "excitation": 9, "autorange": 0, "range": 14, "cs_shunt": 0, "units": 2},
        lambda o: (
            lambda s: [
                int(s.mode),
                int(s.excitation_range),
                int(s.auto_range),
                int(s.resistance_range),
                int(s.current_source_shunted),
                int(s.units),
            ]
        )(o.get_input_setup_parameters(6)),
    ),
    ("name", "7", {"name": "Cold finger 7"}, lambda o: [o.query("INNAME? 7").strip()]),
    (
        "scanner",
        None,
        {"channel": 3, "autoscan": 0},
        lambda o: (lambda s: [int(s["input_channel"]), int(s["status"])])(o.get_scanner_status()),
    ),
    (
        "output_mode",
        "0",
        {"mode": 5, "input": "5", "powerup": 1, "polarity": 0, "filter": 1, "delay": 7},
        lambda o: (
            lambda s: [
                int(s.output_mode),
                str(s.input_channel.value if hasattr(s.input_channel, "value") else s.input_channel),
                int(s.powerup_enable),
                int(s.polarity),
                int(s.reading_filter),
                s.delay,
            ]
        )(o.get_heater_output_settings(0)),
    ),
    (
        "heater_setup",
        "0",
        {"resistance": 95.5, "max_current": 0, "max_user_current": 0.0, "display": 1},
        lambda o: [
            o.get_sample_heater_setup()["resistance"],
            int(o.query("HTRSET? 0").split(",")[1]),
            float(o.query("HTRSET? 0").split(",")[2]),
            int(o.get_sample_heater_setup()["units"]),
        ],
    ),
    ("heater_range", "0", {"range": 4}, lambda o: [int(o.get_heater_output_range(0))]),
    ("setpoint", "0", {"value": 0.0375}, lambda o: [float(o.query("SETP? 0"))]),
    (
        "pid",
        "0",
        {"p": 42.5, "i": 120.0, "d": 3.0},
        lambda o: (lambda p: [p["gain"], p["integral"], p["derivative"]])(o.get_heater_pid(0)),
    ),
    ("manual_output", "0", {"value": 12.5}, lambda o: [o.get_manual_output(0)]),
    (
        "ramp",
        "0",
        {"enabled": 1, "rate": 0.25},
        lambda o: (lambda r: [int(r["ramp_enable"]), r["rate_value"]])(o.get_setpoint_ramp_parameter(0)),
    ),
]


@pytest.mark.parametrize("name,target,values,vendor", CASES_372, ids=[c[0] for c in CASES_372])
def test_372_setting_round_trips_and_lake_shores_driver_reads_it(app, oracle372, name, target, values, vendor):
    status, body = put(app, "LSA23JD", name, target, values)
    assert status == 200, body
    for k, v in values.items():
        assert str(body["values"][k]).upper() == str(v).upper() or body["values"][k] == pytest.approx(v), (k, body)
    got = within(lambda: vendor(oracle372))
    assert (
        got == pytest.approx(list(values.values()))
        if all(isinstance(v, (int, float)) for v in values.values())
        else [str(x) for x in got] == [str(v) for v in values.values()]
    )
    # read back through the API too, and the request is on record: asked (with the old value), then applied
    q = f"?target={target}" if target is not None else ""
    status, _, raw = call(f"{app.base_url}/api/v1/control/LSA23JD/settings/{name}{q}", headers=AUTH)
    assert status == 200 and json.loads(raw)["values"].keys() >= values.keys()
    events = pair(app, f"{name} (")
    assert len(events) == 2 and "applied" in events[1], events
    assert app.pollers[0].snapshot_due is False or True  # forced; taken by the poller's next cycle


def test_372_settings_force_a_snapshot(app):
    before = len(app.store.snapshots("LSA23JD"))
    assert put(app, "LSA23JD", "input", "5", {"dwell": 33})[0] == 200
    snaps = wait_for(
        lambda: (lambda s: s if len(s) > before else None)(app.store.snapshots("LSA23JD")), 20, what="a new snapshot"
    )
    assert snaps[-1][1]["channels"]["5"]["inset"]["dwell"] == 33


def test_240_settings_round_trip_and_lake_shores_driver_reads_them(app, emu240, monkeypatch):
    status, body = put(
        app,
        "LSA24AZ",
        "input_type",
        "2",
        {"sensor": 3, "autorange": 0, "range": 5, "current_reversal": 1, "units": 3, "enabled": 1},
    )
    assert status == 200, body
    status, body = put(app, "LSA24AZ", "name", "1", {"name": "Pulse tube 1"})
    assert status == 200, body
    assert len(pair(app, "name (INNAME) input 1")) == 2
    app.stop()  # the 240's one USB port: Lake Shore's driver reads it once the appliance let go
    from types import SimpleNamespace

    import lakeshore.generic_instrument as generic

    monkeypatch.setattr(
        generic,
        "comports",
        lambda: [SimpleNamespace(device=emu240.pty.link, vid=0x1FB9, pid=0x0205, serial_number="LSA24AZ")],
    )
    oracle = within(lambda: lakeshore.Model240(com_port=emu240.pty.link, timeout=1))
    try:
        p = within(lambda: oracle.get_input_parameter(2))
        assert (int(p.sensor_type), int(p.input_range), int(p.temperature_unit)) == (3, 5, 3)
        # its flags are bool("0") (always True), so those are read from its raw reply
        assert [int(f) for f in within(lambda: oracle.query("INTYPE? 2")).split(",")] == [3, 0, 5, 1, 3, 1]
        assert within(lambda: oracle.get_sensor_name(1)).strip() == "Pulse tube 1"
    finally:
        within(lambda: oracle.disconnect_usb())


def test_out_of_range_is_400_naming_the_limit_and_nothing_is_sent(app, emu372):
    before = emu372.device.channels["5"].dwell
    status, body = put(app, "LSA23JD", "input", "5", {"dwell": 201})
    assert status == 400 and "dwell is an integer from 1 to 200" in message(body), body
    status, body = put(app, "LSA23JD", "heater_range", "1", {"range": 2})
    assert status == 400 and "range is an integer from 0 to 1" in message(body), body
    status, body = put(app, "LSA23JD", "setpoint", "0", {"value": 5})
    assert status == 400 and "control.max_setpoint_kelvin" in message(body), body
    status, body = put(app, "LSA23JD", "name", "5", {"name": "a name of twenty chars"})
    assert status == 400 and "at most 15" in message(body), body
    status, body = put(app, "LSA23JD", "input", None, {"dwell": 5})
    assert status == 400 and "needs a target" in message(body), body
    status, body = put(app, "LSA23JD", "input", "5", {"dwel": 5})
    assert status == 400 and "no field 'dwel'" in message(body), body
    status, body = put(app, "LSA24AZ", "pid", "0", {"p": 1})
    assert status == 404 and "Model 240 has no setting 'pid'" in message(body), body
    assert emu372.device.channels["5"].dwell == before


def test_a_setting_the_instrument_does_not_take_is_409_naming_it(app, emu240):
    # the 240 is silent when it ignores a command: a diode input has no range 3 (240 manual p.47)
    status, body = put(app, "LSA24AZ", "input_type", "1", {"sensor": 1, "autorange": 0, "range": 3})
    assert status == 409 and "did not take range" in message(body), body
    events = pair(app, "input_type (INTYPE) input 1")
    # the write happened: "did not take", not "refused"; the read value is the last read
    assert len(events) == 2 and "did not take" in events[1] and "refused" not in events[1], events
    assert app.control.last_read[("LSA24AZ", "input_type", "1")]["range"] == 0
    # the 372 flags it in ESR: the control input A is current excitation only
    status, body = put(app, "LSA23JD", "input_type", "A", {"mode": 0})
    assert status == 409 and "refused mode" in message(body), body


def test_settings_need_control_and_the_token(tmp_path, emu372, emu240):
    a = start(tmp_path, emu372, emu240, "")
    try:
        status, _, body = call(
            f"{a.base_url}/api/v1/control/LSA23JD/settings/input", "PUT", {"target": "5", "values": {"dwell": 9}}, AUTH
        )
        assert status == 403 and "disabled" in body
    finally:
        a.stop()


def test_the_403_names_the_setting_not_the_token_files_path(tmp_path, emu372, emu240):
    tok = secret_file(tmp_path / "token", TOKEN, mode=0o644)
    a = start(tmp_path, emu372, emu240, f'\n[control]\nenabled = true\ntoken_file = "{tok}"\n')
    try:
        status, _, body = call(f"{a.base_url}/api/v1/control/LSA23JD/setpoint", "POST", {"kelvin": 0.05}, AUTH)
        assert status == 403 and "control.token_file" in body, body
        assert str(tok) not in body and str(tmp_path) not in body and "0644" not in body, body
    finally:
        a.stop()


def test_setpoint_is_audited_before_and_after(app):
    status, _, body = call(f"{app.base_url}/api/v1/control/LSA23JD/setpoint", "POST", {"kelvin": 0.021}, AUTH)
    assert status == 200, body
    events = pair(app, "setpoint output 0 to 0.021 K")
    assert len(events) == 2 and "requested by 127.0.0.1" in events[0] and "applied" in events[1], events


def test_openapi_and_cli_come_from_the_declarations(app, tmp_path):
    status, _, raw = call(f"{app.base_url}/api/v1/openapi.json")
    paths = json.loads(raw)["paths"]
    op = paths["/api/v1/control/{node}/settings/{name}"]["put"]
    shapes = {
        sh["title"]: sh["properties"]
        for sh in op["requestBody"]["content"]["application/json"]["schema"]["properties"]["values"]["anyOf"]
    }
    names = next(p for p in op["parameters"] if p["name"] == "name")
    for model, declared in SETTINGS.items():
        for name, s in declared.items():
            assert name in names["schema"]["enum"] and s.command in names["description"]
            assert set(shapes[f"{name} (Model {model})"]) == {a.name for a in s.args}
    assert shapes["input (Model 372)"]["dwell"]["maximum"] == 200
    assert "dwell is an integer from 1 to 200" in names["description"]

    def cli(*words):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance.cli",
                "setting",
                "--url",
                app.base_url,
                "--node",
                "LSA23JD",
                "--token-file",
                str(app.token_file),
                *words,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = cli("set", "pid", "1", "p=7.5", "i=30")
    assert r.returncode == 0, r.stderr
    r = cli("get", "pid", "1")
    assert r.returncode == 0 and "p=7.5" in r.stdout and "i=30" in r.stdout, r.stdout
    r = cli("set", "pid", "1", "p=1001")
    assert r.returncode == 1 and "p is a number from 0 to 1000" in r.stderr, r.stderr
    r = cli("list")
    assert r.returncode == 0 and "heater_setup" in r.stdout and "HTRSET" in r.stdout, r.stdout


def test_heater_settings_force_a_snapshot_that_names_them(app):
    before = len(app.store.snapshots("LSA23JD"))
    assert put(app, "LSA23JD", "pid", "1", {"p": 61.5})[0] == 200
    snaps = wait_for(
        lambda: (lambda s: s if len(s) > before else None)(app.store.snapshots("LSA23JD")), 20, what="a new snapshot"
    )
    assert snaps[-1][1]["outputs"]["1"]["pid"]["p"] == 61.5


def test_every_372_declaration_round_trips_over_a_pty(emu372_pty):
    """The same declarations over the USB serial framing (a pty), on the driver the poller uses; Lake Shore's
    own driver reads each value back on the emulator's TCP port (the API over a pty is tests/test_settings_visa.py's
    ASRL resource)."""
    from appliance.settings import SETTINGS
    from drivers.ls372 import Model372

    m = Model372.serial(emu372_pty.pty.link, timeout=2)
    m.connect()
    host, port = emu372_pty.tcp.address
    oracle = within(lambda: lakeshore.Model372(baud_rate=None, ip_address=host, tcp_port=port, timeout=2))
    try:
        for name, target, values, vendor in CASES_372:
            s = SETTINGS["372"][name]
            t = target or ""
            full = {**s.read(m, t), **{k: s.arg(k).check(v, t) for k, v in values.items()}}
            s.write(m, t, full)
            got = s.read(m, t)
            assert all(str(got[k]) == str(full[k]) or got[k] == pytest.approx(full[k]) for k in values), (name, got)
            theirs = within(lambda vendor=vendor: vendor(oracle))
            assert (
                theirs == pytest.approx(list(values.values()))
                if all(isinstance(v, (int, float)) for v in values.values())
                else [str(x) for x in theirs] == [str(v) for v in values.values()]
            ), (name, theirs)
    finally:
        within(lambda: oracle.disconnect_tcp())
        m.close()


def test_the_settings_view_shows_inputs_outputs_and_who_changed_what_without_a_token(app):
    assert put(app, "LSA23JD", "input", "5", {"dwell": 21})[0] == 200
    assert put(app, "LSA23JD", "heater_range", "0", {"range": 3})[0] == 200

    def view():
        status, _, raw = call(f"{app.base_url}/api/v1/instruments/LSA23JD/settings")  # no token
        v = json.loads(raw)
        ok = status == 200 and v["inputs"].get("5", {}).get("inset", {}).get("dwell") == 21
        return v if ok and v["outputs"].get("0", {}).get("range") == 3 else None

    v = wait_for(view, 20, what="the view showing the new settings")
    assert v["inputs"]["5"]["curve"]["name"] == "RX-102A-CAL"  # the header of the curve INSET names
    assert any("requested by 127.0.0.1: input (INSET) input 5" in c["detail"] for c in v["changes"])
    assert any("applied: heater_range (RANGE) output 0" in c["detail"] for c in v["changes"])
    status, headers, page = call(f"{app.base_url}/instruments/LSA23JD/settings")
    assert status == 200 and "Heater outputs" in page and "requested by 127.0.0.1" in page
    assert "<script" not in page
    status, _, raw = call(f"{app.base_url}/api/v1/instruments/nope/settings")
    assert status == 404


def test_the_request_event_names_the_value_as_last_read(app):
    wait_for(lambda: app.store.snapshots("LSA23JD"), 20, what="the first snapshot")
    assert put(app, "LSA23JD", "pid", "0", {"p": 33.0})[0] == 200
    first = pair(app, "pid (PID) output 0")[0]
    was = first.split("(was ")[1]
    assert "'p': 10.0" in was and "'i': 20.0" in was, first  # from the snapshot taken at connect
    assert put(app, "LSA23JD", "pid", "0", {"p": 34.0})[0] == 200
    events = [e for e in control_events(app) if "requested by" in e and "pid (PID) output 0" in e]
    assert "'p': 33.0" in events[-1], events


def test_a_value_finer_than_the_instrument_keeps_is_applied_at_its_resolution(app, emu372):
    """Issue 22 red team, finding 5: PID P 12.3456789 took (the 372 keeps 12.3) but answered 409 "refused"."""
    status, body = put(app, "LSA23JD", "pid", "0", {"p": 12.3456789, "i": 45.67, "d": 2.04})
    assert status == 200, body
    assert body["values"]["p"] == 12.3 and body["values"]["i"] == 45.7, body
    events = pair(app, "pid (PID) output 0")
    assert len(events) == 2 and "applied" in events[1], events
    status, body = put(app, "LSA23JD", "manual_output", "0", {"value": 12.34567})
    assert status == 200 and body["values"]["value"] == 12.346, body


def test_a_huge_json_integer_is_400_naming_the_field(app, emu372):
    """Issue 22 red team, finding 6: 10**400 made math.isfinite raise OverflowError, a 500."""
    huge = 10**400
    status, body = put(app, "LSA23JD", "pid", "0", {"p": huge})
    assert status == 400 and "p is a number from 0 to 1000" in message(body), body
    status, body = put(app, "LSA23JD", "input", "5", {"dwell": huge})
    assert status == 400 and "dwell is an integer" in message(body), body
    status, _, text = call(f"{app.base_url}/api/v1/control/LSA23JD/setpoint", "POST", {"kelvin": huge}, AUTH)
    assert status == 400 and "kelvin must be a number" in text, text
    assert emu372.device.outputs[0].p == 10.0


def test_the_warm_up_heater_and_the_ramp_take_what_the_manual_states(app, emu372, oracle372):
    """372 manual p.163 (HTRSET: output 1 takes a resistance code 1|2, max current 0-2, a user current up to
    0.63 A) and p.173 (RAMP: outputs 0 and 1, a rate of 0 or 0.001-100 K/min)."""
    warm = {"resistance": 2, "max_current": 0, "max_user_current": 0.5, "display": 2}
    status, body = put(app, "LSA23JD", "heater_setup", "1", warm)
    assert status == 200 and body["values"] == warm, body
    w = within(lambda: oracle372.get_warmup_heater_setup())  # Lake Shore's driver reads the codes back
    assert (int(w["resistance"]), w["max_current"], int(w["units"])) == (2, 0.5, 2), w
    for target, values, limit in (
        ("1", {"resistance": 25}, "resistance is a number from 1 to 2"),
        ("1", {"max_current": 3}, "max_current is an integer from 0 to 2"),
        ("1", {"max_user_current": 0.7}, "max_user_current is a number from 0 to 0.63"),
        ("0", {"max_user_current": 2.5}, "max_user_current is a number from 0 to 2 "),
        ("0", {"resistance": 2001}, "resistance is a number from 1 to 2000"),
    ):
        status, body = put(app, "LSA23JD", "heater_setup", target, values)
        assert status == 400 and limit in message(body) and "p.163" in message(body), (values, body)
    status, body = put(app, "LSA23JD", "ramp", "2", {"rate": 1})
    assert status == 400 and "one of 0, 1" in message(body), body
    before = emu372.device.ramps[0]
    status, body = put(app, "LSA23JD", "ramp", "0", {"enabled": 1, "rate": 0.0005})
    assert status == 409 and "refused" in message(body) and "rate" in message(body), body
    assert emu372.device.ramps[0] == before
    events = pair(app, "ramp (RAMP) output 0")
    assert len(events) == 2 and "refused" in events[1], events


@pytest.mark.parametrize("when", ["after the write", "before its acknowledgement"])
def test_a_setting_that_reached_the_instrument_is_audited_failed_part_way(app, emu372, monkeypatch, when):
    """Red team 2122, fault 5: the link went right after the INSET write (or before its *ESR? answer).
    On main the audit said "failed" though the instrument then read dwell 35, and the next request's
    "was" stayed the old value. Now "failed part way", and the "was" is what the instrument holds."""
    if when == "after the write":  # the write and its *ESR? answer went through; the read-back never comes
        inst = app.pollers[0].instrument
        orig = inst.set_input_setup

        def set_input_setup(ch, setup):
            orig(ch, setup)
            emu372.control("drop")

        monkeypatch.setattr(inst, "set_input_setup", set_input_setup)
        said = "written, not read back"
    else:  # the emulator applies INSET and drops the link before answering the *ESR? of the same line
        device = emu372.device
        orig = device.configure_input

        def configure_input(*v):
            orig(*v)
            emu372.control("drop")

        monkeypatch.setattr(device, "configure_input", configure_input)
        said = "sent, not acknowledged"
    status, body = put(app, "LSA23JD", "input", "5", {"dwell": 35})
    assert status == 503 and said in message(body), body
    monkeypatch.undo()
    ended = [e for e in control_events(app) if "{'dwell': 35}" in e and "requested by" not in e]
    assert ended and "failed part way" in ended[-1] and said in ended[-1], ended
    poller = app.pollers[0]
    wait_for(lambda: poller.health.connected, 20, what="reconnected")
    assert emu372.device.channels["5"].dwell == 35  # it did reach the instrument

    def snapshotted() -> object:
        snaps = app.store.snapshots("LSA23JD")
        return snaps and (snaps[-1][1].get("channels", {}).get("5", {}).get("inset") or {}).get("dwell") == 35

    wait_for(snapshotted, 20, what="the snapshot after the change")
    status, body = put(app, "LSA23JD", "input", "5", {"dwell": 36})
    assert status == 200, body
    requested = [e for e in control_events(app) if "{'dwell': 36}" in e and "requested by" in e]
    assert requested and "'dwell': 35" in requested[-1], requested  # the "was": what the instrument held
