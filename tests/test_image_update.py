"""The A/B update pieces of the SD image that can be checked in seconds: RAUC's custom bootloader
backend (images/sd/overlay/usr/lib/kelvinpi/rauc-tryboot) against a device tree and autoboot.txt as
the Pi firmware leaves them, the bundle hook, the card layout and a signed bundle refused when
tampered with. (The qemu scenarios are `make image-update-test`.)"""

import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

SD = Path(__file__).resolve().parent.parent / "images" / "sd"
KEYS = SD.parent / "keys"
BACKEND = SD / "overlay/usr/lib/kelvinpi/rauc-tryboot"
AUTOBOOT = "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n"


class Board:
    """What the firmware hands the kernel (/chosen/bootloader) and the config FAT's autoboot.txt."""

    def __init__(self, root: Path, all_: int = 2, try_: int = 2) -> None:
        self.root = root
        self.dt = root / "dt"
        (self.dt / "chosen/bootloader").mkdir(parents=True)
        self.autoboot = root / "autoboot.txt"
        self.autoboot.write_text(AUTOBOOT.format(all_, try_))
        self.boot(2, tryboot=False)

    def boot(self, partition: int, tryboot: bool) -> None:
        (self.dt / "chosen/bootloader/partition").write_bytes(struct.pack(">I", partition))
        (self.dt / "chosen/bootloader/tryboot").write_bytes(struct.pack(">I", int(tryboot)))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(
            os.environ,
            KELVINPI_DEVICE_TREE=str(self.dt),
            KELVINPI_AUTOBOOT=str(self.autoboot),
            KELVINPI_DISK_BY_PARTUUID=str(self.root / "by-partuuid"),
        )
        return subprocess.run(["sh", str(BACKEND), *args], capture_output=True, text=True, env=env, timeout=30)

    def out(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def sections(self) -> tuple[str, str]:
        text = self.autoboot.read_text()
        assert "tryboot_a_b=1" in text, text
        all_, try_ = text.split("[tryboot]")
        return all_.rsplit("boot_partition=", 1)[1].strip(), try_.split("boot_partition=", 1)[1].strip()


def test_install_try_commit(tmp_path):
    """RAUC's install marks the target bad, writes it, makes it primary; the gate's mark-good on the try commits."""
    b = Board(tmp_path)
    assert b.out("get-primary") == "A" and b.out("get-current") == "A"
    assert (b.out("get-state", "A"), b.out("get-state", "B")) == ("good", "bad")
    b.out("set-state", "B", "bad")
    assert b.sections() == ("2", "2")
    b.out("set-primary", "B")
    assert b.sections() == ("2", "3")  # only a try boots B; every normal boot is still A
    assert b.out("get-primary") == "A" and b.out("get-state", "B") == "good"
    b.boot(3, tryboot=True)  # reboot "0 tryboot": the firmware took [tryboot]
    assert b.out("get-current") == "B"
    b.out("set-state", "B", "good")  # rauc status mark-good booted
    assert b.sections() == ("3", "3") and b.out("get-primary") == "B"
    assert not (tmp_path / "autoboot.txt.new").exists()


def test_try_marked_bad_goes_back(tmp_path):
    b = Board(tmp_path, 2, 3)
    b.boot(3, tryboot=True)
    b.out("set-state", "B", "bad")  # the gate's deadline passed: mark-bad booted
    assert b.sections() == ("2", "2")
    assert b.out("get-state", "B") == "bad" and b.out("get-primary") == "A"


def test_power_cut_during_the_try_leaves_the_old_slot_primary(tmp_path):
    """No commit happened: the next boot without the flag is [all]'s slot, and nothing was rewritten."""
    b = Board(tmp_path, 2, 3)
    before = b.autoboot.read_bytes()
    b.boot(2, tryboot=False)  # the flag is one-shot: after the cut the firmware boots [all]
    assert b.out("get-current") == "A" and b.out("get-primary") == "A"
    assert b.autoboot.read_bytes() == before


def test_mark_good_without_a_try_does_not_commit(tmp_path):
    b = Board(tmp_path, 2, 3)
    b.out("set-state", "B", "good")  # B not booted: nothing to commit
    assert b.sections() == ("2", "3")
    b.boot(3, tryboot=False)  # booted B but not on a try ([all] says A): refuse loudly
    proc = b.run("set-state", "B", "good")
    assert proc.returncode == 1 and "neither primary nor on a try" in proc.stderr
    assert b.sections() == ("2", "3")


def test_marking_the_primary_bad_switches_only_to_a_slot_that_holds_a_system(tmp_path):
    b = Board(tmp_path)
    parts = tmp_path / "by-partuuid"
    parts.mkdir()
    disk = [l for l in BACKEND.read_text().splitlines() if l.startswith("DISK_ID=")][0].split("=")[1]
    (parts / f"{disk}-03").write_bytes(bytes(512))  # slot B as flashed: zeros
    proc = b.run("set-state", "A", "bad")
    assert proc.returncode == 1 and "holds no system" in proc.stderr
    assert b.sections() == ("2", "2")
    (parts / f"{disk}-03").write_bytes(bytes(510) + b"\x55\xaa")  # a FAT boot sector
    b.out("set-state", "A", "bad")
    assert b.sections() == ("3", "3")


def test_firmware_file_forms_and_bad_input(tmp_path):
    b = Board(tmp_path)
    b.autoboot.write_text("tryboot_a_b=1\r\nboot_partition=3\r\n")  # no [all] header, CRLF, no [tryboot]
    assert b.out("get-primary") == "B" and b.out("get-state", "A") == "bad"
    b.autoboot.write_text("[all]\nboot_partition=9\n")
    proc = b.run("get-primary")
    assert proc.returncode == 1 and "no [all] boot_partition of slot A (2) or B (3)" in proc.stderr
    b.autoboot.write_text(AUTOBOOT.format(2, 2))
    for args, words in (
        (("set-primary", "C"), "unknown slot 'C'"),
        (("set-state", "A", "maybe"), "set-state needs good or bad"),
        (("frobnicate",), "unknown command 'frobnicate'"),
    ):
        proc = b.run(*args)
        assert proc.returncode == 1 and words in proc.stderr, (args, proc.stderr)
    shutil.rmtree(b.dt / "chosen")
    proc = b.run("get-current")
    assert proc.returncode == 1 and "did not come through the Raspberry Pi firmware" in proc.stderr


def test_bundle_hook_points_the_boot_slot_at_its_root(tmp_path):
    conf = tmp_path / "system.conf"
    conf.write_text(
        "[slot.rootfs.0]\ndevice=/dev/disk/by-partuuid/4b9e1c27-05\nbootname=A\n"
        "[slot.rootfs.1]\ndevice=/dev/disk/by-partuuid/4b9e1c27-06\nbootname=B\n"
    )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "cmdline.txt").write_text("console=tty0 root=PARTUUID=4b9e1c27-05 rw rootwait\n")
    env = dict(
        os.environ,
        RAUC_SYSTEM_CONFIG=str(conf),
        RAUC_SLOT_CLASS="bootfs",
        RAUC_SLOT_NAME="bootfs.1",
        RAUC_SLOT_PARENT="rootfs.1",
        RAUC_SLOT_MOUNT_POINT=str(mnt),
    )
    hook = ["sh", str(SD / "bundle-hook.sh"), "slot-post-install"]
    subprocess.run(hook, env=env, check=True, capture_output=True)
    assert (mnt / "cmdline.txt").read_text() == "console=tty0 root=PARTUUID=4b9e1c27-06 rw rootwait\n"
    (mnt / "cmdline.txt").write_text("console=tty0 rw\n")
    proc = subprocess.run(hook, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "no root=" in proc.stderr
    assert (mnt / "cmdline.txt").read_text() == "console=tty0 rw\n"


TOOLS = ["mkfs.vfat", "mcopy", "mdir", "mkfs.ext4", "debugfs", "sfdisk"]


@pytest.mark.skipif(any(not shutil.which(t) for t in TOOLS), reason=f"image tools missing: {TOOLS}")
@pytest.mark.image
def test_ab_layout(tmp_path):
    root = tmp_path / "rootfs"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/cmdline.txt").write_text("console=tty0 root=PARTUUID=4b9e1c27-05 rw\n")
    (root / "boot/firmware/bootcode.bin").write_bytes(b"\x00" * 64)
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("kelvinpi\n")
    img = tmp_path / "card.img"
    env = dict(os.environ, SOURCE_DATE_EPOCH="1760000000", BOOT_MIB_OVERRIDE="40", ROOT_MIB_OVERRIDE="80")
    subprocess.run(
        ["bash", str(SD / "assemble-image.sh"), str(root), str(img)], env=env, check=True, capture_output=True
    )
    table = json.loads(subprocess.run(["sfdisk", "-J", str(img)], capture_output=True, text=True).stdout)
    table = table["partitiontable"]
    parts = table["partitions"]
    assert table["id"] == "0x4b9e1c27"
    assert [p["type"] for p in parts] == ["c", "c", "c", "f", "83", "83", "83"]
    assert parts[0].get("bootable") and parts[0]["start"] == 8192
    ext = parts[3]
    assert all(ext["start"] < p["start"] and p["start"] + p["size"] <= ext["start"] + ext["size"] for p in parts[4:])
    assert parts[6]["start"] + parts[6]["size"] == ext["start"] + ext["size"]  # data is last: it can grow
    mt = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    off = parts[0]["start"] * 512
    auto = subprocess.run(["mtype", "-i", f"{img}@@{off}", "::/autoboot.txt"], capture_output=True, text=True, env=mt)
    assert auto.stdout == AUTOBOOT.format(2, 2)
    ls = subprocess.run(["mdir", "-b", "-i", f"{img}@@{off}", "::/"], capture_output=True, text=True, env=mt).stdout
    assert "bootcode.bin" in ls
    off = parts[1]["start"] * 512
    cmd = subprocess.run(["mtype", "-i", f"{img}@@{off}", "::/cmdline.txt"], capture_output=True, text=True, env=mt)
    assert "root=PARTUUID=4b9e1c27-05" in cmd.stdout
    with open(img, "rb") as f:  # slot B is empty: zeros only
        for p in (parts[2], parts[5]):
            f.seek(p["start"] * 512)
            assert f.read(1 << 20).count(0) == 1 << 20


@pytest.mark.skipif(not shutil.which("rauc") or not shutil.which("mksquashfs"), reason="rauc/squashfs-tools missing")
@pytest.mark.slow
def test_bundle_signed_and_refused_when_tampered(tmp_path):
    root = tmp_path / "rootfs"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/cmdline.txt").write_text("console=tty0 root=PARTUUID=4b9e1c27-05 rw\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    out = tmp_path / "k.raucb"
    env = dict(os.environ, SOURCE_DATE_EPOCH="1760000000", VERSION="9.9-test", BOOT_MIB_OVERRIDE="40")
    subprocess.run(["bash", str(SD / "make-bundle.sh"), str(root), str(out)], env=env, check=True, capture_output=True)
    keyring = KEYS / "dev-DO-NOT-SHIP.cert.pem"
    info = subprocess.run(
        ["rauc", "info", f"--keyring={keyring}", "--output-format=json", str(out)], capture_output=True, text=True
    )
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["compatible"] == "kelvinpi-rpi-arm64" and meta["version"] == "9.9-test"
    bad = tmp_path / "cut.raucb"
    bad.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    other = tmp_path / "other.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "o.key"), "-out",
         str(other), "-days", "2", "-subj", "/CN=someone else"],
        check=True, capture_output=True,
    )  # fmt: skip
    for bundle, ring in ((bad, keyring), (out, other)):
        proc = subprocess.run(["rauc", "info", f"--keyring={ring}", str(bundle)], capture_output=True, text=True)
        assert proc.returncode != 0, (bundle, ring)


