"""``kelvinpi update FILE`` with real RAUC bundles (issue 28): refused bundles change nothing and say why in
one line; a good one is installed, marked and rebooted into once.

``rauc info`` is the real RAUC on real bundles signed by a CA made here. ``rauc install`` is not run
here (it needs RAUC's service and a real A/B slot layout: the image's qemu scenarios run it); the
``rauc`` argv points at a small script that runs the real ``rauc info`` and records the install.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from appliance.update import marker
from appliance.update.devicetree import write_boot_info

from .conftest import ROOT
from .support.bundles import fake_rauc, make_bundle, make_ca, need_rauc, recorder, truncated, unsigned

pytestmark = pytest.mark.slow  # rauc bundle and openssl, subprocesses


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    need_rauc()
    d = tmp_path_factory.mktemp("bundles")
    key, cert = make_ca(d, "lab")
    other_key, other_cert = make_ca(d, "other")
    good = make_bundle(d, "good", key, cert, version="0.4.0")
    return {
        "keyring": cert,
        "good": good,
        "other CA": make_bundle(d, "other", other_key, other_cert),
        "truncated": truncated(good, d / "truncated.raucb"),
        "unsigned": unsigned(d, "unsigned"),
        "wrong compatible": make_bundle(d, "x86", key, cert, compatible="kelvinpi-pc-amd64"),
        "plain format": make_bundle(d, "plain", key, cert, fmt="plain"),
        "missing": d / "no-such-bundle.raucb",
        "directory": d / "good.content",
    }


class Box:
    """A config whose [update] commands are real scripts recording what they were asked."""

    def __init__(self, tmp_path, keyring, install_rc: int = 0) -> None:
        self.log = tmp_path / "commands.log"
        self.log.write_text("")
        rauc = fake_rauc(tmp_path / "rauc", self.log, install_rc)
        reboot = recorder(tmp_path / "reboot", self.log)
        self.dt, self.state = tmp_path / "dt", tmp_path / "state"
        write_boot_info(self.dt, partition=2, tryboot=False)  # slot A booted, normally
        self.config = tmp_path / "kelvinpi.toml"
        self.config.write_text(
            '[[instrument]]\nmodel = "372"\nname = "LSA23JD"\ntransport = "tcp"\nhost = "127.0.0.1"\nport = 7777\n'
            f'[update]\nrauc = ["{rauc}"]\nkeyring = "{keyring}"\nreboot_try = ["{reboot}", "try"]\n'
            f'reboot = ["{reboot}", "normal"]\ndevice_tree = "{self.dt}"\nstate_dir = "{self.state}"\n'
        )

    def update(self, bundle) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "appliance.cli", "update", str(bundle), "--config", str(self.config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


def test_a_signed_bundle_is_installed_marked_and_rebooted_into_once(tmp_path, bundles):
    box = Box(tmp_path, bundles["keyring"])
    done = box.update(bundles["good"])
    assert done.returncode == 0, done.stderr
    assert "version 0.4.0 for kelvinpi-rpi-arm64, signed by CN = kelvinpi test lab" in done.stdout
    assert "40% Copying image to rootfs.1" in done.stdout  # RAUC's progress, printed as it comes
    assert "installed into slot B" in done.stdout
    calls = box.calls()
    (copy,) = {c.split()[-1] for c in calls[:2]}  # checked and installed: the same copy, in state_dir
    assert copy.startswith(f"{box.state}/incoming-") and copy.endswith(".raucb")
    assert calls[0] == f"info --keyring={bundles['keyring']} {copy}"
    assert calls[1:] == [f"install {copy}", "try"]  # install, then the try reboot, nothing else
    assert [p.name for p in box.state.iterdir()] == ["pending.json"]  # the copy is gone
    pending = json.loads((box.state / "pending.json").read_text())
    assert pending["bundle"] == "good.raucb" and pending["bundle_version"] == "0.4.0"
    assert (pending["from_slot"], pending["to_slot"]) == ("A", "B")
    assert pending["recorded"] is False and pending["failure"] is None  # the try boot records update_installed
    assert not list(box.state.glob(".*tmp"))  # written atomically: no temporary file left


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("unsigned", "Signature size is 0 (a truncated or unsigned file)"),
        ("other CA", "signature verification failed"),
        ("truncated", "exceeds bundle size (a truncated or unsigned file)"),
        ("wrong compatible", "it is for 'kelvinpi-pc-amd64', this appliance is 'kelvinpi-rpi-arm64'"),
        ("plain format", "bundle format 'plain': only 'verity' bundles are installed"),
        ("missing", "no such file"),
        ("directory", "a directory, not a bundle file"),
    ],
)
def test_a_bad_bundle_is_refused_in_one_line_and_nothing_changes(tmp_path, bundles, kind, reason):
    box = Box(tmp_path, bundles["keyring"])
    done = box.update(bundles[kind])
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"kelvinpi update: refused update bundle {bundles[kind]}: ")
    assert reason in lines[0]
    assert all(c.startswith("info ") for c in box.calls())  # no install, no reboot
    assert not box.state.exists() or not list(box.state.iterdir())  # no marker, no copy left


def test_a_failed_install_writes_no_marker_and_does_not_reboot(tmp_path, bundles):
    box = Box(tmp_path, bundles["keyring"], install_rc=1)
    done = box.update(bundles["good"])
    assert done.returncode == 1
    assert "rauc install failed (exit 1): LastError: Installation error: failed to write slot" in done.stderr
    assert "slot A still boots" in done.stderr
    assert [c.split()[0] for c in box.calls()] == ["info", "install"]
    assert not (box.state / "pending.json").exists()


def test_a_missing_keyring_is_named(tmp_path, bundles):
    box = Box(tmp_path, tmp_path / "no-keyring.pem")
    done = box.update(bundles["good"])
    assert done.returncode == 2 and "the keyring" in done.stderr and "no-keyring.pem is missing" in done.stderr
    assert box.calls() == []


def test_no_update_is_installed_on_a_try_boot(tmp_path, bundles):
    """Installing while the new slot is on trial would overwrite the slot the appliance falls back to."""
    box = Box(tmp_path, bundles["keyring"])
    write_boot_info(box.dt, partition=3, tryboot=True)
    done = box.update(bundles["good"])
    assert done.returncode == 2
    assert "this boot is the try of slot B, not committed yet: installing now would overwrite slot A" in done.stderr
    assert box.calls() == ["status --output-format=json"] and not box.state.exists()  # RAUC asked, nothing changed


def test_no_second_update_is_installed_while_the_first_waits_for_its_try_reboot(tmp_path, bundles):
    """A marker written on this boot: its update is installed and the try reboot has not happened."""
    box = Box(tmp_path, bundles["keyring"])
    first = marker.PendingUpdate("good.raucb", "0.4.0", "A", "B", 1.8e9, marker.boot_id())
    marker.write(box.state, first)
    done = box.update(bundles["good"])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert (
        "good.raucb (version 0.4.0) from slot A to slot B was installed on this boot and waits for its try reboot"
        in (done.stderr)
    )
    assert box.calls() == [] and marker.read(box.state) == first


def test_the_file_checked_is_the_file_installed(tmp_path, bundles):
    """The file given is replaced right after RAUC checked it (a race won): the install still gets what was
    checked, because both ran on the appliance's own copy."""
    d = tmp_path / "race"
    d.mkdir()
    key, cert = make_ca(d, "lab")
    good = make_bundle(d, "good", key, cert, version="0.4.0")
    evil = make_bundle(d, "evil", key, cert, compatible="kelvinpi-x86-64", version="6.6.6", fmt="plain")
    given = tmp_path / "incoming.raucb"
    shutil.copy(good, given)
    box = Box(tmp_path, cert)
    real = shutil.which("rauc")
    recorder(
        tmp_path / "rauc",
        box.log,
        f'case "$1" in\n  info) {real} "$@"; rc=$?; cp {evil} {given}; exit $rc;;\n'
        f'  install) sha256sum "$2" >> "{box.log}";;\nesac\nexit 0',
    )
    done = box.update(given)
    assert done.returncode == 0, done.stderr
    installed_sha = box.calls()[2].split()[0]
    assert (
        installed_sha == hashlib.sha256(good.read_bytes()).hexdigest() != hashlib.sha256(given.read_bytes()).hexdigest()
    )
    pending = marker.read(box.state)
    assert (pending.bundle, pending.bundle_version) == ("incoming.raucb", "0.4.0")


