"""Lake Shore ``.340`` calibration curves: parse, write, interpolate.

Real files carry extra header lines, odd spacing and mixed number styles
(``9.05392e-02``, ``.113581``); the parser reads the header by key, not by line
position, and takes every line with ``index units temperature`` as a breakpoint.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_NAMES = {
    2: "V/K",
    3: "Ohm/K",
    4: "log Ohm/K",
    7: "Ohm/K cubic spline",
}

_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[Ee][+-]?\d+)?"
_POINT = re.compile(rf"^\s*(\d+)\s+({_NUM})\s+({_NUM})\s*$")
_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z .]*?)\s*:\s*(.*?)\s*$")


class CurveError(ValueError):
    """A curve file or curve data is not usable; the message names the line."""


@dataclass
class Curve:
    """A calibration curve: breakpoints (sensor units, kelvin), in file order."""

    name: str
    serial: str
    data_format: int
    limit: float
    coefficient: int  # 1 negative, 2 positive
    points: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.data_format not in FORMAT_NAMES:
            raise CurveError(f"data format {self.data_format} is not one of {sorted(FORMAT_NAMES)}")
        if not 1 <= len(self.points) <= 200:
            raise CurveError(f"a curve needs 1 to 200 breakpoints, got {len(self.points)}")
        if self.coefficient not in (1, 2):
            raise CurveError(f"temperature coefficient must be 1 (negative) or 2 (positive), got {self.coefficient}")

    # -- physics helpers ----------------------------------------------------
    def _sensor_to_units(self, sensor: float) -> float:
        """Sensor value (ohms or volts) to the curve's units axis."""
        if self.data_format == 4:
            if sensor <= 0:
                return -math.inf
            return math.log10(sensor)
        return sensor

    def _units_to_sensor(self, units: float) -> float:
        return 10.0**units if self.data_format == 4 else units

    @property
    def t_range(self) -> tuple[float, float]:
        temps = [t for _, t in self.points]
        return min(temps), max(temps)

    @property
    def sensor_range(self) -> tuple[float, float]:
        values = [self._units_to_sensor(u) for u, _ in self.points]
        return min(values), max(values)

    def temperature(self, sensor: float) -> float | None:
        """Kelvin for a sensor value by linear interpolation in the curve's units; None if off the curve."""
        u = self._sensor_to_units(sensor)
        pts = sorted(self.points)
        xs = [p[0] for p in pts]
        if not xs[0] <= u <= xs[-1]:
            return None
        i = bisect.bisect_left(xs, u)
        if i == 0:
            return pts[0][1]
        (x0, t0), (x1, t1) = pts[i - 1], pts[i]
        if x1 == x0:
            return t0
        return t0 + (t1 - t0) * (u - x0) / (x1 - x0)

    def sensor(self, kelvin: float) -> float | None:
        """Sensor value for a temperature (inverse interpolation); None if off the curve."""
        pts = sorted(self.points, key=lambda p: p[1])
        ts = [p[1] for p in pts]
        if not ts[0] <= kelvin <= ts[-1]:
            return None
        i = bisect.bisect_left(ts, kelvin)
        if i == 0:
            return self._units_to_sensor(pts[0][0])
        (u0, t0), (u1, t1) = pts[i - 1], pts[i]
        u = u0 if t1 == t0 else u0 + (u1 - u0) * (kelvin - t0) / (t1 - t0)
        return self._units_to_sensor(u)


def parse_340(text: str, source: str = "<curve>") -> Curve:
    """Parse the text of a ``.340`` file."""
    header: dict[str, str] = {}
    points: list[tuple[float, float]] = []
    expected_index = 1
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _POINT.match(line)
        if m:
            idx = int(m.group(1))
            if idx != expected_index:
                raise CurveError(f"{source}:{lineno}: breakpoint number {idx}, expected {expected_index}")
            points.append((float(m.group(2)), float(m.group(3))))
            expected_index += 1
            continue
        h = _HEADER.match(line)
        if h and not points:
            header[h.group(1).strip().lower()] = h.group(2)
            continue
        if points:
            raise CurveError(f"{source}:{lineno}: not a breakpoint line: {line.strip()!r}")
        # Column titles such as "No.   Units   Temperature (K)" and other free text before the data.

    def need(key: str) -> str:
        for k, v in header.items():
            if k.startswith(key):
                return v
        raise CurveError(f"{source}: header has no {key!r} line")

    def leading_number(key: str) -> str:
        value = need(key)
        m = re.match(_NUM, value.strip())
        if not m:
            raise CurveError(f"{source}: header {key!r} has no number: {value!r}")
        return m.group(0)

    declared = header.get("number of breakpoints")
    if (
        declared is not None
        and declared.split()
        and declared.split()[0].isdigit()
        and int(declared.split()[0]) != len(points)
    ):
        raise CurveError(f"{source}: header says {declared.split()[0]} breakpoints, file has {len(points)}")
    try:
        return Curve(
            name=need("sensor model").strip(),
            serial=need("serial number").strip(),
            data_format=int(float(leading_number("data format"))),
            limit=float(leading_number("setpoint limit")),
            coefficient=int(float(leading_number("temperature coefficient"))),
            points=points,
        )
    except CurveError as exc:
        raise CurveError(f"{source}: {exc}") from None


def read_340(path: str | Path) -> Curve:
    p = Path(path)
    return parse_340(p.read_text(encoding="ascii", errors="replace"), str(p))


def write_340(curve: Curve) -> str:
    """Render a curve as a ``.340`` file that ``parse_340`` (and Lake Shore's tools) read back."""
    lines = [
        f"Sensor Model:   {curve.name}",
        f"Serial Number:  {curve.serial}",
        f"Data Format:    {curve.data_format}      ({FORMAT_NAMES[curve.data_format]})",
        f"SetPoint Limit: {curve.limit:g}      (Kelvin)",
        f"Temperature coefficient:  {curve.coefficient} ({'Negative' if curve.coefficient == 1 else 'Positive'})",
        f"Number of Breakpoints:   {len(curve.points)}",
        "",
        "No.   Units      Temperature (K)",
        "",
    ]
    for i, (u, t) in enumerate(curve.points, 1):
        lines.append(f"{i:3d}  {u:.6g}        {t:.6g}")
    return "\n".join(lines) + "\n"