def test_a_recorded_rollback_disarms_the_try_of_the_rolled_back_slot(tmp_path):
    """Power was cut during the try of B (the flag does not survive it): A boots normally, the rollback is
    recorded, and ``rauc status mark-bad other`` (RAUC calls the backend's ``set-state B bad``) points
    ``[tryboot]`` back at A, so that no later try reboot starts the rolled-back release unjudged."""
    from appliance.update import marker
    from appliance.update.devicetree import BootInfo
    from appliance.update.rollback import reconcile

    b = Board(tmp_path, all_=2, try_=3)  # the install armed the try of B; the try never committed
    state = tmp_path / "state"
    marker.write(state, marker.PendingUpdate("k.raucb", "0.4.0", "A", "B", 1.8e9, "an earlier boot", recorded=True))
    events: list[tuple[str, str]] = []
    got = reconcile(
        state,
        BootInfo(2, False),
        lambda k, d: events.append((k, d)),
        primary=lambda: b.out("get-primary"),
        forget_other=lambda: b.out("set-state", "B", "bad"),
    )
    assert got == "update_rolled_back" and [k for k, _ in events] == ["update_rolled_back"]
    assert b.sections() == ("2", "2") and b.out("get-state", "B") == "bad"
    assert marker.read(state) is None


def test_a_normal_boot_of_the_updates_slot_that_is_not_primary_is_not_called_committed(tmp_path):
    """A firmware that started [tryboot] without the flag (an old bootloader) or a hand-made ``reboot 3``
    boots B unjudged: RAUC's primary is still A, so the event says so and claims no commit."""
    from appliance.update import marker
    from appliance.update.devicetree import BootInfo
    from appliance.update.rollback import reconcile

    b = Board(tmp_path, all_=2, try_=3)
    b.boot(3, tryboot=False)
    state = tmp_path / "state"
    marker.write(state, marker.PendingUpdate("k.raucb", "0.4.0", "A", "B", 1.8e9, "an earlier boot", recorded=True))
    events: list[tuple[str, str]] = []
    got = reconcile(state, BootInfo(3, False), lambda k, d: events.append((k, d)), primary=lambda: b.out("get-primary"))
    assert got == "update_unknown" and [k for k, _ in events] == ["update_unknown"], events
    assert "RAUC's primary is slot A" in events[0][1] and "never judged" in events[0][1]
    assert marker.read(state) is None and b.sections() == ("2", "3")


