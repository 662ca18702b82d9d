"""The declared 372 settings (issue 22) over VISA too: the appliance's 372 configured with
``transport = "visa"`` (pyvisa-py, a serial resource on the emulator's pty as the 372's USB port is,
and a TCPIP SOCKET resource as its Ethernet port is), each setting set through the control API and
read back by Lake Shore's own ``lakeshore`` package on the emulator's other link as the value set."""

from __future__ import annotations

import pytest

from appliance import config as _config
from appliance.service import Appliance
from tests.conftest import run_with_timeout as within
from tests.conftest import wait_for
from tests.test_security import TOKEN, call, secret_file
from tests.test_settings import AUTH, CASES_372, oracle372, pair, put  # noqa: F401 - oracle372 is a fixture

pytestmark = pytest.mark.slow  # each case runs an appliance against the emulator (1-2 s)


def visa_config(tmp_path, resource: str, token) -> str:
    return (
        f'[[instrument]]\nmodel = "372"\nname = "LSA23JD"\ntransport = "visa"\nresource = "{resource}"\n'
        "timeout = 1.0\ninterval = 0.2\nread_heater = true\n"
        "[polling]\nbackoff_initial = 0.2\nbackoff_max = 1.0\n"
        f'[store]\npath = "{tmp_path / "kelvinpi.db"}"\ncommit_interval = 0.2\n'
        '[web]\nbind = "127.0.0.1"\nport = 0\n'
        f'[control]\nenabled = true\ntoken_file = "{token}"\nmax_setpoint_kelvin = 2\n'
    )


@pytest.fixture(params=["ASRL", "TCPIP"])
def app(request, tmp_path, emu372_pty):
    """The appliance's 372 over VISA; ``emu372`` (for the ``lakeshore`` oracle) is the same emulator."""
    host, port = emu372_pty.tcp.address
    resource = f"ASRL{emu372_pty.pty.link}::INSTR" if request.param == "ASRL" else f"TCPIP::{host}::{port}::SOCKET"
    tok = secret_file(tmp_path / "token", TOKEN)
    a = Appliance(_config.parse(visa_config(tmp_path, resource, tok)))
    a.start()
    a.base_url = f"http://127.0.0.1:{a.web_address[1]}"
    try:
        wait_for(lambda: a.pollers[0].health.connected, 20, what=f"the 372 over VISA {resource}")
        assert a.pollers[0].health.transport == "visa"
        yield a
    finally:
        a.stop()


@pytest.fixture
def emu372(emu372_pty):
    return emu372_pty  # the oracle (test_settings.oracle372) opens the emulator's TCP socket


@pytest.mark.parametrize("name,target,values,vendor", CASES_372, ids=[c[0] for c in CASES_372])
def test_372_setting_round_trips_over_visa_and_lake_shores_driver_reads_it(
    app,
    oracle372,  # noqa: F811 - the fixture imported above
    name,
    target,
    values,
    vendor,
):
    status, body = put(app, "LSA23JD", name, target, values)
    assert status == 200, body
    got = within(lambda: vendor(oracle372))
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
