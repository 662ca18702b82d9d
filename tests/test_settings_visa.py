"""The declared settings and curve uploads (issue 22) over VISA too.

The appliance's instrument is configured with ``transport = "visa"`` (pyvisa-py): for the 372 a
serial resource on the emulator's pty, as its USB port is, and a TCPIP SOCKET resource, as its
Ethernet port is; for the 240 a serial resource on its pty (its one port, USB). Each setting and
each curve is set through the control API and read back by Lake Shore's own ``lakeshore`` package
as the value set: on the 372 emulator's other TCP link, and on the 240's port once the appliance
let go of it. A link dropped at each step of an upload is tried over the TCPIP SOCKET resource.

One emulator and one appliance serve every case of a transport (``rig``, module scope): the
cases touch different settings, targets and curve slots, and each transport has its own
emulator, so every value is written onto a default it differs from.
"""

from __future__ import annotations

from types import SimpleNamespace

import lakeshore
import pytest

from appliance import config as _config
from appliance.service import Appliance
from drivers.base import Pacing
from drivers.curves import write_340
from firmware_host.emulator import Emulator
from tests.conftest import run_with_timeout as within
from tests.conftest import wait_for
from tests.test_curve_workflow import (
    DT,
    RX,
    drop_the_link_during,
    fast,
    put_curve,
    request_events,
    settled_after_the_drop,
    slow_upload_outlives_its_answer,
    small,
)
from tests.test_security import TOKEN, call, secret_file
from tests.test_settings import AUTH, CASES_372, pair, put

pytestmark = pytest.mark.slow  # an appliance against the emulator over pyvisa (a few seconds per transport)


def visa_config(tmp_path, model: str, name: str, resource: str, token) -> str:
    heater = "read_heater = true\n" if model == "372" else ""
    return (
        f'[[instrument]]\nmodel = "{model}"\nname = "{name}"\ntransport = "visa"\nresource = "{resource}"\n'
        f"timeout = 1.0\ninterval = 0.2\n{heater}"
        "[polling]\nbackoff_initial = 0.2\nbackoff_max = 1.0\n"
        f'[store]\npath = "{tmp_path / "kelvinpi.db"}"\ncommit_interval = 0.2\n'
        '[web]\nbind = "127.0.0.1"\nport = 0\n'
        f'[control]\nenabled = true\ntoken_file = "{token}"\nmax_setpoint_kelvin = 2\n'
    )


def start(tmp_path, model: str, name: str, resource: str) -> Appliance:
    tok = secret_file(tmp_path / "token", TOKEN)
    a = Appliance(_config.parse(visa_config(tmp_path, model, name, resource, tok)))
    a.start()
    a.base_url = f"http://127.0.0.1:{a.web_address[1]}"
    return a


@pytest.fixture(scope="module", params=["ASRL", "TCPIP"])
def rig(request, tmp_path_factory):
    """A fresh 372 emulator, the appliance's 372 on it over VISA, and the vendor's driver on its TCP port."""
    tmp = tmp_path_factory.mktemp(f"visa-{request.param}")
    emu = Emulator.ls372(seed=2)
    host, port = emu.listen_tcp("127.0.0.1", 0)
    emu.listen_pty(str(tmp / "ls372"))
    resource = f"ASRL{emu.pty.link}::INSTR" if request.param == "ASRL" else f"TCPIP::{host}::{port}::SOCKET"
    a = start(tmp, "372", "LSA23JD", resource)
    oracle = None
    try:
        wait_for(lambda: a.pollers[0].health.connected, 20, what=f"the 372 over VISA {resource}")
        assert a.pollers[0].health.transport == "visa"
        # the 100 ms per message a real 372's USB port needs (drivers.ls372.USB_PACING), which the emulator
        # does not (as test_curve_workflow.fast): with it the snapshot each change forces took seconds on ASRL
        a.pollers[0].instrument.pacing = Pacing(0.0, 0.0, 0.0)
        oracle = within(lambda: lakeshore.Model372(baud_rate=None, ip_address=host, tcp_port=port, timeout=2))
        yield SimpleNamespace(app=a, emu=emu, oracle=oracle, transport=request.param)
    finally:
        if oracle is not None:
            within(lambda: oracle.disconnect_tcp())
        a.stop()
        emu.stop()


@pytest.mark.parametrize("name,target,values,vendor", CASES_372, ids=[c[0] for c in CASES_372])
def test_372_setting_round_trips_over_visa_and_lake_shores_driver_reads_it(rig, name, target, values, vendor):
    app = rig.app
    before = within(lambda: vendor(rig.oracle))
    assert (
        before != pytest.approx(list(values.values()))
        if all(isinstance(v, (int, float)) for v in values.values())
        else [str(x) for x in before] != [str(v) for v in values.values()]
    ), (name, "already set", before)
    status, body = put(app, "LSA23JD", name, target, values)
    assert status == 200, body
    got = within(lambda: vendor(rig.oracle))
    assert (
        got == pytest.approx(list(values.values()))
        if all(isinstance(v, (int, float)) for v in values.values())
        else [str(x) for x in got] == [str(v) for v in values.values()]
    ), (name, got)
    q = f"?target={target}" if target is not None else ""
    status, _, raw = call(f"{app.base_url}/api/v1/control/LSA23JD/settings/{name}{q}", headers=AUTH)
    assert status == 200, raw
    events = pair(app, f"{name} (")
    assert len(events) == 2 and "applied" in events[1], events