def test_an_unreadable_marker_on_a_normal_boot_disarms_the_other_slots_try(tmp_path, monkeypatch):
    """A marker that cannot be read left ``[tryboot]`` naming the other slot: a later try reboot (a stale
    request, a hand-made one) would start that release with no record of it. On a normal boot of the
    primary it is disarmed as after a rollback, and the event says so; not on a boot of a slot that is
    not the primary (that would undo a commit), nor on the boot that wrote the marker (its try reboot is
    on the way), nor on a try (the gate judges it). The marker is set aside whatever RAUC does."""
    from appliance.update import marker
    from appliance.update.devicetree import BootInfo
    from appliance.update.rollback import reconcile

    def broken() -> None:
        raise OSError("rauc is not running")

    def unparsable() -> str:
        raise TypeError("'int' object is not iterable")

    monkeypatch.setattr(marker, "boot_id", lambda: "this-boot-1234")
    cases = [  # (boot, RAUC's primary, marker text, forget_other raises, [tryboot] after, the event says)
        (
            "normal A",
            BootInfo(2, False),
            "A",
            '{"boot_id": "an earlier boot", "cut sh',
            False,
            "2",
            "slot B marked bad",
        ),
        (
            "normal B",
            BootInfo(3, False),
            "A",
            '{"cut sh',
            False,
            "3",
            "slot A NOT marked bad: RAUC's primary is slot A",
        ),
        ("no primary", BootInfo(2, False), None, "", False, "3", "NOT marked bad: RAUC cannot say which"),
        ("rauc down", BootInfo(2, False), "A", "[]", True, "3", "slot B NOT marked bad: rauc is not running"),
        ("rauc garbled", BootInfo(2, False), unparsable, "[]", False, "3", "NOT marked bad: RAUC cannot say which"),
        ("this boot", BootInfo(2, False), "A", '{"boot_id": "this-boot-1234", "cut', False, "3", "goes ahead"),
        ("try", BootInfo(3, True), "A", "", False, "3", "it commits only if RAUC shows it is on trial"),
    ]
    for name, boot, primary_slot, text, fails, tryboot_after, says in cases:
        b = Board(tmp_path / name, all_=2, try_=3)
        state = tmp_path / name / "state"
        state.mkdir()
        marker.marker_path(state).write_text(text)
        events: list[tuple[str, str]] = []

        def disarm(b=b, boot=boot, state=state) -> str:
            assert not marker.marker_path(state).exists(), "RAUC asked before the marker was set aside"
            return b.out("set-state", boot.other, "bad")

        got = reconcile(
            state,
            boot,
            lambda k, d, events=events: events.append((k, d)),
            primary=primary_slot if callable(primary_slot) else lambda p=primary_slot: p,
            forget_other=broken if fails else disarm,
        )
        assert got == "update_unknown" and [k for k, _ in events] == ["update_unknown"], (name, events)
        assert says in events[0][1], (name, events)
        assert b.sections() == ("2", tryboot_after), name
        assert not marker.marker_path(state).exists() and len(list(state.glob("pending.json.unreadable-*"))) == 1


