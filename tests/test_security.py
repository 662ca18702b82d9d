"""Security review, as tests (issue 6): secrets, instrument control, read-only API, CORS, bind address.
(TLS: a router with an unexpected certificate is refused loudly in test_uplinks.)"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from appliance import config as _config
from appliance.service import Appliance
from tests.conftest import ROOT, appliance_config, wait_for

TOKEN = "control-token-Zq83hd02kD"
SECRET = "uplink-secret-Lk29sd8Qm1"

pytestmark = pytest.mark.slow  # appliances started and stopped per test, 0.6-1.3 s each


def call(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def secret_file(path, text, mode=0o600):
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


# the one private key in the tree: RAUC's development signing key, for tests only, named as such
DEV_KEYS = {"images/keys/dev-DO-NOT-SHIP.key.pem"}


def test_no_credentials_in_the_repository():
    """Tracked files hold no private keys, and no config assigns a literal password, token or secret."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert len(files) > 50
    pem = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
    literal = re.compile(r"^\s*(password|token|secret|psk)\s*=\s*\"[^\"]+\"", re.I | re.M)
    offenders = []
    for f in files:
        p = ROOT / f
        if not p.is_file() or p.stat().st_size > 2_000_000:
            continue
        text = p.read_text(errors="replace")
        if pem.search(text) and f not in DEV_KEYS:
            offenders.append(f"{f}: private key")
        if f.endswith((".toml", ".conf", ".json", ".yml", ".yaml", ".env")) and literal.search(text):
            offenders.append(f"{f}: {literal.search(text).group(0).strip()}")
    assert not offenders, offenders