@pytest.mark.parametrize(
    "caps, refused",
    [(0x03, "TRYBOOT_A_B and tryboot"), (0x0B, "TRYBOOT_A_B"), (0x0F, None), (b"\x00\x0f\x01", "malformed")],
    ids=["neither", "no A/B", "both", "malformed"],
)
def test_a_pi4_bootloader_that_cannot_try_refuses_the_install_and_names_its_version(tmp_path, bundles, caps, refused):
    """A Pi 4/5 EEPROM without TRYBOOT_A_B (bit 2) or tryboot (bit 3) would start slot A again after the try
    reboot: the update would look rolled back for no reason. The install is refused before RAUC writes."""
    box = Box(tmp_path, bundles["keyring"])
    write_boot_info(box.dt, partition=2, tryboot=False)
    base = box.dt / "chosen" / "bootloader"
    (base / "capabilities").write_bytes(caps if isinstance(caps, bytes) else caps.to_bytes(4, "big"))
    (base / "version").write_bytes(b"a5e1b95f 2021-04-29\0")
    done = box.update(bundles["good"])
    if refused is None:
        assert done.returncode == 0, done.stderr
        assert "install" in [c.split()[0] for c in box.calls()]
        return
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    if refused == "malformed":  # refused in one line, no traceback
        assert "cannot tell whether this Pi's bootloader can try an update: " in done.stderr
        assert "capabilities: 3 bytes, expected a big-endian u32" in done.stderr
        assert "install" not in [c.split()[0] for c in box.calls()]
        return
    assert f"version a5e1b95f 2021-04-29, capabilities 0x{caps:x}) lacks {refused}:" in done.stderr
    assert "update the bootloader first" in done.stderr
    assert "install" not in [c.split()[0] for c in box.calls()] and not box.state.exists()
