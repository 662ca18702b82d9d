"""The SD image pieces that can be checked in seconds: the assembler on a tiny fake rootfs,
the systemd units, the udev rules. (The full build and qemu boot are `make image image-test`.)"""

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SD = Path(__file__).resolve().parent.parent / "images" / "sd"
TOOLS = ["mkfs.vfat", "mcopy", "mdir", "mkfs.ext4", "debugfs", "sfdisk"]
missing = [t for t in TOOLS if not shutil.which(t)]


def fake_rootfs(root: Path) -> None:
    (root / "boot/firmware/overlays").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text("arm_64bit=1\nenable_uart=1\n")
    (root / "boot/firmware/cmdline.txt").write_text("console=tty0 root=PARTUUID=4b9e1c27-05 ro rootwait\n")
    (root / "boot/firmware/overlays/disable-bt.dtbo").write_bytes(b"\xd0\x0d\xfe\xed" * 8)
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("kelvinpi\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "usr/bin/tool", 0o755)
    (root / "usr/bin/link").symlink_to("tool")


@pytest.mark.skipif(
    bool(missing), reason=f"image tools missing: {missing} (apt-get install dosfstools mtools e2fsprogs fdisk)"
)
@pytest.mark.image
def test_assemble_layout_and_reproducibility(tmp_path):
    root = tmp_path / "rootfs"
    fake_rootfs(root)
    env = dict(os.environ, SOURCE_DATE_EPOCH="1760000000", BOOT_MIB_OVERRIDE="40", ROOT_MIB_OVERRIDE="80")
    digests = []
    for run in range(2):
        out = tmp_path / f"run{run}.img"
        subprocess.run(
            ["bash", str(SD / "assemble-image.sh"), str(root), str(out)],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
        (root / "etc/hostname").touch()  # a newer mtime in the tree must not change the image
    assert digests[0] == digests[1]
    img = tmp_path / "run0.img"
    layout = json.loads(subprocess.run(["sfdisk", "-J", str(img)], capture_output=True, text=True, check=True).stdout)
    parts = layout["partitiontable"]["partitions"]
    assert layout["partitiontable"]["label"] == "dos"
    # p1 config FAT, p2/p3 boot A/B, p4 extended: p5/p6 root A/B, p7 data (tests/test_image_update.py)
    assert [p["type"] for p in parts] == ["c", "c", "c", "f", "83", "83", "83"] and parts[0]["start"] == 8192
    off = parts[1]["start"] * 512
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{img}@@{off}", "::/"],
        capture_output=True,
        text=True,
        env=dict(os.environ, MTOOLS_SKIP_CHECK="1"),
        check=True,
    ).stdout
    assert "config.txt" in listing and "cmdline.txt" in listing and "overlays" in listing
    # extract root A and data and list them with debugfs
    for i, expect in ((4, ["etc", "usr", "boot", "data"]), (6, ["lost+found"])):
        part = tmp_path / f"p{i}.ext4"
        with open(img, "rb") as f, open(part, "wb") as g:
            f.seek(parts[i]["start"] * 512)
            g.write(f.read(parts[i]["size"] * 512))
        ls = subprocess.run(["debugfs", "-R", "ls -l /", str(part)], capture_output=True, text=True).stdout
        for name in expect:
            assert re.search(rf"\s{re.escape(name)}\s*$", ls, re.M), (name, ls)
    # boot files went to the FAT only, not into the root filesystem
    ls = subprocess.run(
        ["debugfs", "-R", "ls /boot/firmware", str(tmp_path / "p4.ext4")], capture_output=True, text=True
    ).stdout
    assert "config.txt" not in ls
    labels = subprocess.run(
        ["debugfs", "-R", "stats", str(tmp_path / "p6.ext4")], capture_output=True, text=True
    ).stdout
    assert "Filesystem volume name:   data" in labels


UNITS = sorted((SD / "overlay/etc/systemd/system").glob("*.service"))


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze missing (apt-get install systemd)")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_units_verify(unit, tmp_path):
    # systemd-analyze verify checks the unit's syntax and that its commands exist: give it stand-ins
    text = unit.read_text()
    for cmd in set(re.findall(r"^Exec\w+=[-+!@:]*(/\S+)", text, re.M)):
        stub = tmp_path / "root" / cmd.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        os.chmod(stub, 0o755)
        text = text.replace(cmd, str(stub))
    copy = tmp_path / unit.name
    copy.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    problems = [
        l
        for l in (proc.stdout + proc.stderr).splitlines()
        if unit.name in l and "Failed to" not in l or "Unknown" in l or "Invalid" in l
    ]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_kelvinpi_unit_contract():
    unit = (SD / "overlay/etc/systemd/system/kelvinpi.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ReadWritePaths=/data",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "User=kelvinpi",
    ):
        assert line in unit, line
    wd = (SD / "overlay/etc/systemd/system.conf.d/watchdog.conf").read_text()
    assert "RuntimeWatchdogSec=" in wd


SCRIPTS = sorted(SD.glob("*.sh")) + sorted((SD / "overlay/usr/local/sbin").iterdir())


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_scripts_parse(script):
    """The build and boot-test scripts only run in `make image image-test` (an hour): a syntax slip
    should not wait for that. Each is parsed by the shell its #! names."""
    shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
    proc = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_boot_test_watchdog_override_is_test_only():
    """The boot test lengthens the watchdog for emulation on the kernel command line; the image keeps its own."""
    wd = (SD / "overlay/etc/systemd/system.conf.d/watchdog.conf").read_text()
    assert re.search(r"^RuntimeWatchdogSec=15$", wd, re.M)
    boot = (SD / "boot-test.sh").read_text()
    assert "systemd.watchdog_sec=$TEST_WATCHDOG_SEC" in boot and "-action watchdog=debug" in boot


RULE_KEY = re.compile(
    r"^(ACTION|SUBSYSTEM|SUBSYSTEMS|ATTR\{[\w/]+\}|ATTRS\{\w+\}|ENV\{\w+\}|KERNEL|DRIVER|DRIVERS|"
    r"SYMLINK|MODE|GROUP|OWNER|RUN\{\w+\}|RUN|TAG|PROGRAM|IMPORT\{\w+\}|GOTO|LABEL)"
    r'(==|!=|\+=|=|:=)"[^"]*"$'
)


def test_udev_rules_syntax_and_ids():
    text = (SD / "overlay/etc/udev/rules.d/99-lakeshore.rules").read_text()
    rules = [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert rules
    for rule in rules:
        for part in [p.strip() for p in rule.split(",")]:
            assert RULE_KEY.match(part), f"bad udev term {part!r} in: {rule}"
    assert 'ATTRS{idVendor}=="1fb9"' in text and 'ATTRS{idProduct}=="0205"' in text and '"0305"' in text
    assert "lakeshore/240-$env{ID_SERIAL_SHORT}" in text and "lakeshore/372-$env{ID_SERIAL_SHORT}" in text
    assert (SD / "overlay/usr/local/sbin/kelvinpi-usb-bind").read_text().count("new_id") == 1


def test_manifest_is_content_only_and_sorted(tmp_path):
    import sys

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        fake_rootfs(root)
    os.utime(b / "etc/hostname", (1, 1))  # times differ: manifests must not

    def manifest(root):
        return subprocess.run(
            [sys.executable, str(SD / "manifest.py"), str(root)], capture_output=True, text=True, check=True
        ).stdout

    ma, mb = manifest(a), manifest(b)
    assert ma == mb and ma.splitlines() == sorted(ma.splitlines())
    assert "/usr/bin/link\tl\t0777" in ma and "/etc/hostname\tf\t" in ma
    (b / "etc/hostname").write_text("other\n")
    assert manifest(b) != ma


def fake_tryboot_module(root: Path) -> Path:
    """What build-tryboot-module.sh leaves in a rootfs: the module, its modules.dep line, the load file."""
    mods = root / "usr/lib/modules/6.0.0-test"
    (mods / "updates").mkdir(parents=True)
    (mods / "updates/kelvinpi_tryboot.ko").write_bytes(b"not an ELF")
    (mods / "modules.dep").write_text("kernel/drivers/x.ko.xz:\nupdates/kelvinpi_tryboot.ko:\n")
    (root / "etc/modules-load.d").mkdir(parents=True)
    (root / "etc/modules-load.d/kelvinpi-tryboot.conf").write_text("# why\nkelvinpi_tryboot\n")
    # and the overlay's own try-abandon with its emergency/rescue drop-ins, as customize.sh copies them
    for rel in (
        "usr/lib/kelvinpi/try-abandon",
        "etc/systemd/system/emergency.service.d/kelvinpi-try.conf",
        "etc/systemd/system/rescue.service.d/kelvinpi-try.conf",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SD / "overlay" / rel, root / rel)
    # and PID 1 driving the hardware watchdog, as the overlay sets it
    (root / "etc/systemd/system.conf.d").mkdir(parents=True, exist_ok=True)
    shutil.copy2(SD / "overlay/etc/systemd/system.conf.d/watchdog.conf", root / "etc/systemd/system.conf.d")
    # and the boot's units enabled, as customize.sh's systemctl enable leaves them
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in BOOT_UNITS:
        shutil.copy2(SD / "overlay/etc/systemd/system" / unit, root / "etc/systemd/system" / unit)
        (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    return mods


BOOT_UNITS = ("kelvinpi-firstboot.service", "kelvinpi.service")


def test_an_image_whose_pid_1_does_not_drive_the_watchdog_is_refused(tmp_path):
    """Without RuntimeWatchdogSec a hung PID 1 or kernel never resets the Pi, and a try that hangs so
    never goes back to the old slot (image-update-test's scenario j hangs one)."""
    root = tmp_path / "root"
    fake_rootfs(root)
    (root / "etc/shadow").write_text("root:!:19000:0:99999:7:::\n")
    fake_tryboot_module(root)

    def check() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)

    assert check().returncode == 0, check().stderr
    conf = root / "etc/systemd/system.conf.d/watchdog.conf"
    text = conf.read_text()
    assert re.search(r"^RuntimeWatchdogSec=15$", text, re.M)  # bcm2835_wdt's maximum is ~15 s
    for bad_text, shown in (("", ""), (text.replace("=15", "=off"), "off"), (text.replace("=15", "=0"), "0")):
        conf.write_text(bad_text)
        bad = check()
        assert bad.returncode == 1 and bad.stderr.splitlines() == [
            f"check-rootfs: systemd does not drive the hardware watchdog (RuntimeWatchdogSec='{shown}')"
        ], bad.stderr
    conf.write_text(text)
    (root / "etc/systemd/system.conf.d/zz-later.conf").write_text("[Manager]\nRuntimeWatchdogSec=0\n")
    assert check().returncode == 1  # a later drop-in wins


def test_an_image_with_a_boot_unit_left_disabled_is_refused(tmp_path):
    """customize.sh enables the boot's units with systemctl; an image where that silently failed
    would boot without firstboot (no SSH key, no config) or without the service."""
    root = tmp_path / "root"
    fake_rootfs(root)
    (root / "etc/shadow").write_text("root:!:19000:0:99999:7:::\n")
    fake_tryboot_module(root)
    ok = subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    for unit in BOOT_UNITS:
        (root / "etc/systemd/system/multi-user.target.wants" / unit).unlink()
        bad = subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)
        assert bad.returncode == 1 and bad.stderr.splitlines() == [
            f"check-rootfs: {unit} is not enabled (multi-user.target.wants), or masked, or missing"
        ], bad.stderr
        (root / "etc/systemd/system/multi-user.target.wants" / unit).symlink_to(f"/etc/systemd/system/{unit}")
        masked = root / "etc/systemd/system" / unit  # systemctl mask: a link to /dev/null in its place
        masked.rename(masked.with_suffix(".real"))
        masked.symlink_to("/dev/null")
        bad = subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)
        assert bad.returncode == 1 and f"check-rootfs: {unit} is not enabled" in bad.stderr, bad.stderr
        masked.unlink()
        masked.with_suffix(".real").rename(masked)
    units = SD / "overlay/etc/systemd/system"
    for unit in BOOT_UNITS:  # a plugin scan reads every installed package's metadata at each start
        assert configparser_of(units / unit)["Service"]["Environment"] == "PYDANTIC_DISABLE_PLUGINS=__all__"


