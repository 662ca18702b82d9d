"""``POST /api/v1/update`` (issue 28): gated and audited as the control API is, the body refused before
one byte of it is kept unless the token is right, capped (413), a refused bundle a 400 with RAUC's
reason and nothing changed, a good one installed, marked, recorded and rebooted into once.

A real appliance on loopback with the emulators; ``rauc info`` is the real RAUC on real bundles;
``rauc install`` and the reboot are small recording scripts (tests/support/bundles.py says why).
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from appliance import config as _config
from appliance.service import Appliance
from appliance.update import marker
from appliance.update.devicetree import write_boot_info
from appliance.web.common import MAX_BODY

from .conftest import appliance_config, wait_for
from .support.bundles import fake_rauc, make_bundle, make_ca, need_rauc, recorder
from .test_security import TOKEN, secret_file

pytestmark = pytest.mark.slow  # an appliance per test, rauc bundle and openssl

CAP_MB = 0.5


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    need_rauc()
    d = tmp_path_factory.mktemp("bundles")
    key, cert = make_ca(d, "lab")
    other_key, other_cert = make_ca(d, "other")
    return {
        "keyring": cert,
        # over MAX_BODY (256 KiB), under the cap: the body is spooled on the data partition, not refused
        "good": make_bundle(d, "good", key, cert, version="0.4.0", size=320 * 1024),
        "other CA": make_bundle(d, "other", other_key, other_cert),
    }


def start(tmp_path, emu372, bundles, control: bool = True) -> Appliance:
    log = tmp_path / "commands.log"
    log.touch()
    rauc = fake_rauc(tmp_path / "rauc", log)
    reboot = recorder(tmp_path / "reboot", log)
    write_boot_info(tmp_path / "dt", 2, False)
    tok = secret_file(tmp_path / "token", TOKEN)
    extra = (
        f'\n[control]\nenabled = {"true" if control else "false"}\ntoken_file = "{tok}"\n'
        f'[update]\nrauc = ["{rauc}"]\nkeyring = "{bundles["keyring"]}"\nreboot_try = ["{reboot}", "try"]\n'
        f'device_tree = "{tmp_path / "dt"}"\nstate_dir = "{tmp_path / "state"}"\nmax_upload_mb = {CAP_MB}\n'
    )
    app = Appliance(_config.parse(appliance_config(tmp_path, emu372, extra=extra)))
    app.start()
    app.port, app.log, app.state = app.web_address[1], log, tmp_path / "state"
    return app


def post(app, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Content-Type": "application/octet-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{app.port}/api/v1/update", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def head_only(app, length: int, token: str | None) -> tuple[int, str]:
    """Send the request's head and none of its body: the answer must come anyway."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(f"POST /api/v1/update HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {length}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]["message"]


def audit(app) -> list[str]:
    return [e["detail"] for e in app.store.events(limit=50, node="update", kinds=("control",))]


def test_without_the_token_the_upload_is_refused_before_its_body(tmp_path, emu372, bundles):
    app = start(tmp_path, emu372, bundles)
    try:
        assert head_only(app, 100_000_000, None) == (401, "give the control token as 'Authorization: Bearer <token>'")
        assert head_only(app, 100_000_000, "wrong") == (401, "wrong control token")
        status, message = head_only(app, 100_000_000, TOKEN)  # admitted, then over the cap: also at the head
        assert status == 413 and message == f"request body over the limit of {int(CAP_MB * 1048576)} bytes"
        assert app.log.read_text() == "" and not list(app.state.glob("*"))
    finally:
        app.stop()


def test_with_control_off_updates_over_the_network_are_off(tmp_path, emu372, bundles):
    app = start(tmp_path, emu372, bundles, control=False)
    try:
        status, body = post(app, bundles["good"].read_bytes())
        assert status == 403
        assert body["error"]["message"].startswith("updates over the network are off with instrument control")
        assert app.log.read_text() == "" and marker.read(app.state) is None
    finally:
        app.stop()


def test_a_wrongly_signed_upload_is_refused_with_raucs_reason_and_audited(tmp_path, emu372, bundles):
    app = start(tmp_path, emu372, bundles)
    try:
        status, body = post(app, bundles["other CA"].read_bytes())
        assert status == 400
        assert body["error"]["message"].startswith("refused the uploaded bundle: signature verification failed")
        assert [c.split()[0] for c in app.log.read_text().splitlines()] == ["info"]
        assert marker.read(app.state) is None and not list(app.state.glob("*.raucb"))  # the upload is gone
        requested, refused = audit(app)[::-1]
        assert "requested by 127.0.0.1: install an update bundle of" in requested
        assert "refused: install an update bundle" in refused and "signature verification failed" in refused
    finally:
        app.stop()


def test_a_good_upload_is_installed_recorded_and_rebooted_into_once(tmp_path, emu372, bundles):
    app = start(tmp_path, emu372, bundles)
    try:
        assert bundles["good"].stat().st_size > MAX_BODY
        status, body = post(app, bundles["good"].read_bytes())
        assert status == 202, body
        assert body["installed"] == {"version": "0.4.0", "from_slot": "A", "to_slot": "B"}
        wait_for(lambda: "try" in app.log.read_text().splitlines(), timeout=10, what="the try reboot")
        calls = app.log.read_text().splitlines()
        assert [c.split()[0] for c in calls] == ["info", "install", "try"]
        pending = marker.read(app.state)
        assert (pending.to_slot, pending.bundle_version, pending.recorded) == ("B", "0.4.0", True)
        (installed,) = [e["detail"] for e in app.store.events(kinds=("update_installed",))]
        assert installed.startswith(f"installed {pending.bundle} (version 0.4.0) from slot A to slot B at ")
        assert "applied: install an update bundle" in audit(app)[0] and "(by 127.0.0.1)" in audit(app)[0]
        assert not list(app.state.glob("*.raucb"))
    finally:
        app.stop()


def test_the_update_page_posts_the_file_with_the_token(tmp_path, emu372, bundles):
    app = start(tmp_path, emu372, bundles)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.port}/static/update.html", timeout=10) as r:
            page = r.read().decode()
        assert 'fetch("/api/v1/update", {method: "POST", body: file' in page
        assert '"Authorization": "Bearer " + f.token.value.trim()' in page
    finally:
        app.stop()


def test_no_second_upload_is_taken_between_the_answer_and_the_try_reboot(tmp_path, emu372, bundles):
    """The first upload's 202 comes a second before its try reboot: a second upload then would write the
    same slot under the first one's marker. It is a 409, audited like every upload."""
    app = start(tmp_path, emu372, bundles)
    try:
        body = bundles["good"].read_bytes()
        assert post(app, body)[0] == 202
        status, answer = post(app, body)  # at once: the reboot timer has not fired
        assert (status, answer["error"]["message"]) == (
            409,
            "an update is installed and the appliance is rebooting into it",
        )
        wait_for(lambda: "try" in app.log.read_text().splitlines(), timeout=10, what="the try reboot")
        status, answer = post(app, body)  # the reboot was asked for and this boot goes on: still refused
        assert status == 409
        assert [c.split()[0] for c in app.log.read_text().splitlines()] == ["info", "install", "try"]
        assert len(app.store.events(kinds=("update_installed",))) == 1
        refused = [a for a in audit(app) if "] refused: install an update bundle" in a]
        assert len(refused) == 2 and all("rebooting into it" in a for a in refused)
    finally:
        app.stop()
