"""Emulated Model 370: the 372's scanner, readings and heater loop, seen through the 370's state.

The 370 is the 372's ancestor: the same 16-channel scanner (here a 3716) with its dwell and
change pause, the same reading physics and status bits, the same sample-heater loop in simulated
time. So ``LS370Device`` *is* an ``LS372Device`` (nothing is copied) with what the 370 keeps apart:
no control input A (the 372 state's ``A`` is never reachable: the 370's command table refuses it),
user curves 1-20 instead of 21-59, the heater set up as ``CMODE``/``CSET``/``HTRRNG`` (kept here,
mapped onto the 372 loop's output 0), the IEEE-488 settings, and the serial pacing rule.
What each command reads and replies is ``ls370_commands.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ls370_commands
from . import standard_curves as std
from .curve_memory import CurveMemory
from .ls372_device import LS372Device
from .physics import Fridge
from .protocol import Dispatcher
from .sim_clock import SimClock

CURVE_SLOTS = range(1, 21)  # all user curves (the 372 manual, 5.8: in 370 emulation, user curves 1-20)
CURVE_OF_372 = {21: 1, 22: 2}  # the 372 wiring's factory curves, as the 370 numbers them
CONTROL_CHANNEL = "5"  # the mixing-chamber thermometer (the 372 controls from A, which the 370 lacks)


@dataclass
class Control370:
    """``CSET`` and ``CPOL``: what the 370 keeps about its loop beyond the 372 output's fields."""

    filtered: int = 0
    units: int = 1  # 1 kelvin, 2 ohms (the loop controls on kelvin either way: FIDELITY.md)
    display: int = 1  # 1 current, 2 power
    limit: int = 8  # heater range limit, 0-8
    polarity: int = 0


def default_curves() -> CurveMemory:
    """Slots 1-20, empty as the 370's (UNVERIFIED: an empty 370 slot's header is not documented
    here; the 372's blank header is used) with the 372 emulator's two factory curves in 1 and 2."""
    from .ls372_device import empty_curve_slot

    mem = CurveMemory(CURVE_SLOTS, CURVE_SLOTS, blank=empty_curve_slot)
    mem.load(1, std.rx102a())
    mem.load(2, std.rx102a_calibrated())
    return mem


class LS370Device(LS372Device):
    """The 370's state; times are simulated seconds from ``clock``."""

    def __init__(self, clock: SimClock, fridge: Fridge, serial: str = "370A1B", seed: int | None = None) -> None:
        self.strict_pacing = True  # drop a message sent inside the manual's 50 ms quiet time
        super().__init__(clock, fridge, serial=serial, seed=seed)
        self.firmware = "04102008"  # UNVERIFIED: the 370's firmware field is not at hand
        self.curves = default_curves()
        self.power_on()

    def power_on(self) -> None:
        with self.lock:
            super().power_on()
            for c in self.channels.values():
                c.curve = CURVE_OF_372.get(c.curve, 0)
            self.channels["A"].enabled = 0
            self.outputs[0].input = CONTROL_CHANNEL
            self.outputs[0].mode = ls370_commands.MODE_372[4]  # CMODE 4: off
            self.control = Control370()
            self.ieee = (0, 0, 12)  # terminator, EOI, address (UNVERIFIED defaults)
            self.paced_drops = 0  # messages ignored for breaking the 50 ms rule
            now = self.clock.now()
            self._tick_cache.clear()
            for ch in self.channels:  # measured again through the 370's curve numbers
                self.last[ch] = self._measure(ch, now)

    def dispatcher(self) -> Dispatcher:
        """This device behind the 370's command table, as one link sees it."""
        return ls370_commands.dispatcher(self)
