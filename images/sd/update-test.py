#!/usr/bin/env python3
"""`make image-update-test`: A/B updates of the built SD image under qemu, scenario by scenario.

The harness stands in for the Raspberry Pi firmware's slot choice (``Firmware``): it reads
``autoboot.txt`` from the config FAT as the firmware documents it ([all] always applies, [tryboot]
only when the one-shot tryboot flag is set, ``tryboot_a_b=1`` switches partitions), takes the chosen
boot FAT's ``config.txt`` (kernel=, initramfs), kernel, initramfs and ``cmdline.txt``, and hands the
kernel what the firmware hands it: /chosen/bootloader/partition and /chosen/bootloader/tryboot in the
device tree (qemu virt's own DTB, dumped, with the node added by dtc). It stands in for the firmware's
mailbox too: on a Pi the image's kelvinpi_tryboot module sets the firmware's reboot flag when the restart
command has " tryboot"; qemu has no firmware, so the module prints ``TRY_MESSAGE`` instead, and the flag
for the next boot is set iff the guest's console printed that line (then used once). The kernel's own
"Restarting system with command '0 tryboot'" is not enough: every kernel prints it, and Debian's alone
never told the firmware. Everything else is the real image: RAUC, the backend, the appliance, its gate.

Each scenario starts from a fresh copy of the image (a bigger card: the data partition grows), with
a kelvinpi.toml, Imager's user-data (the SSH key) and a secret on the config FAT, both instrument
emulators on the host, and ends by reconciling the emulators' ledgers with the store read off the
card (lost = readings an instrument delivered that the store does not hold).

    update-test.py --image IMG --rootfs ROOTFS [--scenarios a b ...] [--keep]

Last line: ``image-update: scenarios=N passed=P lost=L panel_s=S image_mib=M``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from firmware_host.emulator import Emulator  # noqa: E402
from tests.support.reconcile import forwarded, reconcile  # noqa: E402
from tests.support.routers import Influx  # noqa: E402

SD = ROOT / "images" / "sd"
KEYS = ROOT / "images" / "keys"
TRY_MESSAGE = "kelvinpi_tryboot: tryboot requested; no firmware here"  # images/sd/tryboot/kelvinpi_tryboot.c
QEMU_MACHINE = ["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"]
MT = dict(os.environ, MTOOLS_SKIP_CHECK="1")
NODES = ("LSA23JD", "LSA24AZ")


def read_text(path: Path) -> str:
    """A log qemu writes: "" until it exists."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


# -- the card -------------------------------------------------------------------------------------
@dataclass
class Part:
    number: int
    start: int  # bytes
    size: int