def test_372_curve_upload_over_visa_is_read_back_by_lake_shores_driver(rig, monkeypatch):
    fast(rig.app, monkeypatch)
    curve = small(RX, 20, "KP-VISA20")
    status, body = put_curve(rig.app, 30, curve)
    assert status == 200 and body["points"] == 20, body
    header = within(lambda: rig.oracle.get_curve_header(30))
    assert (header.curve_name, header.serial_number) == ("KP-VISA20", curve.serial)
    for i in (1, 7, 20):
        got = within(lambda i=i: rig.oracle.get_curve_data_point(30, i))
        assert got == pytest.approx(curve.points[i - 1], rel=1e-5), (i, got)
    assert within(lambda: rig.oracle.get_curve_data_point(30, 21)) == (0.0, 0.0)  # nothing past the end
    events = request_events(rig.app, "curve 30 upload: KP-VISA20")
    assert len(events) == 2 and "applied" in events[1], events


@pytest.mark.parametrize("rig", ["TCPIP"], indirect=True)
@pytest.mark.parametrize("step", ["before the delete", "after the header", "after point 5"])
def test_a_link_drop_during_an_upload_over_visa_leaves_new_old_or_incomplete_and_two_events(rig, monkeypatch, step):
    """As tests/test_curve_workflow.py's drop test, the appliance's link a VISA TCPIP SOCKET resource."""
    app, emu = rig.app, rig.emu
    fast(app, monkeypatch)
    assert put_curve(app, 23, small(RX, 12, "KP-OLD12"))[0] == 200
    fired = drop_the_link_during(emu, monkeypatch, step)
    status, body = put_curve(app, 23, small(RX, 30, "KP-NEW30"))
    assert status == 503 and fired, body
    assert "curve 23" in body["error"]["message"], body
    events = request_events(app, "curve 23 upload: KP-NEW30")
    assert len(events) == 2 and "failed part way" in events[1], events
    settled_after_the_drop(app, emu, "the slot settled after the VISA link came back")
    wait_for(lambda: app.pollers[0].health.connected, 20, what="reconnected over VISA")


def test_240_settings_and_curve_round_trip_over_visa_and_lake_shores_driver_reads_them(tmp_path, monkeypatch):
    """The 240's input setup, its curve (curve N is input N's: the 240 has no INCRV) and name, over an ASRL resource."""
    emu = Emulator.ls240(channels=2, seed=3)
    emu.listen_pty(str(tmp_path / "ls240"))
    app = start(tmp_path, "240", "LSA24AZ", f"ASRL{emu.pty.link}::INSTR")
    try:
        wait_for(lambda: app.pollers[0].health.connected, 20, what="the 240 over VISA")
        assert app.pollers[0].health.transport == "visa"
        intype = {"sensor": 3, "autorange": 0, "range": 5, "current_reversal": 1, "units": 3, "enabled": 1}
        assert emu.device.inputs[2].sensor != 3  # written onto a default it differs from
        status, body = put(app, "LSA24AZ", "input_type", "2", intype)
        assert status == 200 and body["values"] == intype, body
        status, body = put(app, "LSA24AZ", "name", "1", {"name": "Pulse tube 1"})
        assert status == 200 and body["values"] == {"name": "Pulse tube 1"}, body
        curve = small(DT, 20, "KP-DT20")
        status, _, text = call(
            f"{app.base_url}/api/v1/control/LSA24AZ/curves/2", "PUT", {"text": write_340(curve), "force": True}, AUTH
        )
        assert status == 200, text
        assert len(pair(app, "input_type (INTYPE) input 2")) == 2
        assert len(pair(app, "name (INNAME) input 1")) == 2
        upload = request_events(app, "curve 2 upload: KP-DT20")
        assert len(upload) == 2 and "applied" in upload[1], upload
    finally:
        app.stop()  # the 240's one USB port: Lake Shore's driver reads it once the appliance let go
    import lakeshore.generic_instrument as generic

    monkeypatch.setattr(
        generic,
        "comports",
        lambda: [SimpleNamespace(device=emu.pty.link, vid=0x1FB9, pid=0x0205, serial_number="LSA24AZ")],
    )
    try:
        oracle = within(lambda: lakeshore.Model240(com_port=emu.pty.link, timeout=1))
        try:
            p = within(lambda: oracle.get_input_parameter(2))
            assert (int(p.sensor_type), int(p.input_range), int(p.temperature_unit)) == (3, 5, 3)
            # its flags are bool("0") (always True), so those are read from its raw reply
            assert [int(f) for f in within(lambda: oracle.query("INTYPE? 2")).split(",")] == [3, 0, 5, 1, 3, 1]
            assert within(lambda: oracle.get_sensor_name(1)).strip() == "Pulse tube 1"
            header = within(lambda: oracle.get_curve_header(2))
            assert (header.curve_name, header.serial_number) == ("KP-DT20", curve.serial)
            for i in (1, 20):
                u, t = (float(x) for x in within(lambda i=i: oracle.get_curve_data_point(2, i)).split(","))
                assert (u, t) == pytest.approx(curve.points[i - 1], rel=1e-5), (i, u, t)
        finally:
            within(lambda: oracle.disconnect_usb())
    finally:
        emu.stop()


@pytest.mark.parametrize("rig", ["TCPIP"], indirect=True)
def test_a_slow_upload_over_visa_that_outlives_its_answer_still_records_its_outcome(rig, monkeypatch):
    """As tests/test_curve_workflow.py's slow upload, the appliance's link a VISA TCPIP SOCKET resource."""
    slow_upload_outlives_its_answer(rig.app, rig.emu, monkeypatch, "KP-SLOW15", 15)
