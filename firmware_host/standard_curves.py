"""The calibration curves the emulated sensors follow (real Lake Shore standard curves)."""

from __future__ import annotations

import math
from functools import cache
from importlib import resources

from drivers.curves import Curve, parse_340


@cache
def standard(name: str) -> Curve:
    text = resources.files("firmware_host").joinpath("curves", f"{name}.340").read_text(encoding="ascii")
    return parse_340(text, f"{name}.340")


def rx102a() -> Curve:
    return standard("RX-102A")


def dt670() -> Curve:
    return standard("DT-670")


@cache
def rx102a_calibrated(serial: str = "EMU-MXC") -> Curve:
    """A calibrated-RuOx curve reaching 8 mK, as a mixing-chamber thermometer has.

    The standard RX-102A stops at 50 mK; a calibrated sensor continues the same
    log R / log T trend, which we extrapolate from the curve's coldest points.
    """
    base = rx102a()
    pts = sorted(base.points, key=lambda p: p[1])  # cold to warm
    (u0, t0), (u1, t1) = pts[0], pts[3]
    slope = (u1 - u0) / (math.log10(t1) - math.log10(t0))
    extra = []
    for t in (0.045, 0.040, 0.035, 0.030, 0.025, 0.020, 0.016, 0.013, 0.010, 0.008):
        extra.append((u0 + slope * (math.log10(t) - math.log10(t0)), t))
    points = sorted(base.points + extra, key=lambda p: -p[1])[:200]
    return Curve("RX-102A-CAL", serial, 4, 40.0, 1, points)
