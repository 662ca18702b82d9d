"""At start: what became of an update the marker says is pending, told as one event.

The marker (``marker.py``) outlives every reboot until a boot settles it:

* on the boot that installed it (the service restarted before the try reboot): nothing yet, the
  try has not happened;
* on the try boot of the update's slot: ``update_installed`` is recorded if the installer could not
  (the command line runs beside the service, which owns the store); the health gate decides the rest;
* on a try boot of another slot than the update's (the firmware's ``[tryboot]`` no longer named it):
  the update was never tried, so ``update_rolled_back`` saying so, and the marker goes;
* not on a try, booted from another slot than the update's: the try did not commit (its gate
  failed: the marker says why; or power was cut, the watchdog fired, the service crashed), so
  ``update_rolled_back`` with the reason, and the marker goes;
* not on a try, booted from the update's slot: it was committed, and a power cut came before the
  marker went: ``update_committed`` (late, once: not if the marker says the try recorded it), and
  the marker goes;
* a marker that cannot be read (empty, cut short, another shape): ``update_unknown`` with what the
  boot knows, and the file is set aside beside it (``pending.json.unreadable-<time>``); on a normal
  boot of the primary slot (not the one that wrote it) the other slot's try is disarmed, as after a
  rollback, and then the event is recorded, saying whether it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from . import marker
from .devicetree import BootInfo
from .install import installed_detail

log = logging.getLogger("kelvinpi.update")

NO_COMMIT = "the try did not commit: power cut, watchdog or crash"
Record = Callable[[str, str], None]


def reconcile(
    state_dir: Path,
    boot: BootInfo | None,
    record: Record,
    primary: Callable[[], str | None] | None = None,
    forget_other: Callable[[], object] | None = None,
) -> str | None:
    """Settle the marker for this boot; the event kind recorded last, or None if nothing was settled.

    ``primary``: RAUC's primary slot letter (None: cannot say). A normal boot of the update's slot is
    its commit only if RAUC names that slot primary too: a firmware that started ``[tryboot]`` without
    the flag, or a hand-made ``reboot 3``, boots it unjudged (where RAUC cannot say, it is taken as the
    commit, as before RAUC was asked). ``forget_other``: ``rauc status mark-bad other``, run once a
    rollback is recorded (or an unreadable marker is set aside on a normal boot of the primary): it
    points ``autoboot.txt``'s ``[tryboot]`` back at the running slot, so that no later try reboot (a
    stale reboot request, a hand-made one) starts the rolled-back release again, where the gate,
    finding no marker, would judge and commit it."""
    try:
        pending = marker.read(state_dir)
    except marker.MarkerError as exc:
        return _unreadable(state_dir, boot, record, exc, primary, forget_other)
    if pending is None:
        return None
    if boot is None:
        log.warning("an update is pending (%s) but this boot has no A/B slot information", pending.describe())
        return None
    # installed on this boot, whatever this boot is (a try that committed may install the next update):
    # its try reboot has not happened yet
    if pending.boot_id and pending.boot_id == marker.boot_id():
        log.warning(
            "%s is installed and waits for its try reboot (this is the boot that installed it)", pending.describe()
        )
        return None
    if not pending.recorded:
        record("update_installed", installed_detail(pending))
        if boot.tryboot and boot.slot == pending.to_slot:
            marker.update(state_dir, recorded=True)
    if boot.tryboot and boot.slot == pending.to_slot:
        return "update_installed" if not pending.recorded else None
    if boot.tryboot:
        reason = f"the try boot started slot {boot.slot}, not slot {pending.to_slot}: the update was never tried"
        record("update_rolled_back", f"on slot {boot.slot}: {pending.describe()} was rolled back: {reason}")
        kind = "update_rolled_back"
    elif boot.slot != pending.to_slot:
        reason = pending.failure or NO_COMMIT
        record("update_rolled_back", f"back on slot {boot.slot}: {pending.describe()} was rolled back: {reason}")
        kind = "update_rolled_back"
    else:
        first = primary() if primary is not None else boot.slot
        if first is not None and first != boot.slot:
            record(
                "update_unknown",
                f"booted slot {boot.slot} normally, but RAUC's primary is slot {first}: {pending.describe()} "
                "was never judged (a boot of it without the firmware's tryboot flag); the next normal boot "
                f"starts slot {first}",
            )
            marker.remove(state_dir)
            log.error("update_unknown: slot %s booted normally but not primary (%s)", boot.slot, first)
            return "update_unknown"
        settle_committed(state_dir, pending, record, "found on the next boot")
        return "update_committed"
    marker.remove(state_dir)  # first: a restart while RAUC is slow must not record the rollback twice
    log.warning("%s: %s", kind, pending.describe())
    _disarm_other(boot, pending.to_slot, primary, forget_other)
    return kind


def settle_committed(state_dir: Path, pending: marker.PendingUpdate, record: Record, found: str) -> None:
    """A committed update's marker: ``update_committed`` unless the commit recorded it already (the
    ``committed`` field), then the marker goes. Idempotent: a removal that fails is tried again at the
    next start, and no second event."""
    if not pending.committed:
        record("update_committed", f"{pending.describe()} was committed ({found})")
        try:
            marker.update(state_dir, committed=True)
        except (marker.MarkerError, OSError) as exc:
            log.error("the update marker could not note the commit: %s", exc)
    marker.remove(state_dir)
    log.warning("update_committed: %s", pending.describe())


def _disarm_other(
    boot: BootInfo, other: str, primary: Callable[[], str | None] | None, forget_other: Callable[[], object] | None
) -> str:
    """``rauc status mark-bad other``: ``[tryboot]`` back at the running slot, so no later try reboot
    starts the other slot unjudged. "Other" is the slot not running; marking it bad resets ``[all]``
    too if it is the primary: so only when the running slot is the primary (a hand-made boot of the
    old slot after a commit must not undo the commit). Returns what was done, for the event."""
    if forget_other is None:
        return f"slot {other} left as it was (no updater here)"
    try:
        first = primary() if primary is not None else boot.slot
    except Exception as exc:  # RAUC's answer could not be read: as "cannot say", and the event still recorded
        log.error("RAUC's primary slot unknown: %s", exc)
        first = None
    if first != boot.slot:
        why = "RAUC cannot say which slot is primary" if first is None else f"RAUC's primary is slot {first}"
        log.error("not disarming slot %s's try: %s, not the running slot %s", other, why, boot.slot)
        return f"slot {other} NOT marked bad: {why}"
    try:
        forget_other()
    except Exception as exc:  # the event is recorded; a stale [tryboot] is only a risk, logged
        log.error("slot %s could not be marked bad (rauc): %s", other, exc)
        return f"slot {other} NOT marked bad: {exc}"
    return f"slot {other} marked bad (no try of it stays armed)"


def _unreadable(
    state_dir: Path,
    boot: BootInfo | None,
    record: Record,
    exc: marker.MarkerError,
    primary: Callable[[], str | None] | None = None,
    forget_other: Callable[[], object] | None = None,
) -> str:
    """Tell what is known of an update whose marker cannot be read, and set the marker aside. On a
    normal boot the other slot's try is disarmed as after a rollback, so an update with no record is
    not started unjudged by a later try reboot; not on the boot that wrote the marker (this boot's id
    is in what is left of it: its try reboot is on the way), whose try goes ahead and is judged."""
    try:
        raw = marker.marker_path(state_dir).read_text(encoding="utf-8", errors="replace")
    except OSError:
        raw = ""
    this_boot = marker.boot_id()
    aside = marker.set_aside(state_dir)  # first: whatever RAUC does next, the next start is not blocked
    if boot is None:
        where = "this boot has no A/B slot information"
    elif boot.tryboot:
        where = f"this boot is a try of slot {boot.slot}: it commits only if RAUC shows it is on trial"
    elif this_boot and this_boot in raw:
        where = f"booted slot {boot.slot} normally and this boot wrote it: the try reboot it asked for goes ahead"
    else:
        where = f"booted slot {boot.slot} normally: whichever update it was is not on trial"
        where += "; " + _disarm_other(boot, boot.other, primary, forget_other)
    record(
        "update_unknown", f"an update was pending but its marker is unreadable ({exc}); {where}; set aside as {aside}"
    )
    log.error("%s; %s; set aside as %s", exc, where, aside)
    return "update_unknown"
