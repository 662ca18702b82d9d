"""Installing a checked bundle: ``rauc install`` into the other slot, the marker, the try reboot.

The order is what makes a power cut harmless at every step: RAUC writes only the slot not booted
and switches nothing the firmware reads by default (the image's backend puts the new slot in
``autoboot.txt``'s ``[tryboot]`` section only); the marker is written after the install returned;
the reboot asks the firmware for one try. A cut before the reboot boots the old slot again, which
finds the marker and records ``update_rolled_back`` with the reason; a cut during the try does
the same. ``update_installed`` is recorded only once the marker is written: if the marker cannot be
written, nothing claims the update installed, and the answer says what RAUC left (the other slot
written and named for a try, the try reboot not done). One flow for the command line and the web
upload (``Installer``); both install a copy in ``state_dir`` (``bundle.stage``), never the file by
its name again.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import marker
from .bundle import BundleInfo, check, stage
from .devicetree import boot_info, bootloader_cannot_try

log = logging.getLogger("kelvinpi.update")

INSTALL_TIMEOUT = 3600.0  # seconds: a slot of a few hundred MB on a slow card takes minutes, not an hour


class InstallFailed(Exception):
    """``rauc install`` (or the reboot) failed: the message has RAUC's words; the old slot still boots."""


@dataclass(frozen=True)
class UpdateCommands:
    """The outside commands an update runs (argv lists from ``[update]``), and where its state lives."""

    rauc: list[str]
    keyring: Path
    compatible: str
    reboot_try: list[str]
    reboot: list[str]
    device_tree: Path
    state_dir: Path

    @classmethod
    def of(cls, cfg: object) -> UpdateCommands:
        """From an ``UpdateConfig`` (the fields share their names)."""
        return cls(**{name: getattr(cfg, name) for name in cls.__dataclass_fields__})

    def run(self, argv: list[str], what: str, timeout: float = 120.0) -> str:
        """Run one command to its end; ``InstallFailed`` naming it and its last words if it fails."""
        try:
            done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallFailed(f"{what} ({' '.join(argv)}): {exc}") from None
        if done.returncode != 0:
            last = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            raise InstallFailed(f"{what} failed (exit {done.returncode}): {last[-1] if last else 'no output'}")
        return done.stdout


class UpdateBusy(InstallFailed):
    """No install now: this boot is an uncommitted try (the other slot is the only known-good one), an
    update installed on this boot waits for its reboot, or the bootloader could never try one."""


Progress = Callable[[str], None]


class Installer:
    """Check, install, mark, reboot. ``record`` is the store's ``event`` where the caller has the store
    (the web upload, inside the service); the command line has none, and the try boot records it."""

    def __init__(self, commands: UpdateCommands, record: Callable[[str, str], None] | None = None) -> None:
        self.c = commands
        self.record = record

    def check(self, path: Path | str, shown: Path | str | None = None) -> BundleInfo:
        return check(self.c.rauc, self.c.keyring, self.c.compatible, path, shown)

    def stage(self, path: Path | str) -> Path:
        """The bundle copied into state_dir: what is checked is what is installed (``bundle.stage``)."""
        return stage(path, self.c.state_dir)

    def refuse_if_busy(self) -> None:
        """No install while this boot is a try (it would overwrite the slot the appliance falls back to),
        nor while an update installed on this boot waits for its try reboot (a second one would write
        the same slot under the first one's marker)."""
        cannot = bootloader_cannot_try(self.c.device_tree)
        if cannot:
            raise UpdateBusy(cannot)
        boot = boot_info(self.c.device_tree)
        if boot is not None and boot.tryboot and self._primary() != boot.slot:
            # the tryboot flag stays 1 until the next reboot: a try that has committed (RAUC's primary is
            # the booted slot) is a good slot like any other, and the other one may be written
            raise UpdateBusy(
                f"this boot is the try of slot {boot.slot}, not committed yet: installing now would overwrite "
                f"slot {boot.other}, the one to fall back to; wait until it commits or rolls back"
            )
        try:
            pending = marker.read(self.c.state_dir)
        except (marker.MarkerError, OSError):
            pending = None  # not this release's, or no state dir to read: the install replaces or says it
        if pending is not None and pending.boot_id and pending.boot_id == marker.boot_id():
            raise UpdateBusy(
                f"{pending.describe()} was installed on this boot and waits for its try reboot"
                + (f" ({pending.failure})" if pending.failure else "")
                + ": reboot into it (/usr/lib/kelvinpi/request-reboot try), or reboot normally to drop it"
            )

    def _primary(self) -> str | None:
        from .primary import rauc_primary  # primary imports this module

        return rauc_primary(self.c)

    def install(self, info: BundleInfo, progress: Progress = lambda line: None) -> marker.PendingUpdate:
        """``rauc install`` with its progress lines handed to ``progress``; then the marker."""
        self.refuse_if_busy()
        boot = boot_info(self.c.device_tree)
        from_slot = boot.slot if boot else "?"
        to_slot = boot.other if boot else "?"
        started = time.time()
        argv = [*self.c.rauc, "install", info.path]
        log.warning("installing %s (version %s) into slot %s", info.path, info.version, to_slot)
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
            )
        except OSError as exc:
            raise InstallFailed(f"rauc install ({' '.join(argv)}): {exc}") from None
        last = ""
        assert proc.stdout is not None
        deadline = time.monotonic() + INSTALL_TIMEOUT
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                last = line
                progress(line)
            if time.monotonic() > deadline:
                proc.kill()
                break
        rc = proc.wait()
        if rc != 0:
            raise InstallFailed(f"rauc install failed (exit {rc}): {last or 'no output'}; slot {from_slot} still boots")
        pending = marker.PendingUpdate(
            bundle=info.name or Path(info.path).name,
            bundle_version=info.version,
            from_slot=from_slot,
            to_slot=to_slot,
            started_at=started,
            boot_id=marker.boot_id(),
            recorded=self.record is not None,  # recorded just below, once the marker is safe
        )
        try:
            marker.write(self.c.state_dir, pending)
        except OSError as exc:
            raise InstallFailed(
                f"slot {to_slot} was written, but the update marker could not be ({exc}): not rebooting into it, "
                f"so nothing is pending and slot {from_slot} still boots (RAUC names slot {to_slot} for a try "
                "boot only; the next update writes it again)"
            ) from None
        if self.record is not None:
            self.record("update_installed", installed_detail(pending))
        return pending

    def reboot_into_try(self) -> None:
        """The one try boot; if it cannot be asked for, the marker says so (the next boot is the old slot's)."""
        try:
            self.c.run(self.c.reboot_try, "the try reboot")
        except InstallFailed as exc:
            marker.update(self.c.state_dir, failure=f"never tried: {exc}")
            raise


def installed_detail(p: marker.PendingUpdate) -> str:
    return f"installed {p.describe()} at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(p.started_at))} UTC"
