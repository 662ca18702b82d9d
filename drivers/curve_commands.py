"""Curve commands shared by the 372 and the 240 (``CRVHDR``, ``CRVPT``, ``CRVDEL``).

Both models speak the same curve commands; they differ only in how a curve is
numbered and checked, how a command is sent, and how closely a point reads back.
``CurveCommands`` holds the commands once and asks the model for those four
things through small hooks:

* ``_curve_number(number, access)``: validate the curve number. The 372 has
  curves 1-59 of which 21-59 are user curves; the 240 has one curve per input,
  so its curve number is the input number.
* ``_send_setting(message)``: the 372 sends ``CMD;*ESR?`` and raises on ESR error
  bits; the 240 has no status register and just writes.
* ``_after_curve_point()``: the 372 needs a pause between points (socs found
  50 ms lost points over TCP); the 240 does not.
* ``_same_curve_value(a, b)``: the 372 keeps 6 significant digits; the 240 six
  digits counting the integer ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from .base import quote_name
from .commands import record, text
from .curves import Curve
from .errors import BadReply, InstrumentError
from .parse import decode, parse_float, parse_int

# "header": reading a header (any curve); "user": writing or deleting one; "point": a breakpoint
CurveAccess = Literal["header", "user", "point"]


@dataclass(frozen=True)
class CurveHeader:
    """CRVHDR: name (15 chars), serial (10), data format, setpoint limit in kelvin, coefficient 1 neg / 2 pos."""

    name: str
    serial: str
    data_format: int
    limit: float
    coefficient: int


_parse_header = record(CurveHeader, text, text, parse_int, parse_float, parse_int)


class CurveCommands:
    """Curve header, points, upload and download for a Lake Shore model (mixed into the model class)."""

    # the BadReply message for a CRVPT? reply that is not 2 (or 3) fields
    curve_point_shape: ClassVar[str] = "expected units,temperature"
    # the data formats a curve in this model's memory may have (CRVHDR's format field)
    curve_formats: ClassVar[tuple[int, ...]] = ()
    # how an error names the curves a user may write ("user curves" on the 372)
    user_curves_label: ClassVar[str] = "curves"

    @property
    def curve_slots(self) -> range:
        """The curve numbers that exist on this instrument."""
        raise NotImplementedError

    @property
    def user_curve_slots(self) -> range:
        """The curve numbers a user may write or delete."""
        raise NotImplementedError

    def same_curve_value(self, a: float, b: float) -> bool:
        """Equal at the resolution this model keeps a curve value at (what a read-back can promise)."""
        return self._same_curve_value(a, b)

    if TYPE_CHECKING:  # provided by Instrument and the model

        def query_raw(self, message: str) -> bytes: ...

        def _send_setting(self, message: str) -> None: ...

    def _curve_number(self, number: int, access: CurveAccess) -> int | str:
        """A controller's numbering (372, 336, 350): any slot's header may be read, user slots written."""
        slots, user = self.curve_slots, self.user_curve_slots
        if access == "header" and number not in slots:
            raise ValueError(f"curve number {number} is not {slots[0]}-{slots[-1]}")
        if access == "user" and number not in user:
            raise ValueError(f"user curves are {user[0]}-{user[-1]}, not {number}")
        return number

    def _after_curve_point(self) -> None:
        """Pause after writing a breakpoint, if the model needs one."""

    @staticmethod
    def _same_curve_value(a: float, b: float) -> bool:
        raise NotImplementedError

    # -- commands ------------------------------------------------------------
    def curve_header(self, number: int) -> CurveHeader:
        """Get a curve's header."""
        q = f"CRVHDR? {self._curve_number(number, 'header')}"
        return _parse_header(self.query_raw(q), q)

    def set_curve_header(self, number: int, h: CurveHeader) -> None:
        """Set a user curve's header (name and serial are quoted; ``,`` ``;`` ``"`` are refused)."""
        self._send_setting(
            f"CRVHDR {self._curve_number(number, 'user')},{quote_name(h.name, 15)},"
            f"{quote_name(h.serial, 10)},{h.data_format},{h.limit:g},{h.coefficient}"
        )

    def curve_point(self, number: int, index: int) -> tuple[float, float]:
        """Get breakpoint ``index`` (1-200) as (units, kelvin); ``(0, 0)`` past the curve's end."""
        q = f"CRVPT? {self._curve_number(number, 'point')},{index}"
        raw = self.query_raw(q)
        f = decode(raw, q).split(",")
        if len(f) not in (2, 3):  # the 372 may add a curvature field
            raise BadReply(self.curve_point_shape, raw, q)
        return parse_float(f[0], q), parse_float(f[1], q)

    def set_curve_point(self, number: int, index: int, units: float, kelvin: float) -> None:
        """Set breakpoint ``index`` (six significant digits are kept)."""
        self._send_setting(f"CRVPT {self._curve_number(number, 'point')},{index},{units:.6g},{kelvin:.6g}")

    def delete_curve(self, number: int) -> None:
        """Delete a user curve (header and points)."""
        self._send_setting(f"CRVDEL {self._curve_number(number, 'user')}")

    # -- whole curves --------------------------------------------------------
    def upload_curve(self, number: int, curve: Curve, verify: bool = True) -> None:
        """Write a whole curve (delete, header, every point), then read every point back.

        The name (15 characters) and serial (10) are checked before anything is sent: one the
        header cannot hold raises ValueError naming the limit (never cut, never a slot emptied first).
        """
        quote_name(curve.name, 15)
        quote_name(curve.serial, 10)
        self.delete_curve(number)
        self.set_curve_header(
            number, CurveHeader(curve.name, curve.serial, curve.data_format, curve.limit, curve.coefficient)
        )
        for i, (u, t) in enumerate(curve.points, 1):
            self.set_curve_point(number, i, u, t)
            self._after_curve_point()
        if verify:
            for i, (u, t) in enumerate(curve.points, 1):
                got = self.curve_point(number, i)
                if not (self._same_curve_value(got[0], u) and self._same_curve_value(got[1], t)):
                    raise InstrumentError(f"curve {number} point {i}: wrote ({u:.6g}, {t:.6g}), read back {got}")

    def download_curve(self, number: int) -> Curve:
        """Read a curve: its header and points up to the first ``(0, 0)`` (at most 200)."""
        h = self.curve_header(number)
        points = []
        for i in range(1, 201):
            u, t = self.curve_point(number, i)
            if u == 0 and t == 0:
                break
            points.append((u, t))
        return Curve(h.name, h.serial, h.data_format, h.limit, h.coefficient, points)
