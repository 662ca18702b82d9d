"""The scanner-input commands the 372 shares with its ancestor, the 370 (``INSET``, ``SCAN``).

Both bridges step one scanner through their channels, each with an ``INSET`` of enable, dwell,
pause, curve and tempco (370 manual p.6-29; 372 manual); they differ in which channels exist
(the 372 adds its control input A) and how many curves a channel may name (370: 20; 372: 59).
A model mixes this in and declares ``_ch`` and ``max_curve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .base import Instrument
from .commands import Query, flag, record
from .parse import parse_int


@dataclass(frozen=True)
class InputSetup:
    """INSET: enable, dwell 1-200 s, pause 3-200 s, curve (0 none), tempco 1 neg / 2 pos."""

    enabled: bool
    dwell: int
    pause: int
    curve: int
    tempco: int


class ScannedInputs(Instrument):
    """``INSET?``/``INSET`` and ``SCAN``, for a model with ``_ch`` (its channel check) and ``max_curve``."""

    max_curve: ClassVar[int] = 0

    def _ch(self, channel: str | int) -> str:
        raise NotImplementedError

    def _scanned(self, channel: str | int) -> str:
        """A channel the model has (its own ``_ch``)."""
        return self._ch(channel)

    input_setup = Query(
        "INSET? {}",
        record(InputSetup, flag, parse_int, parse_int, parse_int, parse_int),
        "Get a channel's INSET: enabled, dwell, pause, curve, tempco.",
        _scanned,
    )

    def set_input_setup(self, channel: str | int, s: InputSetup) -> None:
        if not (1 <= s.dwell <= 200 and 3 <= s.pause <= 200 and 0 <= s.curve <= self.max_curve and s.tempco in (1, 2)):
            raise ValueError(
                f"INSET values out of range (dwell 1-200, pause 3-200, curve 0-{self.max_curve}, tempco 1-2): {s}"
            )
        self.command(f"INSET {self._ch(channel)},{int(s.enabled)},{s.dwell},{s.pause},{s.curve},{s.tempco}")

    if TYPE_CHECKING:  # the model's: a setting sent with its ESR check

        def command(self, message: str) -> None: ...
