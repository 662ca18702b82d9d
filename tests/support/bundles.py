"""Real RAUC bundles for the update tests: a test CA and key made with openssl in the test's directory
(nothing committed), tiny rootfs images, ``rauc bundle`` (needs squashfs-tools), and the refused kinds:
another CA's signature, a truncated file, an unsigned squashfs, another compatible, the plain format."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

COMPATIBLE = "kelvinpi-rpi-arm64"


def need_rauc() -> None:
    missing = [b for b in ("rauc", "mksquashfs", "openssl") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (`make ci-deps` as root installs rauc and squashfs-tools)")


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    """A self-signed signing certificate and its key (the keyring is the certificate)."""
    d.mkdir(parents=True, exist_ok=True)
    key, cert = d / f"{name}.key.pem", d / f"{name}.cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-subj", f"/CN=kelvinpi test {name}", "-days", "30",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,digitalSignature"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def make_bundle(
    d: Path,
    name: str,
    key: Path,
    cert: Path,
    compatible: str = COMPATIBLE,
    version: str = "9.9.9",
    fmt: str = "verity",
    size: int = 64 * 1024,
) -> Path:
    content = d / f"{name}.content"
    content.mkdir(parents=True)
    (content / "rootfs.img").write_bytes(os.urandom(size))  # a tiny stand-in for the root file system image
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat={fmt}\n\n"
        "[image.rootfs]\nfilename=rootfs.img\n"
    )
    out = d / f"{name}.raucb"
    subprocess.run(["rauc", "bundle", f"--cert={cert}", f"--key={key}", content, out], check=True, capture_output=True)
    return out


def truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) * 2 // 3])
    return dst


def unsigned(d: Path, name: str) -> Path:
    """A squashfs with a manifest and no signature at all."""
    content = d / f"{name}.content"
    content.mkdir(parents=True)
    (content / "manifest.raucm").write_text(f"[update]\ncompatible={COMPATIBLE}\nversion=1\n")
    out = d / f"{name}.raucb"
    subprocess.run(["mksquashfs", content, out, "-quiet", "-noappend"], check=True, capture_output=True)
    return out


def recorder(path: Path, log: Path, body: str = "") -> Path:
    """A small real program that appends its arguments to ``log`` (one line a call), then runs ``body``."""
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n{body}\n')
    path.chmod(0o755)
    return path


def fake_rauc(path: Path, log: Path, install_rc: int = 0) -> Path:
    """RAUC for the tests: ``info`` is the real rauc; ``install`` and ``status`` only record (installing
    needs a real slot layout and RAUC's service: the image's qemu scenarios run the real one)."""
    real = shutil.which("rauc")
    return recorder(
        path,
        log,
        f'case "$1" in\n  info) exec {real} "$@";;\n'
        '  install) echo "  0% Installing"; echo " 40% Copying image to rootfs.1"; echo "100% Installing done.";\n'
        f'    [ {install_rc} = 0 ] || echo "LastError: Installation error: failed to write slot" >&2; exit {install_rc};;\n'
        "esac\nexit 0",
    )


# RAUC 1.8's `rauc status --output-format=json`, as `rauc service` printed it for a two-slot system with a
# custom backend (the slots' devices and the booted slot filled in; boot_primary null: the backend failed)
STATUS_JSON = (
    '{"compatible":"kelvinpi-rpi-arm64","variant":"","booted":"%s","boot_primary":%s,"slots":['
    '{"rootfs.0":{"class":"rootfs","device":"/dev/mmcblk0p5","type":"raw","bootname":"A","state":"%s",'
    '"parent":null,"mountpoint":null,"boot_status":"good"}},'
    '{"rootfs.1":{"class":"rootfs","device":"/dev/mmcblk0p6","type":"raw","bootname":"B","state":"%s",'
    '"parent":null,"mountpoint":null,"boot_status":"good"}}]}'
)


def status_rauc(path: Path, log: Path, device_tree: Path, primary: Path) -> Path:
    """RAUC for the gate's tests, with the image backend's bookkeeping: ``primary`` holds the slot every
    normal boot starts (autoboot.txt's [all]: A or B; absent: RAUC cannot say). ``status
    --output-format=json`` answers as RAUC 1.8 does; ``mark-good booted`` on a try makes the booted slot
    primary (the commit); ``mark-bad booted|other`` of the primary makes the other one primary, as the backend
    does (a slot that is not primary: no change here). The booted slot is read from the device tree, as the backend reads it."""
    booted = f'p=$(od -An -tu4 --endian=big -N4 "{device_tree}/chosen/bootloader/partition" | tr -d " ")'
    letter = 'if [ "$p" = 3 ]; then b=B; o=A; else b=A; o=B; fi'
    json_a = STATUS_JSON.replace('"', '\\"')
    return recorder(
        path,
        log,
        f"{booted}\n{letter}\n"
        f'pri=$(cat "{primary}" 2>/dev/null || true)\n'
        'case "$1 $2" in\n'
        '  "status --output-format=json")\n'
        '    case "$pri" in A) jp=\'"rootfs.0"\';; B) jp=\'"rootfs.1"\';; *) jp=null;; esac\n'
        '    if [ "$b" = A ]; then sa=booted; sb=inactive; else sa=inactive; sb=booted; fi\n'
        f'    printf "{json_a}\\n" "$b" "$jp" "$sa" "$sb";;\n'
        f'  "status mark-good") echo "$b" > "{primary}";;\n'
        f'  "status mark-bad") if [ "$3" = other ]; then t=$o; u=$b; else t=$b; u=$o; fi\n'
        f'    [ "$pri" = "$t" ] && echo "$u" > "{primary}";;\n'
        "esac\nexit 0",
    )
