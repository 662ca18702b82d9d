"""One owner per link (issue 11): control requests run on the instrument's poller thread, and a
timeout on a control request resets the link before the poller's next exchange."""

from __future__ import annotations

import json
import threading
import time

import pytest

from appliance import config as _config
from appliance.poller import LinkUnavailable
from appliance.service import Appliance
from tests.conftest import appliance_config, wait_for
from tests.test_security import TOKEN, call, secret_file

pytestmark = pytest.mark.slow  # the appliance lending its links, 2-4 s each


def _app(tmp_path, emu372, timeout: float = 1.0) -> Appliance:
    tok = secret_file(tmp_path / "token", TOKEN)
    text = appliance_config(
        tmp_path,
        emu372,
        None,
        extra=(f'\n[control]\nenabled = true\ntoken_file = "{tok}"\nmax_setpoint_kelvin = 0.5\n'),
    )
    app = Appliance(_config.parse(text))
    app.start()
    app.base_url = f"http://127.0.0.1:{app.web_address[1]}"
    wait_for(lambda: all(p.health.connected for p in app.pollers), 20, what="connected")
    return app


def _heater_values(app) -> list[float]:
    d = app.store.data(["LSA23JD::sample_heater"], -600, 0, None)
    return list(d["LSA23JD::sample_heater"].value) if "LSA23JD::sample_heater" in d else []


def test_control_requests_run_on_the_poller_thread(tmp_path, emu372):
    app = _app(tmp_path, emu372)
    try:
        poller = app.pollers[0]
        seen = poller.call(lambda inst: (threading.current_thread().name, inst.setpoint(0)), "probe")
        assert seen[0] == poller.name  # the poller's own thread ran it, between its cycles
        with pytest.raises(ValueError, match="channel"):
            poller.call(lambda inst: inst.kelvin(99), "bad channel")  # errors reach the caller
        assert poller.health.connected  # ... and the poller goes on
    finally:
        app.stop()
    with pytest.raises(LinkUnavailable, match="not connected"):
        poller.call(lambda inst: None, "after stop")


def test_late_control_reply_never_becomes_a_reading(tmp_path, emu372):
    """The bug: a control request's SETP? timed out, its late reply was read as the next HTR? answer
    and stored as the heater output. Now the request fails (503), the link is reset, and every stored
    heater value is the heater's own (0 %: output 0 is off)."""
    emu372.device.outputs[0].setp = 0.0421
    app = _app(tmp_path, emu372)
    url = f"{app.base_url}/api/v1/control/LSA23JD/setpoint"
    good = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_for(lambda: len(_heater_values(app)) >= 3, 20, what="heater samples")
        with emu372.tcp.clients_lock:
            old = set(emu372.tcp.clients)  # the poller's connection
        emu372.control("slow 1.6 SETP?")
        status, _, body = call(url, "POST", {"kelvin": 0.03}, good)
        assert status == 503 and "no reply" in json.loads(body)["error"]["message"]

        def old_connection_done() -> bool:  # the emulator lets go of it only after sending the late reply
            with emu372.tcp.clients_lock:
                return not old & emu372.tcp.clients

        wait_for(old_connection_done, 10, what="the late reply sent on the connection the reset closed")
        emu372.control("clear")
        n = len(_heater_values(app))
        wait_for(lambda: len(_heater_values(app)) >= n + 5, 20, what="heater samples after the reset")
        poller = app.pollers[0]
        assert set(_heater_values(app)) == {0.0}
        assert poller.health.errors["bad_reply"] == 0 and poller.health.errors["timeout"] >= 1
        status, _, body = call(url, "POST", {"kelvin": 0.03}, good)
        assert status == 200 and json.loads(body)["before"] == pytest.approx(0.0421)
    finally:
        app.stop()


def test_a_long_request_feeds_the_watchdog_until_its_deadline(tmp_path, emu372):
    """A 200-point curve upload takes ~30 s on a real 372 and systemd's watchdog is 30 s: the poller
    keeps feeding it during a request, but not past the caller's deadline."""
    app = _app(tmp_path, emu372)
    try:
        poller = app.pollers[0]
        kicks: list[float] = []
        poller.watchdog_pinger = type("W", (), {"kick": lambda self, name: kicks.append(time.monotonic())})()
        poller.KICK_EVERY = 0.1
        wait_for(lambda: kicks, 10, what="a cycle kick")
        t0 = time.monotonic()
        poller.call(lambda inst: time.sleep(1.0), "long job", timeout=10)
        assert len([k for k in kicks if t0 < k < t0 + 0.95]) >= 5  # fed while the job ran
        t1 = time.monotonic()
        stuck_done = threading.Event()
        with pytest.raises(LinkUnavailable, match="did not finish within 0.3 s"):
            poller.call(lambda inst: (time.sleep(1.5), stuck_done.set()), "stuck job", timeout=0.3)
        assert stuck_done.wait(10), "the stuck job never finished"  # the whole time it held the link
        assert not [k for k in kicks if t1 + 0.5 < k < t1 + 1.4]  # past the deadline: starved
    finally:
        app.stop()
