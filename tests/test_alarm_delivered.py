"""Alarms see what the instruments say, not what the store managed to write (issue 21 items 5, 8).

A full card during a warm-up: 25 s in, the newest MXC reading in the poller queue was 0.50 K,
``/api/v1/latest`` still said 11.5 mK and no alarm was raised (alarms read ``Store.latest()``,
which moves only after a commit). Here the store's own 3 MiB tmpfs is filled by another writer,
the emulated 372 warms up, and the threshold alarm is raised and delivered to a webhook on
loopback while the store still cannot write; ``store_not_writing`` is raised beside it.

A misspelled rule (``mxc_temp`` for ``mxc_t``) fired never and said nothing: now, one scan cycle
after its instrument connected, it is an ``alarm_rule_unmatched`` event and a health entry naming
the rule, the missing field and the fields the instrument has.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import appliance_config, fill_disk, start_appliance, wait_for


class Hook:
    """A webhook receiver on loopback that keeps every JSON body it is POSTed."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def got(self) -> list[dict]:
        with self.lock:
            return list(self.bodies)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.stop()


def url_file(tmp_path, url: str) -> str:
    p = tmp_path / "hook-url"
    p.write_text(url + "\n")
    os.chmod(p, 0o600)
    return str(p)


@pytest.mark.slow
def test_a_full_disk_during_a_warmup_blinds_no_threshold_alarm(tmp_path, small_disk, emu372, hook):
    extra = f'''
[[notify]]
kind = "webhook"
name = "hook"
url_file = "{url_file(tmp_path, hook.url)}"
backoff_initial = 0.2

[[alarm]]
kind = "above"
name = "mxc-warm"
severity = "critical"
field = "LSA23JD::mxc_control_t"
threshold = 0.05

[[alarm]]
kind = "store_not_writing"
name = "store-stuck"
seconds = 3
'''
    text = appliance_config(tmp_path, emu372, extra=extra).replace(
        str(tmp_path / "kelvinpi.db"), str(small_disk / "kelvinpi.db")
    )
    text = text.replace("read_heater = true", "read_heater = false")
    app = start_appliance(text)
    filler = small_disk / "filler"
    try:
        wait_for(lambda: app.store.written > 50, 20, what="writing")
        assert not app.alarms.active()
        fill_disk(filler)  # another process eats the card
        wait_for(lambda: app.store.write_errors > 0, 20, what="a failed write")
        stored = {r["field"]: r["value"] for r in app.store.latest()}
        assert stored["LSA23JD::mxc_control_t"] < 0.05  # cold, as far as the store knows
        emu372.control("warmup 60")  # the fridge warms towards the room: past 50 mK within a poll
        wait_for(lambda: "mxc-warm" in {a["name"] for a in app.alarms.active()}, 15, what="the threshold alarm raised")
        # raised while the store still cannot write and still believes the stage cold
        assert app.store.last_error_t > app.store.last_commit
        stored = {r["field"]: r["value"] for r in app.store.latest()}
        assert stored["LSA23JD::mxc_control_t"] < 0.05
        warm = next(a for a in app.alarms.active() if a["name"] == "mxc-warm")
        assert warm["value"] > 0.05
        # and it reaches a person (the lane does not wait for a journal that cannot be written)
        wait_for(
            lambda: any(b["alarm"] == "mxc-warm" and b["event"] == "raised" for b in hook.got()),
            15,
            what="the raised notice delivered while the disk is full",
        )
        # the store's own alarm says why the store is silent
        wait_for(lambda: "store-stuck" in {a["name"] for a in app.alarms.active()}, 15, what="store_not_writing")
        assert app.store.last_error_t > app.store.last_commit
    finally:
        app.stop()
        filler.unlink(missing_ok=True)


@pytest.mark.slow
def test_a_misspelled_rule_is_reported_one_scan_cycle_after_connecting(tmp_path, emu372):
    # a short autoscan (two inputs, 1 s pause + 1 s dwell) so the scan cycle is a few seconds
    with emu372.device.lock:
        for ch in ("1", "5"):
            emu372.device.channels[ch].dwell = 1
            emu372.device.channels[ch].pause = 1
        for ch in ("2", "3"):
            emu372.device.channels[ch].enabled = 0
    extra = """
[[alarm]]
kind = "above"
name = "mxc-typo"
field = "LSA23JD::mxc_temp"
threshold = 0.05

[[alarm]]
kind = "below"
name = "mxc-cold"
field = "LSA23JD::mxc_control_t"
threshold = 1.0
"""
    app = start_appliance(appliance_config(tmp_path, emu372, extra=extra))
    try:
        wait_for(lambda: app.health()["alarms"]["unmatched"], 30, what="the unmatched rule in health")
        [entry] = app.health()["alarms"]["unmatched"]
        assert entry["rule"] == "mxc-typo" and entry["field"] == "LSA23JD::mxc_temp"
        assert entry["instrument"] == "LSA23JD"
        assert "LSA23JD::mxc_control_t" in entry["instrument_fields"]
        assert "LSA23JD::mxc_temp" not in entry["instrument_fields"]
        events = wait_for(
            lambda: [e for e in app.store.events(0, 1000) if e["kind"] == "alarm_rule_unmatched"],
            10,
            what="the alarm_rule_unmatched event",
        )
        assert len(events) == 1 and events[0]["node"] == "LSA23JD"
        assert "mxc-typo" in events[0]["detail"] and "LSA23JD::mxc_temp" in events[0]["detail"]
        assert "LSA23JD::mxc_control_t" in events[0]["detail"]
        # its sibling on a real field fires as ever, and is not reported
        assert "mxc-cold" in {a["name"] for a in app.alarms.active()}
        assert [u["rule"] for u in app.health()["alarms"]["unmatched"]] == ["mxc-typo"]
    finally:
        app.stop()
