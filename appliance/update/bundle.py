"""Checking a bundle before anything is written: RAUC verifies it, the appliance checks what it is for.

``rauc info --keyring=K FILE`` verifies the signature against the keyring (the CMS chain), the
bundle's framing (a truncated file, an unsigned squashfs: RAUC's "Invalid bundle format") and
reads the manifest. RAUC does not compare the manifest's ``compatible`` with the system's at
``info`` time, so that is checked here, as is the format: only ``verity`` bundles (their every
block is checked against the signed hash tree as it is read), never ``plain``. A refusal carries
RAUC's own words (its last line on stderr), so a lab sees the real reason, and nothing has changed.
"""

from __future__ import annotations

import re
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

    path: str
    compatible: str
    version: str
    format: str
    signer: str


_FIELD = re.compile(r"^(Compatible|Version|Bundle Format):\s*'?([^'\n]*)'?\s*$", re.M)
_SIGNER = re.compile(r"Verified (?:inline|detached) signature by '([^']*)'")


def rauc_reason(stderr: str) -> str:
    """RAUC's last real line of complaint (its "rauc-Message:" lines are progress, not reasons)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("rauc-Message")]
    reason = lines[-1] if lines else "rauc gave no reason"
    if "Signature size" in reason and ("exceeds" in reason or "is 0" in reason):
        reason += " (a truncated or unsigned file)"
    return reason


def check(rauc: list[str], keyring: Path, compatible: str, path: Path | str) -> BundleInfo:
    """Verify ``path`` as RAUC would before installing it; ``BundleRefused`` says why not."""
    path = Path(path)
    if not path.is_file():
        raise BundleRefused(path, "no such file")
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
    )
    if info.compatible != compatible:
        raise BundleRefused(
            path, f"it is for {info.compatible!r}, this appliance is {compatible!r} (wrong board or architecture)"
        )
    if info.format != "verity":
        raise BundleRefused(path, f"bundle format {info.format or 'unknown'!r}: only 'verity' bundles are installed")
    return info
