"""The emulated instruments' curve memory: fixed slots of 200 breakpoints, as the firmware keeps them.

A real 372 or 240 stores every curve as a header and 200 breakpoint cells; a cell never
written (or cleared by ``CRVDEL``) reads back as ``0,0``, and a curve ends at its first
empty cell. That is what this class models, apart from the drivers' ``Curve`` (which is
a parsed ``.340`` file): the emulator answers ``CRVHDR?``/``CRVPT?`` from the cells, and
its physics converts through the curve the cells describe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.curves import FORMAT_NAMES, Curve

POINTS = 200  # breakpoints per curve on both the 372 and the 240


@dataclass
class CurveSlot:
    """One curve's header and its 200 breakpoint cells (units, kelvin)."""

    name: str = ""
    serial: str = ""
    data_format: int = 0
    limit: float = 0.0
    coefficient: int = 0
    cells: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 0.0)] * POINTS)

    @property
    def empty(self) -> bool:
        return self.data_format == 0 and not any(u or t for u, t in self.cells)

    def header_reply(self) -> str:
        """``CRVHDR?``'s answer. A slot with format 0 (the 240's empty slot) reads ``,,0,+000.000,0``;
        the 372 keeps a blank header in an empty slot instead (``CurveMemory(blank=...)``)."""
        if self.empty:
            return ",,0,+000.000,0"
        return f"{self.name},{self.serial},{self.data_format},{self.limit:+08.3f},{self.coefficient}"

    def breakpoints(self) -> list[tuple[float, float]]:
        """The curve's points: every cell up to the first empty one."""
        out = []
        for u, t in self.cells:
            if u == 0 and t == 0:
                break
            out.append((u, t))
        return out


class CurveMemory:
    """Numbered curve slots; ``writable`` are the numbers a user may change (372: 21-59; 240: 1-8)."""

    def __init__(
        self,
        numbers: range,
        writable: range,
        recompute_coefficient: bool = True,
        blank: Callable[[], CurveSlot] = CurveSlot,
    ) -> None:
        self.blank = blank  # what an empty (never written, or deleted) slot holds
        self.slots: dict[int, CurveSlot] = {n: blank() for n in numbers}
        self.writable = writable
        self.recompute_coefficient = recompute_coefficient
        self._cache: dict[int, Curve | None] = {}

    def load(self, number: int, curve: Curve) -> None:
        """Store a whole curve (factory contents, or a test's setup)."""
        slot = CurveSlot(curve.name, curve.serial, curve.data_format, curve.limit, curve.coefficient)
        for i, p in enumerate(curve.points[:POINTS]):
            slot.cells[i] = (float(p[0]), float(p[1]))
        self.slots[number] = slot
        self._cache.pop(number, None)

    def slot(self, number: int) -> CurveSlot:
        return self.slots[number]

    def set_header(self, number: int, name: str, serial: str, data_format: int, limit: float, coefficient: int) -> None:
        s = self.slots[number]
        s.name, s.serial, s.data_format, s.limit, s.coefficient = name, serial, data_format, limit, coefficient
        self._cache.pop(number, None)

    def set_point(self, number: int, index: int, units: float, kelvin: float) -> None:
        s = self.slots[number]
        s.cells[index - 1] = (units, kelvin)
        if self.recompute_coefficient and index <= 2:
            (u0, t0), (u1, t1) = s.cells[0], s.cells[1]
            if (u0 or t0) and (u1 or t1) and (u1 - u0) * (t1 - t0) != 0:
                # the manuals: the coefficient is recomputed from the first two breakpoints
                s.coefficient = 1 if (u1 - u0) * (t1 - t0) < 0 else 2
        self._cache.pop(number, None)

    def delete(self, number: int) -> None:
        self.slots[number] = self.blank()
        self._cache.pop(number, None)

    def curve(self, number: int) -> Curve | None:
        """The curve slot ``number`` describes, for conversion; None when it is empty or unusable."""
        if number in self._cache:
            return self._cache[number]
        s = self.slots.get(number)
        result = None
        if s is not None and s.data_format in FORMAT_NAMES and s.coefficient in (1, 2):
            pts = s.breakpoints()
            if pts:
                result = Curve(s.name, s.serial, s.data_format, s.limit, s.coefficient, pts)
        self._cache[number] = result
        return result
