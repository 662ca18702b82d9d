"""Checking a bundle before anything is written: RAUC verifies it, the appliance checks what it is for.

``rauc info --keyring=K FILE`` verifies the signature against the keyring (the CMS chain), the
bundle's framing (a truncated file, an unsigned squashfs: RAUC's "Invalid bundle format") and
reads the manifest. RAUC does not compare the manifest's ``compatible`` with the system's at
``info`` time, so that is checked here, as is the format: only ``verity`` bundles (their every
block is checked against the signed hash tree as it is read), never ``plain``. A refusal carries
RAUC's own words (its last line on stderr), so a lab sees the real reason, and nothing has changed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

INFO_TIMEOUT = 300.0  # seconds: RAUC hashes nothing for info on a verity bundle, but a slow card may stall


class BundleRefused(Exception):
    """The bundle is not one to install: ``reason`` is RAUC's (or the appliance's) words."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"refused update bundle {path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass(frozen=True)
class BundleInfo:
    """What a verified bundle's manifest says."""

    path: str  # the file RAUC checked (and installs): the copy in state_dir
    compatible: str
    version: str
    format: str
    signer: str
    name: str = ""  # the bundle's file name as the person gave it (the marker and the events say it)


_FIELD = re.compile(r"^(Compatible|Version|Bundle Format):\s*'?([^'\n]*)'?\s*$", re.M)
_SIGNER = re.compile(r"Verified (?:inline|detached) signature by '([^']*)'")


def rauc_reason(stderr: str) -> str:
    """RAUC's last real line of complaint (its "rauc-Message:" lines are progress, not reasons)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("rauc-Message")]
    reason = lines[-1] if lines else "rauc gave no reason"
    if "Signature size" in reason and ("exceeds" in reason or "is 0" in reason):
        reason += " (a truncated or unsigned file)"
    return reason


def what_is(path: Path) -> str:
    """What is at ``path`` when it is not a bundle file, in words ("no such file", "a directory", ...)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    return _kind(mode)


def _kind(mode: int) -> str:
    for test, words in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"{words}, not a bundle file"
    return "not a regular file"


def stage(src: Path | str, state_dir: Path) -> Path:
    """Copy the bundle into ``state_dir`` (0700, the appliance's own) and return the copy, 0600: what is
    checked is then what is installed (the file given could be replaced between ``rauc info`` and
    ``rauc install``, which open it by name). The source is opened once and must be a regular file
    (opened without blocking: a FIFO is named, not waited on). ``BundleRefused`` if it is not one;
    ``OSError`` if the copy cannot be written (a full data partition)."""
    src = Path(src)
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise BundleRefused(src, "no such file") from None
    except OSError as exc:
        raise BundleRefused(src, f"cannot be read: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BundleRefused(src, _kind(mode))
    os.set_blocking(fd, True)
    with open(fd, "rb") as f:
        d = Path(state_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for old in d.glob("incoming-*.raucb"):  # copies a run killed (or rebooted) before its cleanup left
            pid = old.name[len("incoming-") : -len(".raucb")]
            if not pid.isdigit() or int(pid) == os.getpid() or not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    old.unlink()
        copy = d / f"incoming-{os.getpid()}.raucb"
        try:
            with open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                shutil.copyfileobj(f, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                copy.unlink()
            raise
    return copy


def check(
    rauc: list[str], keyring: Path, compatible: str, path: Path | str, shown: Path | str | None = None
) -> BundleInfo:
    """Verify ``path`` as RAUC would before installing it; ``BundleRefused`` (naming ``shown``, the file
    as the person gave it, where ``path`` is its copy) says why not."""
    path = Path(path)
    shown = path if shown is None else Path(shown)
    try:
        return _check(rauc, keyring, compatible, path, shown)
    except BundleRefused as exc:
        if exc.path == str(shown):
            raise
        raise BundleRefused(shown, exc.reason) from None


def _check(rauc: list[str], keyring: Path, compatible: str, path: Path, shown: Path) -> BundleInfo:
    if not path.is_file():
        raise BundleRefused(path, what_is(path))
    if not Path(keyring).is_file():
        raise BundleRefused(path, f"the keyring {keyring} is missing ([update] keyring)")
    try:
        done = subprocess.run(
            [*rauc, "info", f"--keyring={keyring}", str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=INFO_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise BundleRefused(path, f"the RAUC command {rauc[0]!r} is not installed ([update] rauc)") from None
    except subprocess.TimeoutExpired:
        raise BundleRefused(path, f"rauc info took over {INFO_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise BundleRefused(path, rauc_reason(done.stderr))
    found = {k: v for k, v in _FIELD.findall(done.stdout)}
    signer = _SIGNER.search(done.stderr)
    info = BundleInfo(
        str(path),
        found.get("Compatible", ""),
        found.get("Version", ""),
        found.get("Bundle Format", "").strip(),
        signer.group(1) if signer else "",
        shown.name,
    )
    if info.compatible != compatible:
        raise BundleRefused(
            path, f"it is for {info.compatible!r}, this appliance is {compatible!r} (wrong board or architecture)"
        )
    if info.format != "verity":
        raise BundleRefused(path, f"bundle format {info.format or 'unknown'!r}: only 'verity' bundles are installed")
    return info