def configparser_of(path: Path) -> configparser.ConfigParser:
    """A unit file's sections (systemd's syntax is close enough for the keys read here)."""
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(path.read_text())
    return cp


def test_a_mount_left_inside_the_rootfs_stops_the_build_and_is_not_walked(tmp_path):
    """A /proc that mmdebstrap could not unmount (something held it) made manifest.py block for good
    reading /proc/kmsg, and assemble-image.sh would have copied whatever was mounted into the image."""
    import sys

    if os.geteuid() != 0:
        pytest.skip("mounting needs root (CI runs as root)")
    root = tmp_path / "root"
    fake_rootfs(root)
    fake_tryboot_module(root)
    (root / "etc/shadow").write_text("root:!:19000:0:99999:7:::\n")
    proc = root / "proc"
    proc.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "kelvinpi-test", str(proc)], check=True)
    try:
        (proc / "kmsg").write_text("not part of the image\n")
        bad = subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)
        assert (
            bad.returncode == 1 and f"mounted inside the rootfs (umount them, then build again): {proc}" in bad.stderr
        )
        listed = subprocess.run(
            [sys.executable, str(SD / "manifest.py"), str(root)], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        assert "/etc/hostname\tf\t" in listed and "kmsg" not in listed and "/proc\t" not in listed
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False)
    ok = subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_check_rootfs_refuses_credentials(tmp_path):
    """`make image` runs images/sd/check-rootfs.sh on the root filesystem before assembling it."""
    root = tmp_path / "root"
    fake_rootfs(root)
    fake_tryboot_module(root)
    (root / "etc/ssh").mkdir()
    (root / "data").mkdir()
    (root / "etc/shadow").write_text("root:!:19000:0:99999:7:::\nkelvinpi:!*:19000::::::\nsshd:*:19000::::::\n")
    site = root / "opt/kelvinpi/venv/lib/python3.13/site-packages/lib"
    site.mkdir(parents=True)
    begin, end = "-----BEGIN " + "PRIVATE KEY-----", "-----END " + "PRIVATE KEY-----"  # no key text in the repo
    (site / "pem.py").write_text(f'HEADER = "{begin}"\n')  # library code, not a key
    ok = subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (root / "etc/shadow").write_text("root:$y$j9T$abc$def:19000:0:99999:7:::\n")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("x")
    (root / "etc/ssl").mkdir()
    (root / "etc/ssl/server.key").write_text(f"{begin}\nabc\n{end}\n")
    (root / "data/kelvinpi.db").write_text("x")
    (root / "home/pi/.ssh").mkdir(parents=True)
    (root / "home/pi/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA")
    bad = subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)
    assert bad.returncode == 1
    for words in (
        "'root' has a usable password",
        "ssh_host_ed25519_key",
        "/etc/ssl/server.key",
        "/data is not empty",
        "authorized_keys",
    ):
        assert words in bad.stderr, (words, bad.stderr)


