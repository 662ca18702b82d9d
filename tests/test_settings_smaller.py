"""Issue 22 red team, finding 7: the smaller breaks, each against the emulators through the API or the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_security import call
from tests.test_settings import AUTH, app, message, put  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

NODE = "LSA23JD"


def get(app, name, target=None):  # noqa: F811
    q = f"?target={target}" if target else ""
    status, _, body = call(f"{app.base_url}/api/v1/control/{NODE}/settings/{name}{q}", "GET", None, AUTH)
    return status, json.loads(body)


def test_the_scanner_read_puts_back_unchanged(app, emu372):  # noqa: F811
    status, body = get(app, "scanner")
    assert status == 200 and isinstance(body["values"]["channel"], int), body
    status, body = put(app, NODE, "scanner", None, body["values"])
    assert status == 200, body
    status, _, raw = call(f"{app.base_url}/api/v1/openapi.json")
    shapes = json.loads(raw)["paths"]["/api/v1/control/{node}/settings/{name}"]["put"]["requestBody"]["content"]
    anyof = shapes["application/json"]["schema"]["properties"]["values"]["anyOf"]
    scanner = next(s for s in anyof if s["title"] == "scanner (Model 372)")
    assert scanner["properties"]["channel"]["type"] == "integer"


def test_the_cli_keeps_a_numeric_looking_name_a_name(app, emu372):  # noqa: F811
    r = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "setting", "--url", app.base_url, "--node", NODE]
        + ["--token-file", str(app.token_file), "set", "name", "7", "name=100"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert emu372.device.channels["7"].name == "100"


def test_an_empty_curve_slot_is_answered_plainly(app, emu372):  # noqa: F811
    assert emu372.device.curves.curve(40) is None
    status, _, body = call(f"{app.base_url}/api/v1/control/{NODE}/curves/40", "GET", None, AUTH)
    assert status == 404 and "curve 40 is empty" in body, body


def test_audit_ids_differ_between_runs():
    """The id prefix was int(time.time()) % 100000: runs in the same second (or 27.8 h apart) repeated ids."""
    code = (
        "from appliance.control import Audit\n"
        "class S:\n    def event(self, *a): pass\n"
        "print(Audit(S()).begin('n', 'w', 'x', 'o').id)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(3)
    ]
    ids = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(ids) and len(set(ids)) == 3, ids


def test_a_setpoint_in_ohms_is_refused_plainly_and_the_kelvin_cap_applies_in_kelvin(app, emu372):  # noqa: F811
    """The cap is in kelvin: with the control input in ohms a setpoint was compared with it as if kelvin."""
    ch = emu372.device.outputs[0].input
    assert put(app, NODE, "input_type", ch, {"units": 2})[0] == 200
    before = emu372.device.outputs[0].setp
    status, body = put(app, NODE, "setpoint", "0", {"value": 1.5})
    assert status == 400 and "reads in ohms" in message(body) and "max_setpoint_kelvin" in message(body), body
    status, _, text = call(f"{app.base_url}/api/v1/control/{NODE}/setpoint", "POST", {"kelvin": 1.5}, AUTH)
    assert status == 400 and "reads in ohms" in text, text
    assert emu372.device.outputs[0].setp == before
    assert put(app, NODE, "input_type", ch, {"units": 1})[0] == 200
    assert put(app, NODE, "setpoint", "0", {"value": 1.5})[0] == 200  # max_setpoint_kelvin = 2 in the fixture
    status, body = put(app, NODE, "setpoint", "0", {"value": 2.5})
    assert status == 400 and "control.max_setpoint_kelvin" in message(body), body
