"""The try boot's health gate in a real ``kelvinpi run`` (issue 28): it commits only once the service has
signalled READY, every instrument has delivered a reading, the store has committed and every uplink has
connected; past the deadline it records what was missing, marks the slot bad and reboots; the boot after
(the old slot) records the rollback with that reason.

The firmware's device tree is a directory of big-endian u32 files; ``rauc`` and the reboots are small
real scripts that record their arguments; READY arrives on a real notify socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from appliance.store import StoreReader
from appliance.update import marker
from appliance.update.devicetree import write_boot_info
from firmware_host.emulator import Emulator

from .conftest import ROOT, free_port, wait_for
from .support.bundles import recorder, status_rauc

pytestmark = pytest.mark.slow  # a whole service in a subprocess, waited on for seconds


class TryBoot:
    """One boot of the appliance: a config, the firmware's device tree, the recorded commands, the service."""

    def __init__(self, tmp_path, deadline: float = 600, uplink: str = "", status: bool = False) -> None:
        self.tmp = tmp_path
        self.log = tmp_path / "commands.log"
        self.log.touch()
        self.dt, self.state, self.db = tmp_path / "dt", tmp_path / "state", tmp_path / "kelvinpi.db"
        self.primary = tmp_path / "primary"  # with status: autoboot.txt's [all] as RAUC's backend reports it
        if status:
            self.primary.write_text("A\n")
            rauc = status_rauc(tmp_path / "rauc", self.log, self.dt, self.primary)
        else:
            rauc = recorder(tmp_path / "rauc", self.log)
        reboot = recorder(tmp_path / "reboot", self.log)
        self.ls_port, self.web_port = free_port(), free_port()
        self.config = tmp_path / "kelvinpi.toml"
        self.config.write_text(
            f'[[instrument]]\nmodel = "372"\nname = "LSA23JD"\ntransport = "tcp"\nhost = "127.0.0.1"\n'
            f"port = {self.ls_port}\ntimeout = 1.0\ninterval = 0.2\n"
            "[polling]\nbackoff_initial = 0.2\nbackoff_max = 0.5\n"
            f'[store]\npath = "{self.db}"\ncommit_interval = 0.2\n'
            f'[web]\nbind = "127.0.0.1"\nport = {self.web_port}\n'
            f'[update]\nrauc = ["{rauc}"]\nreboot = ["{reboot}", "normal"]\nreboot_try = ["{reboot}", "try"]\n'
            f'device_tree = "{self.dt}"\nstate_dir = "{self.state}"\ncommit_deadline_s = {deadline}\n' + uplink
        )
        self.proc: subprocess.Popen | None = None
        self.notify: socket.socket | None = None

    def pending(self, to_slot: str = "B") -> None:
        """What ``kelvinpi update`` left behind on slot A."""
        marker.write(
            self.state, marker.PendingUpdate("k.raucb", "0.4.0", "A" if to_slot == "B" else "B", to_slot, 1.8e9, "x")
        )

    def boot(self, partition: int, tryboot: bool) -> None:
        write_boot_info(self.dt, partition, tryboot)
        addr = str(self.tmp / "notify")
        if os.path.exists(addr):
            os.unlink(addr)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(addr)
        self.notify.settimeout(0.1)
        env = {**os.environ, "NOTIFY_SOCKET": addr}
        env.pop("WATCHDOG_USEC", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(self.config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"service-{partition}.log", "w"),
        )

    def ready(self) -> bool:
        try:
            return b"READY=1" in self.notify.recv(4096)
        except TimeoutError:
            return False

    def get(self, path: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as r:
                body = r.read()
            return json.loads(body) if path.startswith("/api/") else body.decode()
        except OSError:
            return None

    def gate(self) -> dict:
        h = self.get("/api/v1/health")
        return h["update"] if h else {}

    def calls(self) -> list[str]:
        """The commands that change something (RAUC's status questions left out)."""
        return [c for c in self.log.read_text().splitlines() if c != "status --output-format=json"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def events(self, kind: str) -> list[str]:
        return [e["detail"] for e in StoreReader(self.db).events(0, 100) if e["kind"] == kind]


@pytest.fixture
def box(tmp_path):
    b = TryBoot(tmp_path)
    yield b
    b.stop()


def test_the_try_commits_only_after_every_condition_and_not_before(box):
    emu = Emulator.ls372(seed=1, time_scale=1.0)
    try:
        box.pending("B")
        box.boot(partition=3, tryboot=True)  # the firmware's one try of slot B
        wait_for(box.ready, timeout=30, what="READY=1 on the notify socket")
        # the instrument is not there yet: READY has gone (and the store has committed its events), no reading
        gate = wait_for(
            lambda: (g := box.gate()) and g["state"] == "waiting" and "READY" not in " ".join(g["missing"]) and g,
            what="the gate waiting with READY seen",
        )
        time.sleep(2.0)  # twice the reconnect back-off: the gate has looked several times
        gate = box.gate()
        assert gate["state"] == "waiting" and gate["tryboot"] is True and gate["slot"] == "B"
        assert gate["missing"] == ["instrument LSA23JD has delivered no reading"]
        assert not any("mark-good" in c for c in box.calls())
        metrics = box.get("/metrics")
        assert 'kelvinpi_update_gate_info{slot="B",state="waiting"} 1.0' in metrics
        assert "kelvinpi_update_gate_missing 1.0" in metrics and "kelvinpi_update_try_boot 1.0" in metrics

        emu.listen_tcp("127.0.0.1", box.ls_port)  # the instrument answers: readings, then a commit
        wait_for(lambda: box.gate().get("state") == "committed", timeout=30, what="the gate committing")
        assert box.calls() == ["status mark-good booted"]  # committed once; no reboot
        assert box.gate()["missing"] == [] and box.gate()["seconds"] > 2.0
        assert not marker.marker_path(box.state).exists()
    finally:
        box.stop()
        emu.stop()
    assert box.events("update_installed") == [
        "installed k.raucb (version 0.4.0) from slot A to slot B at 2027-01-15 08:00:00 UTC"
    ]
    (committed,) = box.events("update_committed")
    assert committed.startswith("committed k.raucb (version 0.4.0) from slot A to slot B after ")
    assert box.events("update_failed") == []


def test_past_the_deadline_the_try_is_marked_bad_and_the_old_slot_records_why(tmp_path):
    b = TryBoot(
        tmp_path,
        deadline=4,
        uplink=f'[[uplink]]\nkind = "influxdb"\nurl = "http://127.0.0.1:{free_port()}"\ndatabase = "ocs_feeds"\n',
        status=True,  # RAUC answers as the image's backend does: A is primary throughout
    )
    try:
        b.pending("B")
        b.boot(partition=3, tryboot=True)  # no instrument ever answers; the InfluxDB is not there
        wait_for(lambda: "normal" in b.calls(), timeout=40, what="the reboot after the deadline")
        assert b.calls() == ["status mark-bad booted", "normal"]
        gate = b.gate()
        assert gate["state"] == "failed" and gate["seconds"] >= 4
        b.stop()
        (failed,) = b.events("update_failed")
        assert failed == (
            "not healthy within 4 s: instrument LSA23JD has delivered no reading; uplink uplink[0] has not connected"
        )
        assert marker.read(b.state).failure == failed

        b.boot(partition=2, tryboot=False)  # the firmware's default: slot A again
        wait_for(lambda: b.events("update_rolled_back"), timeout=30, what="the rollback event")
        b.stop()
        (rolled,) = b.events("update_rolled_back")
        assert rolled == f"back on slot A: k.raucb (version 0.4.0) from slot A to slot B was rolled back: {failed}"
        assert not marker.marker_path(b.state).exists()
        # the old slot's only update command: disarm the rolled-back slot's try (autoboot.txt [tryboot]);
        # run after the marker went (a restart meanwhile records nothing twice)
        wait_for(lambda: "status mark-bad other" in b.calls(), timeout=30, what="the disarm")
        assert b.calls() == ["status mark-bad booted", "normal", "status mark-bad other"]
        assert (b.primary.read_text(), len(b.events("update_rolled_back"))) == ("A\n", 1)
    finally:
        b.stop()


@pytest.mark.parametrize("instrument_back", [True, False], ids=["healthy", "unhealthy"])
def test_a_service_restarted_after_the_commit_leaves_the_committed_slot_alone(tmp_path, instrument_back):
    """The tryboot flag stays 1 until the next reboot. A restart on the committed try boot (a new config, a
    crash, the watchdog), healthy or not, must neither mark the slot bad (the backend would then point
    autoboot.txt's [all] at the old slot, and the reboot would go back to the old release) nor record
    update_committed again. RAUC's primary (its JSON status) says the try is committed."""
    b = TryBoot(tmp_path, deadline=3, status=True)
    emu = Emulator.ls372(seed=1, time_scale=1.0)
    try:
        b.pending("B")
        emu.listen_tcp("127.0.0.1", b.ls_port)
        b.boot(partition=3, tryboot=True)
        wait_for(lambda: b.gate().get("state") == "committed", timeout=40, what="the commit")
        b.stop()
        assert b.calls() == ["status mark-good booted"] and b.primary.read_text() == "B\n"
        if not instrument_back:
            emu.stop()  # unplugged while the service restarts: it would never be healthy again
        for _ in range(2):
            b.boot(partition=3, tryboot=True)  # the same boot: the device tree has not changed
            gate = wait_for(lambda: (g := b.gate()) and g, timeout=30, what="the panel")
            time.sleep(4)  # past the 3 s deadline
            gate = b.gate()
            assert gate["state"] == "idle" and gate["tryboot"] is True and "not judged again" in gate["verdict"]
            b.stop()
        assert b.calls() == ["status mark-good booted"] and b.primary.read_text() == "B\n"
        assert len(b.events("update_committed")) == 1 and b.events("update_failed") == []
    finally:
        b.stop()
        emu.stop()


@pytest.mark.parametrize("text", ["null", '{"bundle": "k", "started_at": "soon"}', ""])
def test_the_service_starts_whatever_the_marker_holds_and_says_so(tmp_path, text):
    """A marker that is JSON of another shape (or empty) stopped `kelvinpi run` on the old slot. (RAUC
    answers its status: primary A, the running slot, so the other slot's try is disarmed.)"""
    b = TryBoot(tmp_path, status=True)
    try:
        b.state.mkdir(parents=True)
        marker.marker_path(b.state).write_text(text)
        b.boot(partition=2, tryboot=False)
        health = wait_for(lambda: b.get("/api/v1/health"), timeout=30, what="the service up")
        assert b.proc.poll() is None and health["update"]["state"] == "idle"
        b.stop()
        (unknown,) = b.events("update_unknown")
        assert "not a pending-update marker" in unknown and "booted slot A normally" in unknown
        assert "status mark-bad other" in b.calls() and "slot B marked bad" in unknown  # no stale try of B
        (aside,) = b.state.glob("pending.json.unreadable-*")
        assert aside.read_text() == text and not marker.marker_path(b.state).exists()
    finally:
        b.stop()