def test_a_rollback_whose_disarm_fails_is_still_recorded(tmp_path):
    from appliance.update import marker
    from appliance.update.devicetree import BootInfo
    from appliance.update.rollback import reconcile

    state = tmp_path / "state"
    marker.write(state, marker.PendingUpdate("k.raucb", "0.4.0", "A", "B", 1.8e9, "an earlier boot", recorded=True))
    events: list[str] = []

    def broken() -> None:
        raise OSError("rauc is not running")

    assert (
        reconcile(state, BootInfo(2, False), lambda k, d: events.append(k), forget_other=broken) == "update_rolled_back"
    )
    assert events == ["update_rolled_back"] and marker.read(state) is None


DBUS_TOOLS = ["dbus-daemon", "dbus-send", "dbus-test-tool", "setpriv"]


@pytest.mark.skipif(any(not shutil.which(t) for t in DBUS_TOOLS), reason=f"missing one of {DBUS_TOOLS}")
@pytest.mark.skipif(os.geteuid() != 0, reason="asks the bus as other users (setpriv): needs root")
@pytest.mark.slow
def test_only_root_and_the_service_user_may_ask_rauc_over_dbus():
    """A real dbus-daemon with the system bus's default policy, Debian's rauc-service policy (anyone may
    ask RAUC; tests/data/dbus, as the image ships it) and then the image's own: root and the service's
    user reach RAUC's name, any other local user is refused by the bus. (The service's user stands in
    as uid 65534: a policy names a user that exists on the machine.)"""
    import pwd
    import tempfile

    service_user = pwd.getpwuid(65534).pw_name
    ours = (SD / "overlay/etc/dbus-1/system.d/kelvinpi-rauc.conf").read_text()
    assert 'user="kelvinpi"' in ours
    d = Path(tempfile.mkdtemp(prefix="kelvinpi-dbus-", dir="/tmp"))
    d.chmod(0o755)
    sock = d / "bus"
    (d / "50-rauc.conf").write_text((Path(__file__).parent / "data/dbus/de.pengutronix.rauc.conf").read_text())
    (d / "60-kelvinpi.conf").write_text(ours.replace('user="kelvinpi"', f'user="{service_user}"'))
    (d / "bus.conf").write_text(f"""<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  </policy>
  <include>{d / "50-rauc.conf"}</include>
  <include>{d / "60-kelvinpi.conf"}</include>
</busconfig>
""")
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=f"unix:path={sock}")
    bus = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={d / 'bus.conf'}"], env=env)
    rauc = None
    try:
        deadline = time.monotonic() + 30  # bounded; generous for a loaded CI machine
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        sock.chmod(0o777)
        # RAUC's name, owned by root as rauc-service owns it; it answers every call
        rauc = subprocess.Popen(["dbus-test-tool", "echo", "--session", "--name=de.pengutronix.rauc"], env=env)

        def ask(uid: int) -> subprocess.CompletedProcess:
            who = [] if uid == 0 else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
            return subprocess.run(
                [*who, "dbus-send", "--session", "--print-reply", "--reply-timeout=5000",
                 "--dest=de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer.InstallBundle", "string:/x.raucb"],
                env=env, capture_output=True, text=True, timeout=30,
            )  # fmt: skip

        deadline = time.monotonic() + 30
        while ask(0).returncode != 0 and time.monotonic() < deadline:  # until the name is owned
            time.sleep(0.1)
        assert ask(0).returncode == 0, ask(0).stderr
        assert ask(65534).returncode == 0, ask(65534).stderr  # the service's user
        other = ask(pwd.getpwnam("daemon").pw_uid)  # another local user (the bus admits only named users)
        assert other.returncode != 0 and "AccessDenied" in other.stderr, (other.returncode, other.stderr)
    finally:
        for p in (rauc, bus):
            if p is not None:
                p.terminate()
                p.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def test_an_update_installed_on_a_committed_try_boot_survives_a_restart_before_its_reboot(tmp_path):
    """B's try committed; on the same boot (the tryboot flag still 1) the next update, B -> A, is installed;
    the service restarts before the try reboot: nothing is settled, the marker and the armed try stay."""
    from appliance.update import marker
    from appliance.update.devicetree import BootInfo
    from appliance.update.rollback import reconcile

    b = Board(tmp_path, all_=3, try_=2)  # B committed, then the install armed the try of A
    b.boot(3, tryboot=True)
    state = tmp_path / "state"
    this_boot = marker.boot_id()
    marker.write(state, marker.PendingUpdate("k.raucb", "0.4.0", "B", "A", 1.8e9, this_boot))
    events: list[str] = []
    got = reconcile(
        state,
        BootInfo(3, True),
        lambda k, d: events.append(k),
        primary=lambda: b.out("get-primary"),
        forget_other=lambda: b.out("set-state", "A", "bad"),
    )
    assert got is None and events == [] and b.sections() == ("3", "2")
    assert marker.read(state) is not None and marker.read(state).to_slot == "A"


