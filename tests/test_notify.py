"""Notifications end to end: the appliance against the emulated 372, a webhook receiver
(stdlib http.server) and an SMTP server with STARTTLS and login (aiosmtpd), all on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import appliance_config, free_port, start_appliance, wait_for

pytestmark = pytest.mark.slow  # alarm deliveries across outages and restarts, 2-18 s each

TOKEN = "alarm-ack-token-for-tests"


class Receiver:
    """A webhook receiver that can go down (its port closed) and come back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.got: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.got.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [json.loads(g["body"]) for g in self.got if path is None or g["path"] == path]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.down()


def secret(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text + "\n")
    os.chmod(p, 0o600)
    return str(p)


def control(tmp_path) -> str:
    return f'\n[control]\nenabled = true\ntoken_file = "{secret(tmp_path, "token", TOKEN)}"\n'


def api(app, path: str, method: str = "GET", token: str | None = None):
    req = urllib.request.Request(app.base_url + path, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def alarm(app, name: str) -> dict:
    return next(a for a in api(app, "/api/v1/alarms")["alarms"] if a["name"] == name)


def test_outage_then_exactly_once_in_order_ack_and_restart(tmp_path, emu372, receiver, caplog):
    caplog.set_level("INFO")
    hook = f"http://127.0.0.1:{receiver.port}/hook/s3cr3t-path"
    extra = (
        control(tmp_path)
        + f'''
[[notify]]
kind = "webhook"
name = "hook"
url_file = "{secret(tmp_path, "hook-url", hook)}"
backoff_initial = 0.2
backoff_max = 1.0

[[alarm]]
kind = "below"
name = "mxc-cold"
severity = "critical"
field = "LSA23JD::mxc_control_t"
threshold = 1.0
repeat = 1
'''
    )
    text = appliance_config(tmp_path, emu372, extra=extra)
    app = start_appliance(text)
    try:
        # the receiver is down: raised + repeats pile up, durably queued
        wait_for(lambda: alarm(app, "mxc-cold")["active"], 20, what="alarm raised")
        wait_for(lambda: app.alarms.lanes["hook"].backlog() >= 4, 20, what="notices queued during the outage")
        assert app.alarms.lanes["hook"].failures >= 1
        receiver.up()
        wait_for(
            lambda: app.alarms.lanes["hook"].backlog() == 0 and len(receiver.bodies()) >= 4,
            20,
            what="backlog delivered",
        )
        got = receiver.bodies()
        ids = [int(g["headers"]["X-Kelvinpi-Notice"]) for g in receiver.got]
        assert ids == sorted(set(ids)) and ids == list(range(ids[0], ids[0] + len(ids))), ids  # once, in order
        assert [g["event"] for g in got[:2]] == ["raised", "repeat"]
        assert got[0]["alarm"] == "mxc-cold" and got[0]["field"] == "LSA23JD::mxc_control_t"
        assert got[0]["value"] < 1.0 and got[0]["severity"] == "critical"
        assert set(got[0]) <= {"alarm", "event", "severity", "rule", "field", "value", "detail", "since", "t", "time"}
        # metrics and health see it
        with urllib.request.urlopen(app.base_url + "/metrics", timeout=10) as r:
            assert 'kelvinpi_alarm_active{name="mxc-cold",severity="critical"} 1.0' in r.read().decode()
        health = api(app, "/api/v1/health")
        assert health["ok"] is False and [a["name"] for a in health["alarms"]["active"]] == ["mxc-cold"]
        # acknowledging needs the token
        with pytest.raises(urllib.error.HTTPError) as e:
            api(app, "/api/v1/alarms/mxc-cold/ack", "POST")
        assert e.value.code == 401
        a = api(app, "/api/v1/alarms/mxc-cold/ack", "POST", token=TOKEN)
        assert a["acked"] and a["active"]
        wait_for(lambda: receiver.bodies()[-1]["event"] == "acknowledged", 10, what="acknowledged notice")
        n = len(receiver.got)
        time.sleep(2.5)  # over two repeat intervals: no repeat after the acknowledgement
        assert len(receiver.got) == n
        kinds = [e["kind"] for e in api(app, "/api/v1/events?since=-3600")["events"]]
        assert "alarm_raised" in kinds and "alarm_acknowledged" in kinds
    finally:
        app.stop()
    # a restart keeps the alarm active and acknowledged: no second "raised", no repeats
    app = start_appliance(text)
    try:
        a = alarm(app, "mxc-cold")
        assert a["active"] and a["acked"]
        time.sleep(2.5)  # over two repeat intervals after the restart: still no repeat
        assert len(receiver.got) == n
    finally:
        app.stop()
    secrets = ("s3cr3t-path", TOKEN)
    assert not any(s in caplog.text for s in secrets)


def test_restart_keeps_unacknowledged_and_undelivered(tmp_path, emu372, receiver):
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    extra = f'''
[[notify]]
kind = "slack"
name = "slack"
url_file = "{secret(tmp_path, "hook-url", hook)}"
backoff_initial = 0.2
backoff_max = 0.5

[[alarm]]
kind = "above"
name = "mxc-over"
field = "LSA23JD::mxc_control_t"
threshold = 0.001
repeat = 3600
'''
    text = appliance_config(tmp_path, emu372, extra=extra)
    app = start_appliance(text)
    try:
        wait_for(lambda: alarm(app, "mxc-over")["active"], 20, what="alarm raised")
        wait_for(lambda: app.alarms.lanes["slack"].failures >= 2, 20, what="delivery failing")
    finally:
        app.stop()  # the "raised" notice was never delivered
    receiver.up()
    app = start_appliance(text)
    try:
        wait_for(lambda: receiver.got, 20, what="the old notice delivered after the restart")
        time.sleep(2)  # time for a duplicate (a second "raised" after the restart) to arrive, if one were sent
        texts = [b["text"] for b in receiver.bodies()]
        assert len(texts) == 1 and "mxc-over raised" in texts[0] and "[WARNING]" in texts[0]
        a = alarm(app, "mxc-over")
        assert a["active"] and not a["acked"]
    finally:
        app.stop()


def test_warmup_raises_rate_then_threshold_at_expected_times(tmp_path, emu372, receiver):
    """The emulator's ``warmup`` fault (a cooldown run backwards): every stage relaxes towards
    295 K with tau = 15000 s, so the MXC rises at (295 K - 11.5 mK) / tau = 1.18 K/min and crosses
    0.1 K at tau * ln((295 - T0) / (295 - 0.1)) = 4.5 s. The rate alarm (0.3 K/min over 3 s)
    comes first, within a window; the threshold alarm at 4.5 s plus its 1 s hold.
    (``warm``, a jump to 295 K, is past the RX-102A's curve: T_OVER, "above" in test_alarms.py.)
    """
    import math

    receiver.up()
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    extra = f'''
[[notify]]
kind = "ntfy"
name = "phone"
url_file = "{secret(tmp_path, "ntfy-url", hook)}"

[[alarm]]
kind = "rate"
name = "mxc-warming"
field = "LSA23JD::mxc_control_t"
threshold = 0.3
window = 3

[[alarm]]
kind = "above"
name = "mxc-warm"
severity = "critical"
field = "LSA23JD::mxc_control_t"
threshold = 0.1
hold = 1
'''
    app = start_appliance(appliance_config(tmp_path, emu372, extra=extra))
    try:
        wait_for(lambda: app.store.written > 20, 20, what="readings")
        time.sleep(3)  # a full rate window of cold readings
        assert not api(app, "/api/v1/alarms")["active"]
        t0 = time.time()
        assert emu372.control("warmup 15000") == "ok"
        wait_for(lambda: len(receiver.got) >= 2, 30, what="two notifications")
        ev = {
            e["detail"].split(" ")[0]: e["t"]
            for e in api(app, "/api/v1/events?since=-3600")["events"]
            if e["kind"] == "alarm_raised"
        }
        cross = 15000 * math.log((295 - 0.0115) / (295 - 0.1))
        print(
            f"rate alarm at +{ev['mxc-warming'] - t0:.2f} s, threshold at +{ev['mxc-warm'] - t0:.2f} s"
            f" (expected {cross + 1:.2f} s)"
        )
        assert ev["mxc-warming"] - t0 < 3.0, ev  # the slope shows within a window
        assert ev["mxc-warming"] < ev["mxc-warm"]
        assert cross + 1 - 1.0 <= ev["mxc-warm"] - t0 <= cross + 1 + 2.0, (ev["mxc-warm"] - t0, cross)
        g = receiver.got[0]
        assert g["headers"]["Title"] == "kelvinpi: mxc-warming raised" and b"mxc-warming raised" in g["body"]
        assert receiver.got[1]["headers"]["Priority"] == "urgent"
    finally:
        app.stop()


def test_mute_raises_no_data_and_disconnected_then_clears(tmp_path, emu372, receiver):
    receiver.up()
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    extra = f'''
[[notify]]
kind = "webhook"
name = "hook"
url_file = "{secret(tmp_path, "hook-url", hook)}"

[[alarm]]
kind = "no_data"
name = "mxc-silent"
field = "LSA23JD::mxc_control_t"
seconds = 2

[[alarm]]
kind = "disconnected"
name = "372-gone"
instrument = "LSA23JD"
hold = 1

[[alarm]]
kind = "above"
name = "mxc-hot"
field = "LSA23JD::mxc_control_t"
threshold = 1.0
'''
    app = start_appliance(appliance_config(tmp_path, emu372, extra=extra))
    try:
        wait_for(lambda: app.store.written > 10, 20, what="readings")
        time.sleep(2)  # past the hold times with readings flowing: nothing may fire
        assert not api(app, "/api/v1/alarms")["active"]
        assert emu372.control("mute on") == "ok"
        wait_for(
            lambda: {"372-gone", "mxc-silent"} <= {b["alarm"] for b in receiver.bodies() if b["event"] == "raised"},
            30,
            what="both raised",
        )
        assert emu372.control("mute off") == "ok"
        wait_for(
            lambda: {"372-gone", "mxc-silent"} <= {b["alarm"] for b in receiver.bodies() if b["event"] == "cleared"},
            40,
            what="both cleared",
        )
        assert not api(app, "/api/v1/alarms")["active"]
        # ``warm``: 295 K at once, past the RX-102A curve (T_OVER, no value): surely "above"
        assert emu372.control("warm") == "ok"
        wait_for(
            lambda: any(b["alarm"] == "mxc-hot" and b["event"] == "raised" for b in receiver.bodies()),
            20,
            what="T_OVER raises the above alarm",
        )
        hot = next(b for b in receiver.bodies() if b["alarm"] == "mxc-hot")
        assert hot["value"] is None and "over the sensor curve" in hot["detail"]
    finally:
        app.stop()


# -- email ---------------------------------------------------------------------------------------
@pytest.fixture
def smtp_server(tmp_path):
    aiosmtpd = pytest.importorskip("aiosmtpd")  # noqa: F841 - a test dependency (pyproject [test])
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    messages: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            messages.append(envelope.content)
            return "250 OK"

    def auth(server, session, envelope, mechanism, data):
        return AuthResult(success=(data.login, data.password) == (b"kelvinpi", b"smtp-pa55"))

    port = free_port()
    ctl = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=ctx,
        require_starttls=True,
        authenticator=auth,
        auth_require_tls=True,
    )
    ctl.start()
    ctl.messages, ctl.cert, ctl.port_ = messages, cert, port
    yield ctl
    ctl.stop()