class Card:
    """A disk image file and its MBR partitions; FAT files read and written with mtools, no mounts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        table = json.loads(run(["sfdisk", "-J", str(path)], check=True).stdout)["partitiontable"]
        self.parts = {
            int(re.search(r"(\d+)$", p["node"])[1]): Part(
                int(re.search(r"(\d+)$", p["node"])[1]), p["start"] * 512, p["size"] * 512
            )
            for p in table["partitions"]
        }

    def _fat(self, n: int) -> str:
        return f"{self.path}@@{self.parts[n].start}"

    def read(self, n: int, name: str) -> bytes | None:
        proc = subprocess.run(["mtype", "-i", self._fat(n), f"::/{name}"], capture_output=True, env=MT)
        return proc.stdout if proc.returncode == 0 else None

    def write(self, n: int, name: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            run(["mcopy", "-o", "-i", self._fat(n), f.name, f"::/{name}"], check=True, env=MT)

    def listing(self, n: int) -> list[str]:
        return run(["mdir", "-b", "-i", self._fat(n), "::/"], env=MT).stdout.split()

    def copy_out(self, n: int, name: str, dest: Path) -> bool:
        return run(["mcopy", "-o", "-i", self._fat(n), f"::/{name}", str(dest)], env=MT).returncode == 0

    def extract(self, n: int, dest: Path) -> None:
        p = self.parts[n]
        run(
            ["dd", f"if={self.path}", f"of={dest}", "bs=4M", "iflag=skip_bytes,count_bytes", f"skip={p.start}",
             f"count={p.size}", "conv=sparse", "status=none"],
            check=True,
        )  # fmt: skip

    def head(self, n: int, length: int = 1 << 20) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.parts[n].start)
            return f.read(length)


# -- the firmware's part ----------------------------------------------------------------------------
@dataclass
class Choice:
    partition: int
    tryboot: bool
    kernel: Path
    initrd: Path
    cmdline: str


def parse_autoboot(text: str, tryboot: bool) -> tuple[int, bool]:
    """boot_partition and tryboot_a_b as the firmware reads autoboot.txt: properties before any
    section and in [all] apply always; [tryboot] only when the tryboot flag is set; other filters
    (board names) are not ours to match: a qemu virt board is none of them."""
    values: dict[str, str] = {}
    applies = True
    for raw in text.replace("\r", "").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            name = line.strip("[]").strip().lower()
            applies = name == "all" or (name == "tryboot" and tryboot)
            continue
        if applies and "=" in line:
            k, v = line.split("=", 1)
            values[k.strip()] = v.strip()
    return int(values.get("boot_partition", "0")), values.get("tryboot_a_b") == "1"


class Firmware:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.base_dtb = work / "virt.dtb"
        if not self.base_dtb.exists():
            run(["qemu-system-aarch64", *QEMU_MACHINE[:1], f"virt,dumpdtb={self.base_dtb}", *QEMU_MACHINE[2:], "-nic", "none",
                 "-display", "none"], check=True)  # fmt: skip

    def choose(self, card: Card, tryboot: bool, into: Path) -> Choice:
        auto = card.read(1, "autoboot.txt")
        if auto is None:
            raise RuntimeError("no autoboot.txt on the config FAT: the firmware would boot partition 1 itself")
        part, ab = parse_autoboot(auto.decode(), tryboot)
        if part == 0:
            part = 1
        config_name = "tryboot.txt" if tryboot and not ab else "config.txt"
        config = card.read(part, config_name)
        if config is None:
            raise RuntimeError(f"partition {part} has no {config_name}: not bootable")
        kernel_name, initrd_name = "kernel8.img", None
        for raw in config.decode().replace("\r", "").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith("kernel="):
                kernel_name = line.split("=", 1)[1].strip()
            elif line.startswith("initramfs "):
                initrd_name = line.split()[1]
        into.mkdir(parents=True, exist_ok=True)
        kernel, initrd = into / "kernel", into / "initrd"
        if not card.copy_out(part, kernel_name, kernel):
            raise RuntimeError(f"partition {part} has no kernel {kernel_name}")
        if not initrd_name or not card.copy_out(part, initrd_name, initrd):
            raise RuntimeError(f"partition {part} has no initramfs ({initrd_name})")
        cmdline = (card.read(part, "cmdline.txt") or b"").decode().strip()
        if not cmdline:
            raise RuntimeError(f"partition {part} has no cmdline.txt")
        return Choice(part, tryboot, kernel, initrd, cmdline)

    def dtb(self, choice: Choice, into: Path) -> Path:
        dts = run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(self.base_dtb)], check=True).stdout
        # a second definition of / merges into the first (dtc's own rule): the firmware's node under /chosen
        dts += (
            f"\n/ {{\n\tchosen {{\n\t\tbootloader {{\n\t\t\tpartition = <{choice.partition}>;\n"
            f"\t\t\ttryboot = <{int(choice.tryboot)}>;\n\t\t}};\n\t}};\n}};\n"
        )
        out = into / "boot.dtb"
        run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(out)], input=dts, check=True)
        return out


# -- the machine --------------------------------------------------------------------------------------
@dataclass
class Boot:
    number: int
    choice: Choice
    console: Path
    started: float
    proc: subprocess.Popen


class Machine:
    """One card in one emulated Pi: power on (firmware choice + qemu), SSH, power cut."""

    def __init__(self, work: Path, card: Card, firmware: Firmware, e240_link: str, key: Path) -> None:
        self.work, self.card, self.fw, self.key = work, card, firmware, key
        self.e240_link = e240_link
        self.pweb, self.pssh = free_port(), free_port()
        self.tryflag = False
        self.boots: list[Boot] = []
        self.current: Boot | None = None
        self.try_deadline_s: int | None = None  # without the appliance's [update] config: the try's deadline

    def power_on(self) -> Boot:
        n = len(self.boots) + 1
        bdir = self.work / f"boot{n}"
        choice = self.fw.choose(self.card, self.tryflag, bdir)
        self.tryflag = False  # one-shot: the firmware clears it as it uses it
        dtb = self.fw.dtb(choice, bdir)
        append = (
            f"{choice.cmdline} console=ttyAMA0 systemd.show_status=1 systemd.default_device_timeout_sec=300 "
            "systemd.watchdog_sec=60"
        )
        if self.try_deadline_s:
            append += f" kelvinpi.try_deadline_s={self.try_deadline_s}"
        console = bdir / "console.log"
        cmd = [
            "qemu-system-aarch64", *QEMU_MACHINE, "-accel", "tcg,thread=multi",
            "-kernel", str(choice.kernel), "-initrd", str(choice.initrd), "-dtb", str(dtb), "-append", append,
            "-drive", f"if=none,file={self.card.path},format=raw,id=hd0", "-device", "virtio-blk-pci,drive=hd0",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.pweb}-:8080,hostfwd=tcp:127.0.0.1:{self.pssh}-:22",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-chardev", f"serial,id=ls240,path={os.path.realpath(self.e240_link)}", "-device", "pci-serial,chardev=ls240",
            "-device", "i6300esb", "-device", "virtio-rng-pci", "-display", "none", "-serial", f"file:{console}",
            "-monitor", "none", "-no-reboot", "-action", "watchdog=debug",
        ]  # fmt: skip
        with open(bdir / "qemu.log", "w") as qlog:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdout=qlog, stderr=subprocess.STDOUT)
        boot = Boot(n, choice, console, time.monotonic(), proc)
        self.boots.append(boot)
        self.current = boot
        root = re.search(r"root=(\S+)", choice.cmdline)
        how = " (tryboot)" if choice.tryboot else ""
        log(f"power on #{n}: firmware chose partition {choice.partition}{how}, root={root[1] if root else '?'}")
        return boot

    def running(self) -> bool:
        return self.current is not None and self.current.proc.poll() is None

    def wait_exit(self, timeout: float) -> str:
        """Wait for the guest to reset or power off (qemu exits: -no-reboot); sets the next boot's flag."""
        assert self.current
        try:
            self.current.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout"
        text = self.current.console.read_text(errors="replace")
        self.tryflag = TRY_MESSAGE in text
        self.current = None
        if self.tryflag:
            return "reboot-try"
        return "reboot" if "reboot: Restarting system" in text else "off"

    def cut(self) -> None:
        """Power cut: qemu killed, nothing flushed."""
        if self.current and self.current.proc.poll() is None:
            self.current.proc.send_signal(signal.SIGKILL)
            self.current.proc.wait()
        self.current = None
        self.tryflag = False  # the flag does not survive losing power

    def wait_watchdog(self, timeout: float) -> float:
        """Until the guest's hardware watchdog fires (qemu logs it: ``-action watchdog=debug``), then the
        reset a Pi's watchdog does: the machine restarts, and the tryboot flag, used by this boot, is gone.
        Seconds from power-on to the fire."""
        assert self.current
        qlog = self.current.console.parent / "qemu.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if WATCHDOG_FIRED in read_text(qlog):
                fired = time.monotonic() - self.current.started
                self.cut()
                return fired
            if not self.running():
                raise RuntimeError(f"qemu exited before the watchdog fired (boot #{self.current.number})")
            time.sleep(1)
        raise RuntimeError(f"the watchdog did not fire within {timeout:.0f} s of power-on #{self.current.number}")

    def ssh(
        self, command: str, timeout: float = 120, check: bool = False, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        proc = run(
            ["ssh", "-i", str(self.key), "-p", str(self.pssh), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
             "-o", "LogLevel=ERROR", "kelvinpi@127.0.0.1", command],
            timeout=timeout, input=stdin,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"ssh {command!r} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return proc

    def scp(self, src: Path, dest: str, timeout: float = 900) -> None:
        run(
            ["scp", "-q", "-i", str(self.key), "-P", str(self.pssh), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
             str(src), f"kelvinpi@127.0.0.1:{dest}"],
            timeout=timeout, check=True,
        )  # fmt: skip

    def panel_live(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.pweb}/api/v1/latest", timeout=5) as r:
                items = json.load(r)
        except Exception:
            return False
        nodes = {i["field"].split("::")[0] for i in items if i["value"] is not None and i["age"] < 15}
        return set(NODES) <= nodes

    def health(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.pweb}/api/v1/health", timeout=10) as r:
            return json.loads(r.read())

    def wait_panel(self, timeout: float = 600) -> float:
        """Seconds from this power-on until the panel shows live readings from both instruments."""
        assert self.current
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.panel_live():
                return time.monotonic() - self.current.started
            if not self.running():
                raise RuntimeError(f"qemu exited before the panel was live (boot #{self.current.number})")
            time.sleep(0.25)  # the panel's moment to a quarter second (each look is one small HTTP GET)
        raise RuntimeError(f"the panel was not live {timeout:.0f} s after power-on #{self.current.number}")

    def wait_ssh(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.ssh("true", timeout=40).returncode == 0:
                    return
            time.sleep(3)
        raise RuntimeError("no SSH login")

    def slot(self) -> tuple[str, int]:
        out = self.ssh(
            "echo $(od -An -tu4 --endian=big -N4 /proc/device-tree/chosen/bootloader/partition)"
            " $(od -An -tu4 --endian=big -N4 /proc/device-tree/chosen/bootloader/tryboot)",
            check=True,
        ).stdout.split()
        return {"2": "A", "3": "B"}[out[0]], int(out[1])

    def autoboot(self) -> tuple[int, int]:
        """[all] and [tryboot] boot_partition, read off the card (what the next power-on will see)."""
        text = (self.card.read(1, "autoboot.txt") or b"").decode()
        return parse_autoboot(text, False)[0], parse_autoboot(text, True)[0]


# -- what the appliance keeps ------------------------------------------------------------------------
STATE_PY = r"""
import hashlib, json, sqlite3
c = sqlite3.connect("file:/data/kelvinpi/kelvinpi.db?mode=ro", uri=True)
q = lambda s: c.execute(s).fetchall()
tables = [r[0] for r in q("SELECT name FROM sqlite_master WHERE type='table'")]
out = {
  "schema": q("SELECT value FROM meta WHERE key='schema_version'")[0][0],
  "rows": {t: q(f"SELECT count(*) FROM [{t}]")[0][0] for t in tables},
  # the uplinks' cursors: outbox (schema 2 on), per-series cursor before it
  "cursors": sorted([r[0], r[1]] for r in q("SELECT name, position FROM outbox")) if "outbox" in tables else
             sorted(map(list, q("SELECT name, series, position FROM cursor"))) if "cursor" in tables else [],
  "samples": sum(q(f"SELECT coalesce(sum(n), 0) FROM [{t}]")[0][0] for t in ("fresh", "block") if t in tables),
  "alarms": sorted([r[0], r[1]] for r in q("SELECT name, state FROM alarm_state")) if "alarm_state" in tables else [],
  "config": hashlib.sha256(open("/data/kelvinpi.toml", "rb").read()).hexdigest(),
  "events": [r[0] for r in q("SELECT kind FROM event ORDER BY id DESC LIMIT 40")],
}
print(json.dumps(out, default=str))
"""


def keep_state(m: Machine) -> dict:
    proc = m.ssh("python3 -", check=True, stdin=STATE_PY)
    state = json.loads(proc.stdout)
    keys = run(["ssh-keyscan", "-p", str(m.pssh), "-t", "ed25519", "127.0.0.1"], timeout=60).stdout
    state["hostkey"] = keys.split()[-1] if keys.strip() else None
    state["machine_id"] = m.ssh("cat /etc/machine-id").stdout.strip()
    return state


def kept(before: dict, after: dict) -> list[str]:
    """What an update must not lose: config, host key, machine id, cursors (not back), alarms, rows."""
    problems = []
    for k in ("config", "hostkey", "machine_id"):
        if before[k] != after[k]:
            problems.append(f"{k} changed: {before[k]} -> {after[k]}")
    for t in ("series", "event"):  # append-only (blocks are merged as they fill: their count may drop)
        if after["rows"].get(t, 0) < before["rows"].get(t, 0):
            problems.append(f"table {t} went down: {before['rows'].get(t)} -> {after['rows'].get(t)}")
    if after["samples"] < before["samples"]:
        problems.append(f"stored samples went down: {before['samples']} -> {after['samples']}")
    cur_after = {tuple(r[:-1]): r[-1] for r in after["cursors"]}
    for r in before["cursors"]:
        key = tuple(r[:-1])
        if key not in cur_after:
            problems.append(f"cursor {r} gone")
        elif cur_after[key] < r[-1]:
            problems.append(f"cursor {key} went back: {r[-1]} -> {cur_after[key]}")
    names_after = {a[0] for a in after["alarms"]}
    for a in before["alarms"]:
        if a[0] not in names_after:
            problems.append(f"alarm state {a} gone")
    return problems


# -- bundles ------------------------------------------------------------------------------------------
class Bundles:
    """The scenarios' bundles, each built the first time one asks for it."""

    def __init__(self, rootfs: Path, work: Path, version: str) -> None:
        self.rootfs, self.work, self.version = rootfs, work, version

    @property
    def good(self) -> Path:
        return variant(self.rootfs, self.work, "good", lambda r: None, f"{self.version}+good")

    @property
    def never_ready(self) -> Path:
        def change(r: Path) -> None:
            unit = r / "etc/systemd/system/kelvinpi.service"
            unit.write_text(re.sub(r"^ExecStart=.*$", "ExecStart=/bin/sleep infinity", unit.read_text(), flags=re.M))

        return variant(self.rootfs, self.work, "never-ready", change, f"{self.version}+never-ready")

    @property
    def emergency(self) -> Path:
        """A release whose boot falls into emergency mode: a required mount whose device never comes."""

        def change(r: Path) -> None:
            fstab = r / "etc/fstab"
            missing = (
                "PARTUUID=00000000-09  /mnt/update-test-missing  ext4  defaults,x-systemd.device-timeout=5s  0 2\n"
            )
            fstab.write_text(fstab.read_text() + missing)

        return variant(self.rootfs, self.work, "emergency", change, f"{self.version}+emergency")

    @property
    def hung(self) -> Path:
        """A release whose try hangs PID 1 once the service is READY: only the hardware watchdog ends it."""

        def change(r: Path) -> None:
            script = r / "usr/lib/kelvinpi/update-test-hang"
            script.write_text(HANG_PY)
            script.chmod(0o755)
            unit = r / "etc/systemd/system/kelvinpi-update-test-hang.service"
            unit.write_text(HANG_UNIT)
            wants = r / "etc/systemd/system/multi-user.target.wants"
            wants.mkdir(exist_ok=True)
            (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")

        return variant(self.rootfs, self.work, "hung", change, f"{self.version}+hung")

    @property
    def newer_schema(self) -> Path:
        def change(r: Path) -> None:
            schema = next((r / "opt/kelvinpi/venv/lib").glob("python3*/site-packages/appliance/store/schema.py"))
            text = schema.read_text()
            anchor = "SCHEMA_VERSION = MIGRATIONS[-1].version\n"
            assert anchor in text, "appliance/store/schema.py changed: the test's extra migration has no anchor"
            schema.write_text(text.replace(anchor, anchor + NEWER_SCHEMA_PATCH, 1))
            for pyc in (schema.parent / "__pycache__").glob("schema.*.pyc"):  # compiled in the image: stale now
                pyc.unlink()

        return variant(self.rootfs, self.work, "newer-schema", change, f"{self.version}+newer-schema")

    @property
    def other_key(self) -> Path:
        """Signed by a key the image does not trust (a small bundle: the signature is checked first)."""
        other = self.work / "other-key.raucb"
        if not other.exists():
            tiny = self.work / "tiny-root"
            (tiny / "boot/firmware").mkdir(parents=True, exist_ok=True)
            (tiny / "usr/bin").mkdir(parents=True, exist_ok=True)
            (tiny / "boot/firmware/cmdline.txt").write_text("root=PARTUUID=4b9e1c27-05 rw\n")
            key, cert = self.work / "other.key", self.work / "other.cert"
            run(["openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout", str(key), "-out", str(cert),
                 "-days", "2", "-subj", "/CN=not the lab's key"], check=True)  # fmt: skip
            env = dict(os.environ, VERSION=f"{self.version}+other-key", SOURCE_DATE_EPOCH=str(int(time.time())),
                       SIGNING_KEY=str(key), SIGNING_CERT=str(cert), KEYRING=str(cert),
                       BOOT_MIB_OVERRIDE="40")  # fmt: skip
            run(["bash", str(SD / "make-bundle.sh"), str(tiny), str(other)], env=env, check=True)
        return other

    @property
    def truncated(self) -> Path:
        """The good bundle cut to a third, as an interrupted download leaves it."""
        out = self.work / "truncated.raucb"
        if not out.exists():
            good = self.good
            with open(good, "rb") as f, open(out, "wb") as g:
                g.write(f.read(good.stat().st_size // 3))
        return out


# PID 1 stopped (ptrace: init ignores SIGSTOP) and kept stopped by a tracer that never lets go: the
# kernel runs on, nothing pings the watchdog (RuntimeWatchdogSec), as when PID 1 itself hangs. First
# the try's watchdog device as systemd left it, so the harness can tell it was armed.
HANG_MESSAGE = "update-test: PID 1 stopped; only the hardware watchdog can end this boot"
WATCHDOG_LINE = re.compile(r"update-test: watchdog0 state=(\S+) timeout=(\d+) identity=(.*)")
WATCHDOG_FIRED = "watchdog: timer fired"  # qemu's line for -action watchdog=debug
HANG_PY = f"""#!/usr/bin/python3
import ctypes, os, time
def console(line):
    with open("/dev/console", "w") as c:
        c.write(line + "\\n")
wd = "/sys/class/watchdog/watchdog0/"
state, timeout, identity = (open(wd + name).read().strip() for name in ("state", "timeout", "identity"))
console(f"update-test: watchdog0 state={{state}} timeout={{timeout}} identity={{identity}}")
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
for request in (0x4206, 0x4207):  # PTRACE_SEIZE, PTRACE_INTERRUPT
    if libc.ptrace(request, 1, None, None) != 0:
        raise OSError(ctypes.get_errno(), f"ptrace {{request:#x}} of PID 1")
_, status = os.waitpid(1, 0x40000000)  # __WALL: the stop has happened, not only been asked for
if not os.WIFSTOPPED(status):
    raise OSError(f"PID 1 did not stop: wait status {{status:#x}}")
console({HANG_MESSAGE!r})
while True:
    time.sleep(3600)
"""
HANG_UNIT = """[Unit]
Description=image-update-test: PID 1 hangs on this try, once the appliance is READY
After=kelvinpi.service
Requires=kelvinpi.service

[Service]
Type=simple
ExecStartPre=/bin/sleep 5
ExecStart=/usr/lib/kelvinpi/update-test-hang
# the tracer's end would let PID 1 go on
OOMScoreAdjust=-1000

[Install]
WantedBy=multi-user.target
"""


NEWER_SCHEMA_PATCH = """
# --- image-update-test only: one more additive migration (a release with a newer store schema) ---
def _update_test_extra(conn, progress):
    conn.execute("CREATE TABLE IF NOT EXISTS update_test_extra (x INTEGER)")


_extra = {"compat": MIGRATIONS[-1].version} if "compat" in getattr(Migration, "__dataclass_fields__", {}) else {}
MIGRATIONS = MIGRATIONS + (Migration(MIGRATIONS[-1].version + 1, _update_test_extra, **_extra),)
SCHEMA_VERSION = MIGRATIONS[-1].version
"""


def variant(rootfs: Path, work: Path, name: str, change: Callable[[Path], None], version: str) -> Path:
    """A bundle of the rootfs with one change, through an overlay mount (no copy of the tree)."""
    out = work / f"{name}.raucb"
    if out.exists():
        return out
    upper, wd, merged = work / f"{name}.upper", work / f"{name}.wd", work / f"{name}.root"
    for d in (upper, wd, merged):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={rootfs},upperdir={upper},workdir={wd}", str(merged)],
        check=True)  # fmt: skip
    try:
        (merged / "etc/kelvinpi-update-test").write_text(f"{name}\n")
        change(merged)
        env = dict(os.environ, VERSION=version, SOURCE_DATE_EPOCH=str(int(time.time())))
        t0 = time.monotonic()
        proc = run(["bash", str(SD / "make-bundle.sh"), str(merged), str(out)], env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"make-bundle {name}: {proc.stderr.strip()[-600:]}")
        log(f"bundle {name}: {out.stat().st_size >> 20} MiB in {time.monotonic() - t0:.0f} s")
    finally:
        run(["umount", str(merged)])
    return out


# -- one scenario ---------------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    passed: bool = False
    lost: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    drive: str = ""


class Scenario:
    """A fresh card, emulators, a machine; helpers for the update steps."""

    def __init__(self, args, name: str, image: Path, firmware: Firmware) -> None:
        self.name = name
        self.work = args.work / f"scenario-{name}"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        disk = self.work / "card.img"
        run(["cp", "--sparse=always", str(image), str(disk)], check=True)
        run(["truncate", "-s", "8G", str(disk)], check=True)
        self.card = Card(disk)
        self.e372 = Emulator.ls372(seed=7, warm=False)
        self.e240 = Emulator.ls240(seed=8, warm=False)
        _, p372 = self.e372.listen_tcp("127.0.0.1", 0)
        link = str(self.work / "ls240")
        self.e240.listen_pty(link)
        # the control room's InfluxDB (Debian's influxd) on the host: the guest reaches it as 10.0.2.2
        self.influx = Influx(self.work)
        self.influx.start()
        self.influx.create_db()
        key = self.work / "key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        self.deadline_s = args.commit_deadline
        self.has_update_cli = args.has_update_cli
        self.card.write(1, "kelvinpi.toml", self.config(p372).encode())
        self.card.write(1, "user-data", (
            "#cloud-config\nhostname: kelvinpi-update\nusers:\n- name: lab\n  ssh_authorized_keys:\n"
            f"    - {(key.with_suffix('.pub')).read_text().strip()}\n"
        ).encode())  # fmt: skip
        self.m = Machine(self.work, self.card, firmware, link, key)
        if not self.has_update_cli:
            self.m.try_deadline_s = self.deadline_s + 60
        self.result = Result(name)
        self.t0 = time.monotonic()

    def config(self, p372: int) -> str:
        text = (
            f'[[instrument]]\nmodel = "372"\nname = "LSA23JD"\ntransport = "tcp"\nhost = "10.0.2.2"\nport = {p372}\n\n'
            '[[instrument]]\nmodel = "240"\nname = "LSA24AZ"\ntransport = "serial"\ndevice = "/dev/ttyS0"\n\n'
            '[store]\npath = "/data/kelvinpi/kelvinpi.db"\n\n[web]\nbind = "0.0.0.0"\nport = 8080\n\n'
            '[[alarm]]\nkind = "above"\nname = "update-test-always"\nseverity = "warning"\n'
            'field = "LSA23JD::mxc_t"\nthreshold = 0.0\nhysteresis = 0.0\nhold = 0\nrepeat = 0\n\n'
            f'[[uplink]]\nkind = "influxdb"\nurl = "http://10.0.2.2:{self.influx.http_port}"\ndatabase = "ocs_feeds"\n'
        )
        if self.has_update_cli:
            text += (
                f"\n[update]\ncommit_deadline_s = {self.deadline_s}\n"
                'reboot_try = ["/usr/lib/kelvinpi/request-reboot", "try"]\n'
                'reboot = ["/usr/lib/kelvinpi/request-reboot", "normal"]\n'
            )
        return text

    # the steps
    def first_boot(self) -> float:
        self.m.power_on()
        s = self.m.wait_panel()
        self.m.wait_ssh()
        log(f"{self.name}: panel live {s:.1f} s after power-on (first boot)")
        return s

    def boot_until_panel(self, expect_slot: str | None = None, expect_try: int | None = None) -> float:
        if not self.m.running():
            self.m.power_on()
        s = self.m.wait_panel()
        self.m.wait_ssh()
        slot, tried = self.m.slot()
        log(f"{self.name}: panel live {s:.1f} s after power-on, slot {slot}{' (try)' if tried else ''}")
        if expect_slot and slot != expect_slot:
            raise AssertionError(f"booted slot {slot}, expected {expect_slot}")
        if expect_try is not None and tried != expect_try:
            raise AssertionError(f"tryboot={tried}, expected {expect_try}")
        return s

    def upload(self, bundle: Path) -> str:
        dest = f"/data/kelvinpi/{bundle.name}"
        t = time.monotonic()
        self.m.scp(bundle, dest)
        log(f"{self.name}: {bundle.name} copied to the Pi in {time.monotonic() - t:.0f} s")
        return dest

    @property
    def update_log(self):  # noqa: ANN201 - a file the ssh child writes; closed with the scenario
        if not hasattr(self, "_update_log"):
            self._update_log = open(self.work / "update.log", "a")  # noqa: SIM115
        return self._update_log

    def start_update(self, dest: str) -> subprocess.Popen:
        """`kelvinpi update FILE` (or, before the appliance has it, RAUC's install and a try reboot)."""
        if self.has_update_cli:
            cmd = f"/opt/kelvinpi/venv/bin/kelvinpi update {dest}"
            self.result.drive = "kelvinpi update + the appliance's gate"
        else:
            cmd = f"rauc install {dest} && /usr/lib/kelvinpi/request-reboot try"
            self.result.drive = "rauc install + request-reboot try; commit by the harness (no gate in this image)"
        return subprocess.Popen(
            ["ssh", "-i", str(self.m.key), "-p", str(self.m.pssh), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
             "kelvinpi@127.0.0.1", cmd],
            stdout=self.update_log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def update_and_reboot(self, dest: str, timeout: float = 1200) -> None:
        proc = self.start_update(dest)
        why = self.m.wait_exit(timeout)
        with contextlib.suppress(Exception):
            proc.wait(timeout=30)
        if why != "reboot-try":
            raise AssertionError(f"after the update the guest did {why}, not a try reboot: {self.tail('update.log')}")

    def commit_on_try(self) -> None:
        """On the try boot: the gate commits (or the harness, in an image without the gate)."""
        if not self.has_update_cli:
            self.m.ssh("rauc status mark-good booted", check=True)
        deadline = time.monotonic() + self.deadline_s + 120
        while time.monotonic() < deadline:
            slot, _ = self.m.slot()
            if {"A": 2, "B": 3}[slot] == self.m.autoboot()[0]:
                log(
                    f"{self.name}: slot {slot} committed ({time.monotonic() - self.m.current.started:.0f} s after power-on)"
                )
                return
            time.sleep(5)
        raise AssertionError(
            f"the try was not committed within {self.deadline_s + 120} s: autoboot {self.m.autoboot()}"
        )

    def tail(self, name: str) -> str:
        p = self.work / name
        return p.read_text(errors="replace")[-600:] if p.exists() else ""

    def reboot(self) -> None:
        """A normal reboot, through the image's own path (the service's request)."""
        self.m.ssh("/usr/lib/kelvinpi/request-reboot normal")
        why = self.m.wait_exit(300)
        if why not in ("reboot", "off"):
            raise AssertionError(f"normal reboot: {why}")

    def finish(self) -> int:
        """Quiesce the instruments, let the store commit, cut the power, read the store off the card."""
        if self.m.running():
            for e in (self.e372, self.e240):
                e.control("mute on")
            self.drain_uplinks()
            time.sleep(10)
            self.m.cut()
        data = self.work / "data.ext4"
        self.card = Card(self.card.path)  # the first boot grew p4 and p7: read the table again
        self.card.extract(7, data)
        rc = run(["e2fsck", "-fy", str(data)]).returncode
        if rc >= 4:
            raise AssertionError(f"the data partition does not check clean (e2fsck {rc})")
        store = self.work / "store"
        store.mkdir(exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            run(["debugfs", "-R", f"dump /kelvinpi/kelvinpi.db{suffix} {store}/kelvinpi.db{suffix}", str(data)])
        db = store / "kelvinpi.db"
        if not db.exists() or db.stat().st_size == 0:
            raise AssertionError("no store on the data partition")
        ok = run([sys.executable, "-c", f"import sqlite3; print(sqlite3.connect('{db}').execute('PRAGMA integrity_check').fetchone()[0])"]).stdout.strip()  # fmt: skip
        if ok != "ok":
            raise AssertionError(f"store integrity_check: {ok}")
        tally = reconcile(db, {"LSA23JD": self.e372, "LSA24AZ": self.e240})
        log(f"{self.name}: ledgers vs store: {tally.line()}")
        if tally.produced == 0:
            raise AssertionError("the instruments delivered nothing")
        # the uplink: InfluxDB holds exactly what the store holds (a reading stored before a cut and not
        # yet forwarded is sent from the kept cursor after the next boot; finish() drained the last one)
        per_series = forwarded(db, influx=self.influx)
        gaps = {k: v for k, v in per_series.items() if v[2]}
        stored = sum(n for n, _, _ in per_series.values())
        self.result.notes.append(
            f"InfluxDB vs store: {stored} readings, {sum(g[2] for g in gaps.values())} missing or extra"
        )
        if gaps:
            raise AssertionError(f"InfluxDB differs from the store: {dict(list(gaps.items())[:5])}")
        return tally.lost

    def drain_uplinks(self, timeout: float = 120) -> None:
        """With the instruments muted, wait until every uplink has nothing left to send."""
        deadline = time.monotonic() + timeout
        last: list = []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                last = [(u["name"], u["connected"], u["backlog"]) for u in self.m.health().get("uplinks", [])]
                if last and all(c and b == 0 for _, c, b in last):
                    return
            time.sleep(2)
        raise AssertionError(f"the uplinks did not drain within {timeout:.0f} s: {last}")

    def close(self) -> None:
        self.m.cut()
        for e in (self.e372, self.e240):
            e.stop()
        self.influx.stop()


# -- the scenarios ------------------------------------------------------------------------------------------
def expect_event(s: Scenario, kind: str) -> None:
    """The appliance's store tells what became of the update (appliance/update/rollback.py)."""
    if not s.has_update_cli:
        return  # an image without the appliance's update code records none
    events = keep_state(s.m)["events"]
    if kind not in events:
        raise AssertionError(f"no {kind} event; the newest events: {events[:12]}")
    s.result.notes.append(f"event {kind}")


def sc_a(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """A good update commits; store, config, cursors, alarms, host key and machine id are kept."""
    panel.append(s.first_boot())
    time.sleep(20)
    before = keep_state(s.m)
    dest = s.upload(b.good)
    s.update_and_reboot(dest)
    s.boot_until_panel("B", 1)
    s.commit_on_try()
    assert s.m.autoboot()[0] == 3, f"autoboot after commit: {s.m.autoboot()}"
    assert s.m.ssh("cat /etc/kelvinpi-update-test").stdout.strip() == "good"
    after = keep_state(s.m)
    problems = kept(before, after)
    if not before["cursors"]:
        problems.append("no uplink cursor before the update (the InfluxDB uplink sent nothing?)")
    s.result.notes.append(
        f"kept: samples {before['samples']}->{after['samples']}, events "
        f"{before['rows'].get('event')}->{after['rows'].get('event')}, alarms {[a[0] for a in after['alarms']]}, "
        f"cursors {before['cursors']}->{after['cursors']}, config, host key, machine id kept: {not problems}"
    )
    assert not problems, problems
    expect_event(s, "update_committed")
    s.reboot()  # committed: a normal boot stays on B
    s.boot_until_panel("B", 0)


def sc_b(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """A release whose service never signals READY: the try is not committed and rolls back by itself."""
    s.first_boot()
    dest = s.upload(b.never_ready)
    s.update_and_reboot(dest)
    s.m.power_on()  # the try of B: the panel never comes; the try deadline reboots into A
    why = s.m.wait_exit(s.deadline_s + 60 + 600)
    assert why == "reboot", f"the try ended with {why}"
    s.boot_until_panel("A", 0)
    assert s.m.autoboot() == (2, 2), f"autoboot after the rollback: {s.m.autoboot()}"
    expect_event(s, "update_rolled_back")


def sc_i(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """A release whose try falls into emergency mode reboots at once into the slot that worked."""
    s.first_boot()
    dest = s.upload(b.emergency)
    s.update_and_reboot(dest)
    s.m.power_on()  # the try of B: local-fs fails, emergency.service's try-abandon reboots
    assert s.m.current
    console = s.m.current.console
    why = s.m.wait_exit(600)
    assert why == "reboot", f"the try ended with {why}"
    text = console.read_text(errors="replace")
    assert "this try boot of an update reached emergency mode" in text, "try-abandon did not say why it rebooted"
    s.boot_until_panel("A", 0)
    assert s.m.autoboot() == (2, 2), f"autoboot after the rollback: {s.m.autoboot()}"
    expect_event(s, "update_rolled_back")


def cut_while_writing(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """(c) power cut while RAUC writes slot B: A boots, B is never tried."""
    s.first_boot()
    dest = s.upload(b.good)
    s.start_update(dest)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not any(s.card.head(6, 1 << 16)):
        time.sleep(0.5)
    assert any(s.card.head(6, 1 << 16)), "RAUC never started writing root B"
    time.sleep(3)
    for e in (s.e372, s.e240):
        e.control("mute on")
    time.sleep(8)
    log(f"{s.name}: power cut while root B is being written")
    s.m.cut()
    assert s.m.autoboot() == (2, 2), f"autoboot after a cut mid-write: {s.m.autoboot()}"
    for e in (s.e372, s.e240):
        e.control("mute off")
    s.boot_until_panel("A", 0)


def cut_during_try(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """(d) power cut during the try boot: the next boot is A."""
    s.first_boot()
    dest = s.upload(b.good)
    for e in (s.e372, s.e240):
        e.control("mute on")  # the try cannot become healthy before the cut; nothing in flight
    time.sleep(8)
    s.update_and_reboot(dest)
    s.m.power_on()
    time.sleep(45)  # the try's kernel and systemd are up, the appliance starting
    log(f"{s.name}: power cut during the try boot")
    s.m.cut()
    for e in (s.e372, s.e240):
        e.control("mute off")
    s.boot_until_panel("A", 0)
    assert s.m.autoboot()[0] == 2
    expect_event(s, "update_rolled_back")


def cut_after_commit(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """(e) power cut right after the commit: B boots, normally."""
    s.first_boot()
    dest = s.upload(b.good)
    s.update_and_reboot(dest)
    s.boot_until_panel("B", 1)
    s.commit_on_try()
    for e in (s.e372, s.e240):
        e.control("mute on")
    time.sleep(8)
    log(f"{s.name}: power cut right after the commit")
    s.m.cut()
    assert s.m.autoboot()[0] == 3, f"autoboot after commit + cut: {s.m.autoboot()}"
    for e in (s.e372, s.e240):
        e.control("mute off")
    s.boot_until_panel("B", 0)
    expect_event(s, "update_committed")


def watchdog_during_try(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """(j) PID 1 hangs on the try boot, after the new release's appliance is READY: the try's systemd had
    armed the hardware watchdog and stops feeding it, the watchdog fires, and the next boot is A. (The
    reset itself is the harness's, as the power-on is: qemu logs the fire, the harness restarts it.)"""
    s.first_boot()
    dest = s.upload(b.hung)
    for e in (s.e372, s.e240):
        e.control("mute on")  # the try cannot commit before the hang; nothing in flight at the reset
    time.sleep(8)
    s.update_and_reboot(dest)
    s.m.power_on()
    assert s.m.current
    console, qlog = s.m.current.console, s.m.current.console.parent / "qemu.log"
    deadline = time.monotonic() + 600
    while HANG_MESSAGE not in read_text(console):  # (qemu makes the file a moment after it starts)
        assert s.m.running(), "the try ended before its PID 1 was stopped"
        assert time.monotonic() < deadline, "the try's PID 1 was never stopped (no line from update-test-hang)"
        time.sleep(0.5)
    t_hang = time.monotonic() - s.m.current.started
    assert WATCHDOG_FIRED not in read_text(qlog), "the watchdog fired before PID 1 hung"
    armed = WATCHDOG_LINE.search(read_text(console))
    assert armed and armed[1] == "active", f"the try's watchdog was not armed: {armed and armed[0]}"
    timeout = int(armed[2])
    fired = s.m.wait_watchdog(600)
    assert fired - t_hang <= timeout + 15, f"the watchdog fired {fired - t_hang:.0f} s after the hang ({timeout} s)"
    text = console.read_text(errors="replace")
    assert "reboot: Restarting system" not in text, "the try rebooted by itself: not the watchdog's doing"
    log(f"{s.name}: PID 1 stopped {t_hang:.0f} s after the try's power-on; the watchdog ({armed[3]}, {timeout} s) "
        f"fired {fired - t_hang:.0f} s later")  # fmt: skip
    s.result.notes.append(f"watchdog {timeout} s, fired {fired - t_hang:.0f} s after PID 1 stopped")
    for e in (s.e372, s.e240):
        e.control("mute off")
    s.boot_until_panel("A", 0)
    assert s.m.autoboot()[0] == 2, f"autoboot after the watchdog reset: {s.m.autoboot()}"
    expect_event(s, "update_rolled_back")


def refused(s: Scenario, bundle: Path, words: str) -> None:
    s.first_boot()
    before = keep_state(s.m)
    auto = s.m.autoboot()
    b_head = s.card.head(6, 1 << 16)
    dest = s.upload(bundle)
    if s.has_update_cli:
        proc = s.m.ssh(f"/opt/kelvinpi/venv/bin/kelvinpi update {dest}", timeout=600)
        s.result.drive = "kelvinpi update"
        s.result.notes.append(f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}")
        assert proc.returncode == 2, f"kelvinpi update exited {proc.returncode}, not 2"
    else:
        proc = s.m.ssh(f"rauc install {dest}", timeout=600)
        s.result.drive = "rauc install (no kelvinpi update in this image)"
        s.result.notes.append(f"rauc exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}")
        assert proc.returncode != 0, "rauc installed it"
    assert re.search(words, proc.stdout + proc.stderr, re.I), f"no {words!r} in the refusal"
    assert s.m.running(), "the refusal rebooted the Pi"
    assert s.m.autoboot() == auto and s.card.head(6, 1 << 16) == b_head, "the refusal changed the slots"
    problems = kept(before, keep_state(s.m))
    assert not problems, problems


def sc_f(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """(f) a bundle signed by a key the image does not trust is refused, nothing changes."""
    refused(s, b.other_key, r"signature|verif|certificate")


def sc_g(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """(g) a truncated bundle is refused, nothing changes."""
    refused(s, b.truncated, r"signature|size|truncat|short|invalid|fail")


def sc_h(s: Scenario, b: Bundles, panel: list[float]) -> None:
    """(h) update to a release with a newer store schema, then back to the old release: nothing lost."""
    s.first_boot()
    v0 = keep_state(s.m)["schema"]
    dest = s.upload(b.newer_schema)
    s.update_and_reboot(dest)
    s.boot_until_panel("B", 1)
    s.commit_on_try()
    v1 = keep_state(s.m)["schema"]
    s.result.notes.append(f"schema {v0} -> {v1} on the newer release")
    assert int(v1) == int(v0) + 1, f"the newer release did not migrate the store ({v0} -> {v1})"
    s.m.ssh(f"rm -f {dest}")
    dest = s.upload(b.good)  # back to the old release (its schema is v0)
    s.update_and_reboot(dest)
    s.m.power_on()
    try:
        s.boot_until_panel("A", 1)
        s.commit_on_try()
        v2 = keep_state(s.m)["schema"]
        s.result.notes.append(f"the old release runs on the schema-{v2} store")
    except Exception as exc:
        tail = s.m.ssh("journalctl -u kelvinpi --no-pager -n 15 2>/dev/null || true").stdout[-800:]
        s.result.notes.append(f"the old release on the newer store: {exc}; {tail}")
        raise


SCENARIOS: dict[str, Callable[[Scenario, Bundles, list[float]], None]] = {
    "a": sc_a,
    "b": sc_b,
    "c": cut_while_writing,
    "d": cut_during_try,
    "e": cut_after_commit,
    "f": sc_f,
    "g": sc_g,
    "h": sc_h,
    "i": sc_i,
    "j": watchdog_during_try,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--rootfs", type=Path, required=True)
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the scenario directories")
    ap.add_argument("--commit-deadline", type=int, default=180)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("image-update-test: needs root (overlay mounts for the variant bundles)")
        return 2
    for tool in ("qemu-system-aarch64", "dtc", "rauc", "mksquashfs", "mtype", "sfdisk", "debugfs", "e2fsck", "influxd"):
        if not shutil.which(tool):
            print(
                f"image-update-test: missing {tool} (make image installs the host tools; make ci-deps installs influxd)"
            )
            return 2
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="kelvinpi-update-", dir="/var/tmp"))).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    # does the appliance in the image have `kelvinpi update` (and with it the health gate)?
    args.has_update_cli = any((args.rootfs / "opt/kelvinpi/venv/lib").glob("python3*/site-packages/appliance/update"))
    log(
        f"image {args.image}; appliance {'has' if args.has_update_cli else 'lacks'} `kelvinpi update`; work {args.work}"
    )
    version = run(["git", "describe", "--always", "--dirty"], cwd=ROOT).stdout.strip() or "dev"
    bundles = Bundles(args.rootfs.resolve(), args.work, version)
    firmware = Firmware(args.work)
    results: list[Result] = []
    panel: list[float] = []
    for name in args.scenarios:
        fn = SCENARIOS[name]
        log(f"scenario {name}: {fn.__doc__}")
        s = Scenario(args, name, args.image, firmware)
        try:
            fn(s, bundles, panel)
            s.result.lost = s.finish()
            s.result.passed = s.result.lost == 0
            if s.result.lost:
                s.result.notes.append(f"lost {s.result.lost} readings")
        except Exception as exc:
            s.result.notes.append(f"FAILED: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                s.result.lost = s.finish()
        finally:
            s.close()
            s.result.seconds = time.monotonic() - s.t0
        r = s.result
        log(f"scenario {name}: {'PASS' if r.passed else 'FAIL'} in {r.seconds:.0f} s, lost {r.lost}; "
            f"{r.drive}; {' | '.join(r.notes)}")  # fmt: skip
        if r.passed and not args.keep:
            shutil.rmtree(s.work, ignore_errors=True)
        results.append(r)
    zst = Path(str(args.image) + ".zst")
    image_mib = round(zst.stat().st_size / 2**20, 1) if zst.exists() else float("nan")
    panel_s = round(panel[0], 1) if panel else float("nan")
    for r in results:
        print(
            f"  {r.name}: {'pass' if r.passed else 'FAIL'} {r.seconds:.0f} s lost={r.lost} [{r.drive}] {' | '.join(r.notes)}"
        )
    passed = sum(r.passed for r in results)
    print(
        f"image-update: scenarios={len(results)} passed={passed} lost={sum(r.lost for r in results)} "
        f"panel_s={panel_s} image_mib={image_mib}"
    )
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
