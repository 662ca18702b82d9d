"""At start: what became of an update the marker says is pending, told as one event.

The marker (``marker.py``) outlives every reboot until a boot settles it:

* on the try boot itself: ``update_installed`` is recorded if the installer could not (the command
  line runs beside the service, which owns the store); the health gate decides the rest;
* not on a try, booted from another slot than the update's: the try did not commit (its gate
  failed: the marker says why; or power was cut, the watchdog fired, the service crashed), so
  ``update_rolled_back`` with the reason, and the marker goes;
* not on a try, booted from the update's slot: it was committed, and a power cut came before the
  marker went: ``update_committed`` (late), and the marker goes.
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


def reconcile(state_dir: Path, boot: BootInfo | None, record: Callable[[str, str], None]) -> str | None:
    """Settle the marker for this boot; the event kind recorded last, or None if nothing was pending."""
    try:
        pending = marker.read(state_dir)
    except marker.MarkerError as exc:
        log.error("%s: left in place", exc)
        return None
    if pending is None:
        return None
    if boot is None:
        log.warning("an update is pending (%s) but this boot has no A/B slot information", pending.describe())
        return None
    if not pending.recorded:
        record("update_installed", installed_detail(pending))
        if boot.tryboot:
            marker.update(state_dir, recorded=True)
    if boot.tryboot:
        return "update_installed" if not pending.recorded else None
    if boot.slot != pending.to_slot:
        reason = pending.failure or NO_COMMIT
        record("update_rolled_back", f"back on slot {boot.slot}: {pending.describe()} was rolled back: {reason}")
        kind = "update_rolled_back"
    else:
        record("update_committed", f"{pending.describe()} was committed (found on the next boot)")
        kind = "update_committed"
    marker.remove(state_dir)
    log.warning("%s: %s", kind, pending.describe())
    return kind