TRYBOOT = SD / "tryboot"


def test_tryboot_module_sets_the_firmware_flag_and_the_image_cannot_lack_it(tmp_path):
    """Debian's kernel never passed a '0 tryboot' restart to the Pi firmware (only Raspberry Pi's own
    kernel does), so every A/B update was "rolled back" on a Pi. The module does what downstream does; the
    update test's harness sets the flag on the module's qemu line, so that line must be the module's own."""
    src = (TRYBOOT / "kelvinpi_tryboot.c").read_text()
    assert re.search(r"#define KELVINPI_SET_REBOOT_FLAGS 0x00038064\b", src)  # RPI_FIRMWARE_SET_REBOOT_FLAGS
    assert 'strstr(cmd, " tryboot")' in src and "action != SYS_RESTART" in src  # downstream's match
    assert "rpi_firmware_property(fw, KELVINPI_SET_REBOOT_FLAGS, &flags, sizeof(flags))" in src
    assert "register_reboot_notifier(&kelvinpi_tryboot_nb)" in src and 'MODULE_LICENSE("GPL")' in src
    assert '"raspberrypi,bcm2835-firmware"' in src
    harness = (SD / "update-test.py").read_text()
    line = re.search(r'^TRY_MESSAGE = "([^"]+)"', harness, re.M)[1]
    assert line.startswith("kelvinpi_tryboot: ") and f'pr_emerg("{line}\\n")' in src
    assert "obj-m := kelvinpi_tryboot.o" in (TRYBOOT / "Kbuild").read_text()
    build = (SD / "build-tryboot-module.sh").read_text()
    for step in (
        '"linux-headers-$KVER" gcc make',
        'M="$SRC" modules',
        '"$R/usr/lib/modules/$KVER/updates/$MOD.ko"',
        "apt-get purge",
        'depmod -a "$KVER"',
        '"$R/etc/modules-load.d/kelvinpi-tryboot.conf"',
    ):
        assert step in build, step
    # built before the initramfs and before the package list is written (the purged packages are not in it)
    customize = (SD / "customize.sh").read_text()
    steps = [
        customize.index(s) for s in ('"$HERE/build-tryboot-module.sh" "$R"', "update-initramfs -c", "dpkg-query -W")
    ]
    assert steps == sorted(steps)

    def check(root: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SD / "check-rootfs.sh"), str(root)], capture_output=True, text=True)

    root = tmp_path / "root"
    fake_rootfs(root)
    (root / "etc/shadow").write_text("root:!:19000:0:99999:7:::\n")
    mods = fake_tryboot_module(root)
    ok = check(root)
    assert ok.returncode == 0, ok.stderr
    (mods / "build").symlink_to("/usr/src/linux-headers-6.0.0-test")
    (root / "etc/modules-load.d/kelvinpi-tryboot.conf").write_text("# kelvinpi_tryboot\n")
    bad = check(root)
    assert bad.returncode == 1
    assert "kernel headers left in the image: /usr/lib/modules/6.0.0-test/build" in bad.stderr, bad.stderr
    assert "kelvinpi-tryboot.conf does not load kelvinpi_tryboot" in bad.stderr, bad.stderr
    (mods / "build").unlink()
    (root / "etc/modules-load.d/kelvinpi-tryboot.conf").write_text("kelvinpi_tryboot\n")
    (mods / "modules.dep").write_text("kernel/drivers/x.ko.xz:\n")  # depmod never saw it
    bad = check(root)
    assert bad.returncode == 1 and "no kelvinpi_tryboot module for kernel 6.0.0-test" in bad.stderr, bad.stderr
    (mods / "modules.dep").write_text("updates/kelvinpi_tryboot.ko:\n")
    (root / "etc/systemd/system/rescue.service.d/kelvinpi-try.conf").unlink()
    bad = check(root)
    assert bad.returncode == 1 and bad.stderr.splitlines() == [
        "check-rootfs: rescue.service does not run try-abandon (a failed try would stay in rescue mode)"
    ], bad.stderr