def test_email_over_starttls_with_login(tmp_path, emu372, smtp_server, caplog):
    caplog.set_level("INFO")
    extra = f'''
[[notify]]
kind = "email"
name = "oncall"
host = "127.0.0.1"
port = {smtp_server.port_}
ca_file = "{smtp_server.cert}"
username = "kelvinpi"
password_file = "{secret(tmp_path, "smtp-password", "smtp-pa55")}"
sender = "kelvinpi@example.org"
to = ["oncall@example.org"]

[[alarm]]
kind = "below"
name = "mxc-cold"
field = "LSA23JD::mxc_control_t"
threshold = 1.0
'''
    app = start_appliance(appliance_config(tmp_path, emu372, extra=extra))
    try:
        wait_for(lambda: smtp_server.messages, 30, what="an email")
        msg = smtp_server.messages[0].decode()
        assert "Subject: [WARNING] mxc-cold raised: LSA23JD::mxc_control_t" in msg
        assert "To: oncall@example.org" in msg
    finally:
        app.stop()
    assert "smtp-pa55" not in caplog.text


def test_active_alarms_on_the_ocs_feed(tmp_path, emu372, router, wamp_loop):
    """The control room sees the appliance's active alarms on each agent's OCS ``alarms`` feed."""
    from .support.routers import CROSSBAR, FeedListener

    if not CROSSBAR.exists():
        pytest.skip("crossbar venv missing: run `make test`")
    listener = FeedListener(wamp_loop, router, feed="alarms")
    assert listener.joined.wait(20)
    extra = f'''
[[uplink]]
kind = "ocs"
url = "{router.ws_url}"
rejoin_delay = 0

[[alarm]]
kind = "below"
name = "mxc-cold"
field = "LSA23JD::mxc_control_t"
threshold = 1.0
'''
    app = start_appliance(appliance_config(tmp_path, emu372, extra=extra))
    try:
        wait_for(lambda: any(m[0]["alarms"] for m in listener.messages), 30, what="an active alarm on the OCS feed")
        body, feed = next(m for m in listener.messages if m[0]["alarms"])
        assert feed["feed_name"] == "alarms" and feed["address"] == "observatory.LSA23JD.feeds.alarms"
        assert feed["record"] is False
        assert body["alarms"][0]["name"] == "mxc-cold" and body["alarms"][0]["active"]
    finally:
        app.stop()


def test_every_notify_kind_has_one_sender_class():
    """The [[notify]] kinds the config accepts and the sender registry are the same set, one class each."""
    from appliance import config as cfgmod
    from appliance import notify

    kinds = {k for m in cfgmod.NOTIFY_MODELS for k in m.model_fields["kind"].annotation.__args__}
    assert kinds == set(notify.SENDERS) == {"webhook", "slack", "ntfy", "email"}
    assert len(set(notify.SENDERS.values())) == len(kinds)
    assert all(cls.kind == k for k, cls in notify.SENDERS.items())
