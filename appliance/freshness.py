"""When is a reading due? The 372's autoscan visits each enabled input for its pause + dwell, so
a scanned channel is read only while the scanner is on it: between visits it is not stale, it
is waiting. ``schedule`` says, per series, how long readings are apart and when the next is due;
the front panel shows "scanning · next in ≈ N s" from it and calls a reading stale only past
the expected revisit time plus ``web.stale_after``. Input A (read every cycle) and the 240 keep
the simple rule: stale after ``web.stale_after``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .poller import Poller


@dataclass
class Due:
    gap: float  # seconds between readings (the rotation's period for a scanned channel)
    scanned: bool  # read only while the autoscan is on it
    next_in: float | None = None  # seconds until the next reading is due (scanned channels)
    active: bool = False  # the scanner is on this channel now


def scan_gap(scan: dict | None, channel: str, interval: float) -> float:
    """Seconds between readings of a 372 channel: the autoscan's whole rotation if it is in it."""
    if not scan or channel == "A" or not scan.get("autoscan"):
        return interval
    rotation = scan.get("rotation") or []
    if channel not in [c for c, _p, _d in rotation]:
        return interval
    return max(interval, sum(p + d for _c, p, d in rotation)) + interval


def next_in(scan: dict, channel: str, now: float) -> float:
    """Seconds until the scanner next reads ``channel`` (after the channel's change pause)."""
    rotation = scan["rotation"]
    order = [c for c, _p, _d in rotation]
    setup = {c: (p, d) for c, p, d in rotation}
    active = scan["channel"]
    spent = max(0.0, now - scan["switched"])
    if channel == active:
        return max(0.0, setup[channel][0] - spent)
    if active not in setup:
        return float(sum(p + d for _c, p, d in rotation))
    wait = max(0.0, sum(setup[active]) - spent)
    i = (order.index(active) + 1) % len(order)
    while order[i] != channel:
        wait += sum(setup[order[i]])
        i = (i + 1) % len(order)
    return wait + setup[channel][0]


def schedule(pollers: Sequence[Poller], now: float) -> dict[str, Due]:
    """Per series name (node::field): when its readings are due."""
    out: dict[str, Due] = {}
    for p in pollers:
        scan = p.health.scan  # set only by an acquisition with a scanner (the 372's)
        for plan in list(p.plans.values()):
            gap = scan_gap(scan, plan.number, p.cfg.interval)
            scanned = scan is not None and plan.number != "A" and gap > p.cfg.interval
            due = Due(gap, scanned)
            if scan is not None and scanned:
                due.next_in = next_in(scan, plan.number, now)
                due.active = scan["channel"] == plan.number
            for key in (plan.kelvin, plan.sensor):
                if key is not None:
                    out[key.name] = due
    return out
