"""Emulated Model 336 / 350: device state, readings and the heater loops in simulated time.

The state (inputs, outputs, curves) lives in ``LS336Device``; what each command reads, refuses and
replies is ``ls336_commands.py``, so the physics never sees a string and the wire code never sees a
kelvin. The 350 is the same device with its differences as arguments (``model``, heater ranges).

Thermometers: on a dilution fridge a 336 reads the warm stages. Input A is a DT-670 diode on the
50 K plate, B a DT-670 on the 4 K plate, C and D RX-102A ruthenium oxides (NTC RTDs) on the still
and the cold plate; the 3062 option's D2-D5 carry RX-102As on the mixing chamber and the still.
Output 1 heats the still, output 2 the mixing chamber; outputs 3 and 4 drive nothing physical.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from drivers.curves import Curve

from . import ls336_commands
from . import standard_curves as std
from .controller import ESR_PON, TICK_SLACK, EventRegisters, SteppedLoop, TickedReadings
from .curve_memory import CurveMemory, CurveSlot
from .physics import Fridge, Noise
from .protocol import Dispatcher
from .sim_clock import SimClock

INPUTS = ("A", "B", "C", "D")
SCANNER_INPUTS = ("D2", "D3", "D4", "D5")
# input -> (stage, default name, sensor type, curve slot)
DIODE, PTC, NTC = 1, 2, 3
WIRING = {
    "A": ("50k", "50K Plate", DIODE, 1),
    "B": ("4k", "4K Plate", DIODE, 1),
    "C": ("still", "Still", NTC, 8),
    "D": ("cold_plate", "Cold Plate", NTC, 8),
    "D2": ("mxc", "MXC", NTC, 8),
    "D3": ("still", "Still 2", NTC, 8),
}
# standard curve slots and their header names: UNVERIFIED (FIDELITY.md, Model 336); a header holds 15 + 10 characters
STANDARD_CURVES = {1: (std.dt670, "DT-670"), 8: (std.rx102a, "RX-102A-AA")}
# Heater outputs 1-2: max current by HTRSET code (1-4; 0 = the user's value), in amperes (manual; socs max_current_key)
MAX_CURRENT = {1: 0.707, 2: 1.0, 3: 1.141, 4: 2.0}
RESISTANCE = {1: 25.0, 2: 50.0}
STAGE_OF_OUTPUT = {1: "still", 2: "mxc"}
# Diode range 0 (2.5 V): a reading past it sets "sensor units overrange"
DIODE_FULL_SCALE = {0: 2.5, 1: 10.0}


@dataclass
class Input336:
    sensor_type: int = 0
    autorange: int = 1
    range: int = 0
    compensation: int = 0
    units: int = 1
    curve: int = 0
    name: str = ""
    tlimit: float = 0.0
    filt: tuple[int, int, int] = (0, 10, 10)  # FILTER: on, points, window %


@dataclass
class Output336:
    mode: int = 0
    input: int = 0  # 0 none, 1-4 A-D, 5-8 D2-D5
    powerup: int = 0
    range: int = 0
    resistance: int = 1  # 1 = 25 ohm, 2 = 50 ohm
    max_current: int = 2
    max_user_current: float = 0.0
    display: int = 1
    p: float = 50.0
    i: float = 20.0
    d: float = 0.0
    setp: float = 0.0
    mout: float = 0.0
    ramp: tuple[int, float] = (0, 0.0)
    integral: float = 0.0
    output_pct: float = 0.0  # the loop's last output: what HTR? / AOUT? read


@dataclass
class Measured:
    kelvin: float = 0.0
    sensor: float = 0.0
    status: int = 0


def empty_curve_slot() -> CurveSlot:
    """An empty user slot reads ``User Curve``, format 2, limit 375 K, coefficient 1 (UNVERIFIED, FIDELITY.md):
    a header every client parses, never format 0 (issue 24, item 4 on the 372)."""
    return CurveSlot("User Curve", "", 2, 375.0, 1)


class LS336Device(EventRegisters, TickedReadings, SteppedLoop):
    """A 336's (or 350's) state. Times are simulated seconds from ``clock``."""

    def __init__(
        self,
        clock: SimClock,
        fridge: Fridge,
        serial: str = "LSA336A",
        seed: int | None = None,
        scanner: bool = False,
        model: str = "336",
    ) -> None:
        if model not in ("336", "350"):
            raise ValueError("an LS336Device is a Model 336 or 350")
        self.clock, self.fridge, self.serial, self.model = clock, fridge, serial, model
        self.firmware = "2.9" if model == "336" else "1.7"  # UNVERIFIED: any firmware string parses
        self.inputs: tuple[str, ...] = INPUTS + (SCANNER_INPUTS if scanner else ())
        self.heater_ranges = 5 if model == "350" else 3  # 350 manual p.154: ranges 1-5; 336: low/medium/high
        self.noise = Noise(seed, relative=5e-5)
        self.lock = threading.RLock()
        self.curves = CurveMemory(range(1, 60), range(21, 60), blank=empty_curve_slot)
        for n, (make, name) in STANDARD_CURVES.items():
            self.curves.load(n, replace(make(), name=name, serial="STANDARD"))
        self.forced_heater_w: float | None = None
        self.power_on()

    # -- state ------------------------------------------------------------------
    def power_on(self) -> None:
        """Factory settings for everything but curves; as after a power cycle."""
        with self.lock:
            self.esr = ESR_PON
            self.ese = 0
            self.ins = {ch: Input336(name=f"Input {ch}") for ch in self.inputs}
            for ch, (_stage, name, sensor_type, curve) in WIRING.items():
                if ch in self.ins:
                    self.ins[ch] = Input336(sensor_type=sensor_type, curve=curve, name=name, range=0)
            self.outputs = {o: Output336() for o in (1, 2, 3, 4)}
            self._tick_cache: dict[str, tuple[int, Measured]] = {}
            self._heater_origin = self._heater_t = self.clock.now()
            self._heater_n = 0

    # -- physics -----------------------------------------------------------------
    def _physical_curve(self, ch: str) -> Curve | None:
        w = WIRING.get(ch)
        if w is None:
            return None
        return std.dt670() if w[2] == DIODE else std.rx102a()

    def _measure(self, ch: str, t: float) -> Measured:
        """A fresh reading of input ``ch`` at time ``t``."""
        c = self.ins[ch]
        wiring, physical = WIRING.get(ch), self._physical_curve(ch)
        if c.sensor_type == 0:
            return Measured(0.0, 0.0, 0)  # a disabled input reads zero (UNVERIFIED: its status)
        if wiring is None or physical is None or c.sensor_type != wiring[2]:
            return Measured(0.0, 0.0, 1 | 128)  # no sensor of that type there: open, invalid and overrange
        temp = self.fridge.temperature(wiring[0], t)
        lo, hi = physical.t_range
        sensor = physical.sensor(min(max(temp, lo), hi)) or 0.0
        sensor = self.noise.apply_at(sensor, ch, int(t * 10 + TICK_SLACK))
        status = 0
        if c.sensor_type == DIODE and sensor > DIODE_FULL_SCALE.get(c.range, 2.5):
            status |= 128
        kelvin = 0.0
        curve = self.curves.curve(c.curve) if c.curve else None
        if curve is not None:
            k = curve.temperature(sensor)
            if k is None:
                slo, shi = curve.sensor_range
                kelvin = curve.temperature(min(max(sensor, slo), shi)) or 0.0
                # NTC and diode: a sensor value above the curve is colder than it reaches
                status |= 16 if (sensor > shi) == (curve.coefficient == 1) else 32
            else:
                kelvin = k
        if c.tlimit and kelvin > c.tlimit:  # the manual: every output controlled from it is switched off
            for o in self.outputs.values():
                if o.input == self.input_number(ch):
                    o.range = 0
        return Measured(kelvin, sensor, status)

    def input_number(self, ch: str) -> int:
        return (*INPUTS, *SCANNER_INPUTS).index(ch) + 1

    def input_of(self, number: int) -> str | None:
        names = (*INPUTS, *SCANNER_INPUTS)
        return names[number - 1] if 1 <= number <= len(names) and names[number - 1] in self.ins else None

    def _heater_step(self, t: float, dt: float) -> None:
        self.fridge.advance_to(t)  # the fridge runs to this step under the power set at the last one
        for o in self.outputs.values():
            inp = self.input_of(o.input)
            if o.mode == 3 or (o.mode == 1 and o.range and inp is None):
                pct = o.mout  # open loop (or closed loop without an input: the manual output)
            elif o.mode == 1 and o.range and inp is not None:
                err = o.setp - self._reading_at(inp, t).kelvin
                o.integral = max(-100.0, min(100.0, o.integral + err * o.i * 0.01 * dt))
                pct = max(0.0, min(100.0, o.p * err + o.integral + o.mout))
            else:
                pct = 0.0
            o.output_pct = pct if o.range or o.mode == 4 else 0.0
        for n, stage in STAGE_OF_OUTPUT.items():
            watts = self.heater_watts(n)
            if stage == "still":
                self.fridge.still_heater_w = watts
            else:
                self.fridge.sample_heater_w = watts if self.forced_heater_w is None else self.forced_heater_w

    def heater_watts(self, n: int) -> float:
        """Output ``n``'s power: (percent of range) x its range's current, squared, times the load.
        Each range below the top is a tenth of the power (336 manual: low, medium, high)."""
        o = self.outputs[n]
        if not o.range:
            return 0.0
        i_max = o.max_user_current if o.max_current == 0 else MAX_CURRENT.get(o.max_current, 1.0)
        power_full = i_max**2 * RESISTANCE.get(o.resistance, 25.0)
        return (o.output_pct / 100) ** 2 * power_full * 10.0 ** (o.range - self.heater_ranges)

    def force_heater(self, watts: float | None) -> None:
        """Fault control: hold the mixing-chamber heater at ``watts`` (None: output 2's loop again)."""
        with self.lock:
            self._advance_heater(self.clock.now())
            self.forced_heater_w = watts

    # -- what the command table reads -------------------------------------------
    def reading(self, ch: str) -> Measured:
        with self.lock:
            t = self.clock.now()
            self._advance_heater(t)
            return self._reading_at(ch, t)

    def forget_readings(self) -> None:
        """Drop this tick's readings: a new input type or curve shows in the next query."""
        with self.lock:
            self._tick_cache.clear()

    def output_percent(self, n: int) -> float:
        with self.lock:
            self._advance_heater(self.clock.now())
            return self.outputs[n].output_pct

    def dispatcher(self) -> Dispatcher:
        """This device behind its command table (``ls336_commands``), as one connection sees it."""
        return ls336_commands.dispatcher(self)