@pytest.mark.parametrize("rauc_says", ["B", None], ids=["B is primary", "rauc cannot say"])
def test_a_rollback_seen_from_a_slot_that_is_not_primary_leaves_the_slots_alone(tmp_path, rauc_says):
    """B was committed (power cut before the marker went), then a hand-made boot of A: the event is
    recorded, but marking "other" (B, the primary) bad would make A primary again: not done."""
    from appliance.update import marker
    from appliance.update.devicetree import BootInfo
    from appliance.update.rollback import reconcile

    b = Board(tmp_path, all_=3, try_=3)
    state = tmp_path / "state"
    marker.write(state, marker.PendingUpdate("k.raucb", "0.4.0", "A", "B", 1.8e9, "an earlier boot", recorded=True))
    calls: list[str] = []
    got = reconcile(
        state,
        BootInfo(2, False),
        lambda k, d: None,
        primary=lambda: rauc_says,
        forget_other=lambda: calls.append(b.out("set-state", "B", "bad")),
    )
    assert got == "update_rolled_back" and calls == [] and b.sections() == ("3", "3")
    assert marker.read(state) is None


TRY_ABANDON = SD / "overlay/usr/lib/kelvinpi/try-abandon"


@pytest.mark.parametrize(
    "tryboot, reboots", [(1, True), (0, False), (None, False)], ids=["try", "normal boot", "not the Pi firmware"]
)
def test_emergency_mode_on_a_try_reboots_into_the_old_slot_and_elsewhere_gives_the_shell(tmp_path, tryboot, reboots):
    """A try that falls into emergency mode would stay there (PID 1 feeds the watchdog; try-deadline needs
    the mounts): try-abandon, run before the shell, reboots; the reboot clears the one-shot try flag."""
    dt = tmp_path / "dt/chosen/bootloader"
    dt.mkdir(parents=True)
    if tryboot is not None:
        (dt / "tryboot").write_bytes(struct.pack(">I", tryboot))
    marker = tmp_path / "rebooted"
    env = dict(os.environ, KELVINPI_DEVICE_TREE=str(tmp_path / "dt"), KELVINPI_REBOOT=f"touch {marker}")
    done = subprocess.run(["sh", str(TRY_ABANDON), "emergency"], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert marker.exists() == reboots
    if reboots:
        assert "this try boot of an update reached emergency mode: rebooting into the slot that worked" in done.stderr
    else:
        assert done.stderr == ""
    for unit in ("emergency", "rescue"):  # both modes run it before their shell; a failure never blocks the shell
        conf = (SD / f"overlay/etc/systemd/system/{unit}.service.d/kelvinpi-try.conf").read_text()
        assert f"ExecStartPre=-/usr/lib/kelvinpi/try-abandon {unit}" in conf


@pytest.mark.parametrize(
    "out",
    [
        "",
        "not json",
        "[]",
        '{"boot_primary": null, "slots": []}',
        '{"boot_primary": "rootfs.0", "slots": 1}',
        '{"boot_primary": "rootfs.0", "slots": [1, {"rootfs.1": {"bootname": "B"}}]}',
        '{"boot_primary": "rootfs.0", "slots": [{"rootfs.0": {"bootname": 3}}]}',
    ],
)
def test_rauc_status_of_another_shape_names_no_primary(out):
    """Any answer but a slot list naming the primary's bootname is "cannot say" (a TypeError from
    ``"slots": 1`` escaped into the start-up's update check: red team)."""
    from appliance.update.primary import parse_primary

    assert parse_primary(out) is None


def test_rauc_status_names_the_primary():
    from appliance.update.primary import parse_primary

    out = '{"boot_primary": "rootfs.1", "slots": [{"rootfs.0": {"bootname": "A"}}, {"rootfs.1": {"bootname": "B"}}]}'
    assert parse_primary(out) == "B"