def test_secrets_never_reach_logs_health_or_metrics(tmp_path, emu372, emu240, caplog):
    caplog.set_level(logging.DEBUG)
    tok = secret_file(tmp_path / "token", TOKEN)
    sec = secret_file(tmp_path / "wamp-secret", SECRET)
    extra = (
        f'\n[control]\nenabled = true\ntoken_file = "{tok}"\n'
        f'\n[[uplink]]\nkind = "ocs"\nurl = "ws://127.0.0.1:9/ws"\nsecret_file = "{sec}"\n'
    )
    from tests.conftest import start_appliance

    app = start_appliance(appliance_config(tmp_path, emu372, emu240, extra=extra))
    try:
        wait_for(lambda: app.store.written > 20, 20, what="polling")
        base = app.base_url
        status, _, _ = call(
            f"{base}/api/v1/control/LSA23JD/setpoint", "POST", {"kelvin": 0.02}, {"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 200
        call(f"{base}/api/v1/control/LSA23JD/setpoint", "POST", {"kelvin": 0.02}, {"Authorization": "Bearer nope"})
        seen = "".join(
            call(f"{base}{p}")[2]
            for p in ("/api/v1/health", "/api/v1/instruments", "/api/v1/events", "/metrics", "/api/v1/openapi.json")
        )
    finally:
        app.stop()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for s in (TOKEN, SECRET):
        assert s not in logs and s not in seen


def test_control_is_off_by_default(running_appliance):
    base = running_appliance.base_url
    status, _, body = call(
        f"{base}/api/v1/control/LSA23JD/setpoint", "POST", {"kelvin": 0.05}, {"Authorization": "Bearer anything"}
    )
    assert status == 403 and "disabled" in json.loads(body)["error"]["message"]
    assert running_appliance.health()["control"]["enabled"] is False


def test_control_needs_the_token_and_is_recorded(tmp_path, emu372, emu240):
    tok = secret_file(tmp_path / "token", TOKEN)
    app = Appliance(
        _config.parse(
            appliance_config(
                tmp_path,
                emu372,
                emu240,
                extra=(f'\n[control]\nenabled = true\ntoken_file = "{tok}"\nmax_setpoint_kelvin = 0.5\n'),
            )
        )
    )
    app.start()
    base = f"http://127.0.0.1:{app.web_address[1]}"
    url = f"{base}/api/v1/control/LSA23JD/setpoint"
    good = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_for(lambda: all(p.health.connected for p in app.pollers), 20, what="connected")
        before = emu372.device.outputs[0].setp
        assert call(url, "POST", {"kelvin": 0.05})[0] == 401  # no token
        assert call(url, "POST", {"kelvin": 0.05}, {"Authorization": f"Bearer {TOKEN}x"})[0] == 401
        assert call(url, "POST", {"kelvin": 0.05}, {"Authorization": f"Basic {TOKEN}"})[0] == 401
        assert call(f"{url}?token={TOKEN}", "POST", {"kelvin": 0.05})[0] == 401  # never from the URL
        for bad in ({"kelvin": 5.0}, {"kelvin": -1}, {"kelvin": "0.1"}, {"kelvin": 0.1, "output": 2}, {}):
            status, _, body = call(url, "POST", bad, good)
            assert status == 400 and json.loads(body)["error"]["message"], (bad, body)
        assert call(f"{base}/api/v1/control/LSA24AZ/setpoint", "POST", {"kelvin": 0.1}, good)[0] == 400
        assert call(f"{base}/api/v1/control/nope/setpoint", "POST", {"kelvin": 0.1}, good)[0] == 404
        status, _, body = call(url, "POST", {"kelvin": 0.042}, good)
        assert status == 200 and json.loads(body)["setpoint"] == pytest.approx(0.042)
        # the instrument really changed, and the change is on record
        from drivers.ls372 import Model372
        from drivers.transport import TcpTransport

        probe = Model372(TcpTransport(*emu372.tcp.address), timeout=2)
        probe.connect()
        assert probe.setpoint(0) == pytest.approx(0.042) and before != 0.042
        probe.close()
        events = json.loads(call(f"{base}/api/v1/events")[2])["events"]
        assert any(e["kind"] == "control" and "0.042" in e["detail"] for e in events)
    finally:
        app.stop()


def test_control_token_readable_by_others_keeps_control_off(tmp_path, emu372, emu240):
    tok = secret_file(tmp_path / "token", TOKEN, mode=0o644)
    app = Appliance(
        _config.parse(
            appliance_config(tmp_path, emu372, emu240, extra=(f'\n[control]\nenabled = true\ntoken_file = "{tok}"\n'))
        )
    )
    app.start()
    try:
        status, _, body = call(
            f"http://127.0.0.1:{app.web_address[1]}/api/v1/control/LSA23JD/setpoint",
            "POST",
            {"kelvin": 0.05},
            {"Authorization": f"Bearer {TOKEN}"},
        )
        assert status == 403 and "readable by others" in body and "chmod 600" in body
        wait_for(lambda: app.store.written > 10, 20, what="polling goes on")
    finally:
        app.stop()


def test_read_only_endpoints_stay_read_only_and_no_cors(running_appliance):
    base = running_appliance.base_url
    for path in ("/api/v1/health", "/api/v1/latest", "/api/v1/fields", "/api/v1/data?field=x::y", "/api/v1/events"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, _, body = call(f"{base}{path}", method, {})
            assert status == 405 and json.loads(body)["error"]["message"], (method, path, status)
    status, headers, _ = call(f"{base}/api/v1/latest", headers={"Origin": "http://evil.example"})
    assert status == 200 and not any(h.lower().startswith("access-control-") for h in headers)
    status, headers, _ = call(
        f"{base}/api/v1/control/LSA23JD/setpoint",
        "OPTIONS",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert status >= 400 and not any(h.lower().startswith("access-control-") for h in headers)


def test_bind_address_is_deliberate():
    """The front panel listens on the LAN on the Pi (its job), and on loopback in the demo."""
    assert _config.WebConfig().bind == "0.0.0.0"
    assert _config.load(ROOT / "appliance" / "demo.toml").web.bind == "127.0.0.1"
    sample = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "sample-config"], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    assert "bind" in sample and "[control]" in sample and "# enabled = false" in sample
