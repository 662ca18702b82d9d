"""Which slot every normal boot starts: RAUC's primary, asked with ``rauc status --output-format=json``.

It is what tells a committed try from one still on trial. The firmware's tryboot flag in the device
tree stays 1 until the next reboot, so a service restarted on the try boot after the commit (a new
configuration, a crash, the watchdog) still sees a try; RAUC's primary does not: the image's backend
(``get-primary``) reads ``autoboot.txt``'s ``[all]`` section, which the commit pointed at the booted
slot. RAUC 1.8 answers (one line; its JSON output, checked against ``rauc service``)::

    {"compatible":"kelvinpi-rpi-arm64","variant":"","booted":"B","boot_primary":"rootfs.1",
     "slots":[{"rootfs.1":{"class":"rootfs","bootname":"B","state":"booted",...}},
              {"rootfs.0":{"class":"rootfs","bootname":"A","state":"inactive",...}}]}

``boot_primary`` is a slot name and null when the backend could not say; the slot's ``bootname`` is
the appliance's slot letter (``devicetree.SLOTS``).
"""

from __future__ import annotations

import json
import logging

from .install import InstallFailed, UpdateCommands

log = logging.getLogger("kelvinpi.update")


def rauc_primary(c: UpdateCommands) -> str | None:
    """The slot letter (A, B) RAUC names primary, or None when RAUC cannot say (not running, no answer,
    an answer of another shape: the reason is logged)."""
    try:
        out = c.run([*c.rauc, "status", "--output-format=json"], "rauc status", timeout=30.0)
    except InstallFailed as exc:
        log.warning("RAUC's primary slot unknown: %s", exc)
        return None
    return parse_primary(out)


def parse_primary(out: str) -> str | None:
    try:
        status = json.loads(out)
    except ValueError:
        log.warning("RAUC's primary slot unknown: rauc status gave no JSON (%r)", out[:80])
        return None
    if not isinstance(status, dict) or not isinstance(status.get("boot_primary"), str):
        log.warning("RAUC's primary slot unknown: rauc status names none")
        return None
    primary = status["boot_primary"]
    slots = status.get("slots")
    for entry in slots if isinstance(slots, list) else []:
        slot = entry.get(primary) if isinstance(entry, dict) else None
        if isinstance(slot, dict) and isinstance(slot.get("bootname"), str):
            return slot["bootname"]
    log.warning("RAUC's primary slot %s has no bootname in rauc status", primary)
    return None