# -- kernel modules: images/sd/prune-modules.sh and its drop list ----------------------------------------
PRUNE_REQUIRED = re.search(r'REQUIRED="([^"]*)"', (SD / "prune-modules.sh").read_text(), re.S)[1].split()


def fake_modules(root: Path, deps: dict[str, list[str]]) -> Path:
    """A kernel module tree with the given modules.dep (paths under kernel/); the modules the image
    relies on are listed as built in, so only what a test names is a file that can be dropped."""
    mods = root / "usr/lib/modules/6.0.0-test"
    mods.mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    for mod in deps:
        (mods / mod).parent.mkdir(parents=True, exist_ok=True)
        (mods / mod).write_bytes(b"not an ELF: depmod lists it without symbols")
    (mods / "modules.dep").write_text("".join(f"{m}: {' '.join(d)}\n".replace(": \n", ":\n") for m, d in deps.items()))
    (mods / "modules.builtin").write_text("".join(f"kernel/builtin/{n}.ko\n" for n in PRUNE_REQUIRED))
    return mods


def prune(root: Path, listing: str) -> subprocess.CompletedProcess:
    lst = root.parent / "drop.list"
    lst.write_text(listing)
    return subprocess.run(
        ["bash", str(SD / "prune-modules.sh"), str(root), str(lst)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(not shutil.which("depmod"), reason="depmod missing (apt-get install kmod)")
@pytest.mark.image
def test_prune_modules_drops_the_listed_and_rewrites_the_indexes(tmp_path):
    root = tmp_path / "root"
    mods = fake_modules(
        root,
        {
            "kernel/drivers/media/usb/uvc/uvcvideo.ko.xz": ["kernel/drivers/media/v4l2-core/videodev.ko.xz"],
            "kernel/drivers/media/v4l2-core/videodev.ko.xz": [],
            "kernel/drivers/gpu/drm/vc4/vc4.ko.xz": ["kernel/drivers/media/cec/core/cec.ko.xz"],
            "kernel/drivers/media/cec/core/cec.ko.xz": [],
            "kernel/drivers/scsi/qla2xxx/qla2xxx.ko.xz": [],
        },
    )
    proc = prune(
        root, "# why: cameras\ndrivers/media/usb\ndrivers/media/v4l2-core  # why\ndrivers/scsi/qla*\nfs/nothere\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "5 -> 2 modules (3 list entries applied, 1 not in this kernel)" in proc.stdout
    left = sorted(str(p.relative_to(mods)) for p in mods.rglob("*.ko*"))
    assert left == ["kernel/drivers/gpu/drm/vc4/vc4.ko.xz", "kernel/drivers/media/cec/core/cec.ko.xz"]
    dep = (mods / "modules.dep").read_text()  # depmod's own, written anew
    assert "uvcvideo" not in dep and "qla2xxx" not in dep and "kernel/drivers/gpu/drm/vc4/vc4.ko.xz:" in dep
    assert not (mods / "kernel/drivers/media/usb").exists()  # emptied directories go too


@pytest.mark.skipif(not shutil.which("depmod"), reason="depmod missing (apt-get install kmod)")
@pytest.mark.image
def test_prune_modules_refuses_to_strand_a_module_that_stays(tmp_path):
    root = tmp_path / "root"
    fake_modules(
        root,
        {
            "kernel/drivers/gpu/drm/vc4/vc4.ko.xz": ["kernel/drivers/media/cec/core/cec.ko.xz"],
            "kernel/drivers/media/cec/core/cec.ko.xz": [],
            "kernel/sound/usb/snd-usb-audio.ko.xz": ["kernel/drivers/media/mc/mc.ko.xz"],
            "kernel/drivers/media/mc/mc.ko.xz": [],
        },
    )
    proc = prune(root, "drivers/media\n")
    assert proc.returncode == 1
    assert "vc4 needs cec" in proc.stderr and "snd-usb-audio needs mc" in proc.stderr, proc.stderr


@pytest.mark.skipif(not shutil.which("depmod"), reason="depmod missing (apt-get install kmod)")
@pytest.mark.image
def test_prune_modules_refuses_a_list_that_reaches_a_module_the_image_needs(tmp_path):
    root = tmp_path / "root"
    mods = fake_modules(root, {"kernel/drivers/net/wireless/broadcom/brcmfmac.ko.xz": []})
    builtin = mods / "modules.builtin"
    builtin.write_text(builtin.read_text().replace("kernel/builtin/brcmfmac.ko\n", ""))
    proc = prune(root, "drivers/net/wireless\n")
    assert proc.returncode == 1 and "dropped modules the image needs: brcmfmac" in proc.stderr, proc.stderr


# What the brief for the drop list keeps (vc4 HDMI audio is ALSA SoC; cec and rc-core are vc4's HDMI)
KEPT = [
    "drivers/gpu/drm/vc4/vc4.ko", "drivers/gpu/drm/v3d/v3d.ko", "drivers/gpu/drm/drm.ko", "sound/soc/snd-soc-core.ko",
    "sound/core/snd.ko", "sound/usb/snd-usb-audio.ko", "drivers/media/cec/core/cec.ko", "drivers/media/rc/rc-core.ko",
    "drivers/media/mc/mc.ko", "drivers/net/wireless/broadcom/brcm80211/brcmfmac/brcmfmac.ko",
    "drivers/net/ethernet/broadcom/genet/genet.ko", "drivers/net/ethernet/cadence/macb.ko",
    "drivers/net/usb/lan78xx.ko", "drivers/net/usb/smsc95xx.ko", "drivers/usb/serial/ftdi_sio.ko",
    "drivers/usb/class/cdc-acm.ko", "drivers/usb/serial/cp210x.ko", "drivers/usb/serial/pl2303.ko",
    "drivers/mmc/host/sdhci-iproc.ko", "drivers/nvme/host/nvme.ko", "drivers/block/virtio_blk.ko",
    "drivers/net/virtio_net.ko", "drivers/net/wireless/virtual/mac80211_hwsim.ko", "drivers/watchdog/i6300esb.ko",
    "drivers/watchdog/bcm2835_wdt.ko", "fs/ext4/ext4.ko", "fs/fat/vfat.ko", "fs/nls/nls_cp437.ko",
    "fs/squashfs/squashfs.ko", "drivers/md/dm-verity.ko", "fs/smb/client/cifs.ko", "drivers/scsi/sd_mod.ko",
    "drivers/usb/storage/uas.ko", "net/mac80211/mac80211.ko", "drivers/mmc/host/bcm2835.ko", "drivers/usb/dwc2/dwc2.ko",
    "drivers/usb/host/xhci-pci.ko", "drivers/bluetooth/hci_uart.ko", "drivers/bluetooth/btbcm.ko",
    "drivers/i2c/busses/i2c-bcm2835.ko", "drivers/spi/spi-bcm2835.ko", "drivers/char/hw_random/bcm2835-rng.ko",
    "drivers/char/hw_random/iproc-rng200.ko", "drivers/md/dm-mod.ko", "drivers/block/loop.ko",
]  # fmt: skip


def test_drop_list_spares_what_a_pi_uses_and_says_why():
    import fnmatch

    lines = (SD / "modules-drop.list").read_text().splitlines()
    entries = [(i, l.split("#", 1)[0].strip()) for i, l in enumerate(lines) if l.split("#", 1)[0].strip()]
    assert len(entries) > 100
    for i, entry in entries:
        for kept in KEPT:
            hit = fnmatch.fnmatch(kept + ".xz", entry) or kept.startswith(entry.rstrip("/") + "/")
            assert not hit, f"modules-drop.list line {i + 1}: {entry!r} drops {kept}"
        # every entry sits under a comment that says why (its group's, or its own)
        j = i
        while j >= 0 and lines[j].split("#", 1)[0].strip() and "#" not in lines[j]:
            j -= 1
        assert j >= 0 and "#" in lines[j], f"modules-drop.list line {i + 1}: {entry!r} has no reason above it"


def test_customize_prunes_before_the_initramfs_and_compiles_bytecode():
    text = (SD / "customize.sh").read_text()
    steps = [
        text.index(s) for s in ('"$HERE/prune-modules.sh" "$R"', "update-initramfs -c -k all", "z50-raspi-firmware")
    ]
    assert steps == sorted(steps)
    # bytecode after the __pycache__ sweep, in hash mode (reproducible: mtimes are clamped after it)
    assert text.index("-name __pycache__") < text.index("-m compileall") and "--invalidation-mode checked-hash" in text


# -- boot-test.sh stands in for the Pi firmware's slot choice --------------------------------------------
BOOT_TOOLS = ["qemu-system-aarch64", "dtc", "curl", "ssh", "ssh-keygen", *TOOLS]


def bootable_rootfs(root: Path, cmdline: str) -> None:
    fake_rootfs(root)
    fw = root / "boot/firmware"
    (fw / "config.txt").write_text("arm_64bit=1\nkernel=vmlinuz-6.0-test\ninitramfs initrd.img-6.0-test followkernel\n")
    (fw / "cmdline.txt").write_text(cmdline)
    (fw / "vmlinuz-6.0-test").write_bytes(b"K" * 4321)
    (fw / "initrd.img-6.0-test").write_bytes(b"I" * 1234)


def plan(tmp_path: Path, cmdline: str) -> subprocess.CompletedProcess:
    root = tmp_path / "rootfs"
    bootable_rootfs(root, cmdline)
    img = tmp_path / "card.img"
    env = dict(os.environ, SOURCE_DATE_EPOCH="1760000000", BOOT_MIB_OVERRIDE="40", ROOT_MIB_OVERRIDE="80")
    subprocess.run(["bash", str(SD / "assemble-image.sh"), str(root), str(img)], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    return subprocess.run(
        ["bash", str(SD / "boot-test.sh"), str(img)],
        env=dict(os.environ, BOOT_TEST_PLAN_ONLY="1"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(
    any(not shutil.which(t) for t in BOOT_TOOLS), reason=f"boot-test tools missing (one of {BOOT_TOOLS})"
)
@pytest.mark.image
def test_boot_test_boots_slot_a_and_writes_the_config_fat(tmp_path):
    proc = plan(tmp_path, " console=tty0 root=PARTUUID=4b9e1c27-05 rw rootwait \n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert (
        "plan: boot partition 2, kernel vmlinuz-6.0-test (4321 bytes), initramfs initrd.img-6.0-test (1234 bytes)"
        in out
    )
    assert "plan: cmdline  console=tty0 root=PARTUUID=4b9e1c27-05 rw rootwait" in out
    fat = re.search(r"^plan: config FAT p1 holds (.*)$", out, re.M)[1].split()
    assert {"autoboot.txt", "kelvinpi.toml", "wamp-secret", "user-data", "network-config", "meta-data"} <= set(fat)
    layout = json.loads(subprocess.run(["sfdisk", "-J", str(tmp_path / "card.img")], capture_output=True, text=True,
                                       check=True).stdout)["partitiontable"]["partitions"]  # fmt: skip
    assert f"plan: data p7 at {layout[6]['start'] * 512} {layout[6]['size'] * 512}" in out


@pytest.mark.skipif(
    any(not shutil.which(t) for t in BOOT_TOOLS), reason=f"boot-test tools missing (one of {BOOT_TOOLS})"
)
@pytest.mark.image
def test_boot_test_refuses_a_slot_that_roots_elsewhere(tmp_path):
    proc = plan(tmp_path, "console=tty0 root=LABEL=rootfs rw rootwait\n")
    assert proc.returncode == 1 and "does not root at PARTUUID=4b9e1c27-05" in proc.stdout, proc.stdout + proc.stderr
