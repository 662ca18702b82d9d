"""An emulated Cryomech CPA compressor: its state and physics in simulated time, and its register image.

Physics is kept apart from the wire (``cpa_server`` serves ``registers()`` over Modbus TCP):

* running with cooling water: temperatures and pressures relax to the running values (the
  values of a running CPA in a Bluefors Status log, firmware_host/FIDELITY.md);
* the water flow fails (``trip water``): the coolant out, oil and helium temperatures climb; past
  the coolant-out warning limit the warning bit is set, past the alarm limit the compressor trips;
* a trip (``trip pressure``, or the water's) stops the compressor, sets the operating state to
  error and the alarm bit; the pressures then equalise to the static pressure;
* stopped: temperatures relax to the coolant in temperature.

Every value relaxes exponentially, integrated exactly, so a long ``advance`` is one step and a
limit crossing inside it is found at its exact simulated time (the ledger records it).
Units are the panel's defaults in the recorded socs fixture: degrees F and psi.
"""

from __future__ import annotations

import math
import struct
import threading
from dataclasses import dataclass, field

from .sim_clock import SimClock

# The fixture socs records (tests/integration/test_cryomech_cpa_agent_integration.py:17): a
# stopped CPA1114, serial 10556, software 2.154, 10613.5 hours, 219 psi static, 65.6 F water.
SERIAL = 10556
MODEL_WORD = 0x0418  # CPA1114 (Cryomech's model tables)
SOFTWARE_WORD = 0x029A
REGISTER_34 = 0x0475  # sent by the recorded panel; its meaning is UNVERIFIED
INPUT_REGISTERS = 56  # addresses 0..55: socs reads 1..53, Cryomech's CPA3 sample 1..55

# Running values: a running CPA in a Bluefors Status log (cpatempwi 16.8 C, cpatempwo 24.3 C,
# cpatempo 24.2 C, cpatemph 60.1 C, cpahp 308 psi, cpalp 115 psi, cpacurrent 12.5 A), in F here.
RUN_OUT_RISE = 13.5  # F above coolant in
RUN_OIL_RISE = 13.4
RUN_HELIUM_RISE = 77.9
RUN_HIGH, RUN_LOW, STATIC = 308.0, 115.0, 219.0  # psi
RUN_CURRENT, IDLE_CURRENT = 12.5, 0.22  # A
DRY_OUT = 200.0  # F: where the coolant out heads when the water stops (UNVERIFIED)
TAU_T, TAU_P = 300.0, 30.0  # simulated seconds (UNVERIFIED)
# Limits: UNVERIFIED (the panel's limits are set per model; these are round numbers).
WARN_OUT, ALARM_OUT = 110.0, 125.0  # F, coolant out
ALARM_HIGH = 400.0  # psi, high pressure
TRIP_PRESSURE_SPIKE = 420.0

COOLANT_OUT_HIGH, HIGH_PRESSURE_HIGH = 1 << 2, 1 << 10  # bit values (drivers.cpa.CPA_BITS)
STATE_IDLE, STATE_RUNNING, STATE_ERROR = 0, 3, 7


@dataclass
class Trip:
    """One trip: when (simulated seconds) and why (the alarm bit set)."""

    sim_t: float
    cause: str
    alarm_bit: int


@dataclass
class CpaState:
    running: bool = True
    water: bool = True
    coolant_in: float = 65.6
    coolant_out: float = 65.6 + RUN_OUT_RISE
    oil: float = 65.6 + RUN_OIL_RISE
    helium: float = 65.6 + RUN_HELIUM_RISE
    high: float = RUN_HIGH
    low: float = RUN_LOW
    high_avg: float = RUN_HIGH
    low_avg: float = RUN_LOW
    current: float = RUN_CURRENT
    hours: float = 10613.5
    warning_bits: int = 0
    alarm_bits: int = 0
    operating_state: int = STATE_RUNNING
    trips: list[Trip] = field(default_factory=list)


def _relax(x: float, target: float, dt: float, tau: float) -> float:
    return target + (x - target) * math.exp(-dt / tau)


def float_words(value: float) -> tuple[int, int]:
    """A float as the panel lays it out: (low word, high word), each big-endian."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return lo, hi


class CpaDevice:
    """State + physics; thread-safe (the server's loop and the control socket both touch it)."""

    def __init__(self, clock: SimClock, serial: int = SERIAL) -> None:
        self.clock, self.serial = clock, serial
        self.state = CpaState()
        self.lock = threading.RLock()
        self._t = clock.now()

    # -- physics ---------------------------------------------------------------------
    def advance_to(self, now: float) -> None:
        """Integrate from the last evaluation to ``now`` (simulated), stopping at a trip to re-plan."""
        with self.lock:
            while now > self._t:
                dt = now - self._t
                trip_in = self._time_to_water_trip()
                step = min(dt, trip_in) if trip_in is not None else dt
                self._integrate(step)
                self._t += step
                if trip_in is not None and trip_in <= dt:
                    self.trip("water", COOLANT_OUT_HIGH)
            self._warnings()

    def _targets(self) -> tuple[float, float, float, float, float, float]:
        s = self.state
        ci = s.coolant_in
        if not s.running:
            return ci, ci, ci, STATIC, STATIC, IDLE_CURRENT
        out = ci + RUN_OUT_RISE if s.water else DRY_OUT
        return (
            out,
            out - RUN_OUT_RISE + RUN_OIL_RISE,
            out - RUN_OUT_RISE + RUN_HELIUM_RISE,
            RUN_HIGH,
            RUN_LOW,
            RUN_CURRENT,
        )

    def _time_to_water_trip(self) -> float | None:
        """Simulated seconds until the coolant out passes its alarm limit, or None."""
        s = self.state
        if not s.running or s.water:
            return None
        target = self._targets()[0]
        if s.coolant_out >= ALARM_OUT:
            return 0.0
        return TAU_T * math.log((target - s.coolant_out) / (target - ALARM_OUT))

    def _integrate(self, dt: float) -> None:
        if dt <= 0:
            return
        s = self.state
        out, oil, he, high, low, cur = self._targets()
        s.coolant_out = _relax(s.coolant_out, out, dt, TAU_T)
        s.oil = _relax(s.oil, oil, dt, TAU_T)
        s.helium = _relax(s.helium, he, dt, TAU_T)
        s.high = _relax(s.high, high, dt, TAU_P)
        s.low = _relax(s.low, low, dt, TAU_P)
        s.high_avg = _relax(s.high_avg, high, dt, 2 * TAU_P)
        s.low_avg = _relax(s.low_avg, low, dt, 2 * TAU_P)
        s.current = cur if dt > 1.0 else _relax(s.current, cur, dt, 1.0)
        if s.running:
            s.hours += dt / 3600.0

    def _warnings(self) -> None:
        s = self.state
        s.warning_bits = COOLANT_OUT_HIGH if s.coolant_out > WARN_OUT else 0

    # -- events ------------------------------------------------------------------------
    def trip(self, cause: str, alarm_bit: int) -> Trip:
        """The panel stops the compressor on an alarm: state error, alarm bit latched until a start."""
        with self.lock:
            s = self.state
            if cause == "pressure":
                s.high = max(s.high, TRIP_PRESSURE_SPIKE)
            s.running = False
            s.operating_state = STATE_ERROR
            s.alarm_bits |= alarm_bit
            t = Trip(self._t, cause, alarm_bit)
            s.trips.append(t)
            return t

    def set_water(self, flowing: bool) -> None:
        with self.lock:
            self.advance_to(self.clock.now())
            self.state.water = flowing

    def start(self) -> None:
        """Holding register 1 = 0x0001: start; a start clears latched alarms (UNVERIFIED)."""
        with self.lock:
            self.advance_to(self.clock.now())
            s = self.state
            s.running, s.alarm_bits, s.operating_state = True, 0, STATE_RUNNING

    def stop(self) -> None:
        with self.lock:
            self.advance_to(self.clock.now())
            s = self.state
            s.running = False
            if s.operating_state != STATE_ERROR:
                s.operating_state = STATE_IDLE

    # -- the register image ------------------------------------------------------------
    def registers(self) -> list[int]:
        """Input registers 0..55 now, laid out as the panel sends them."""
        with self.lock:
            self.advance_to(self.clock.now())
            s = self.state
            regs = [0] * INPUT_REGISTERS
            regs[1] = s.operating_state
            regs[2] = 1 if s.running else 0
            floats = {
                3: -float(s.warning_bits),  # -0.0 when clear, as the recorded panel sends
                5: -float(s.alarm_bits),
                7: s.coolant_in,
                9: s.coolant_out,
                11: s.oil,
                13: s.helium,
                15: s.low,
                17: s.low_avg,
                19: s.high,
                21: s.high_avg,
                23: s.high_avg - s.low_avg,
                25: s.current,
                27: s.hours,
            }
            for reg, value in floats.items():
                regs[reg], regs[reg + 1] = float_words(value)
            regs[29], regs[30] = 0, 0  # psi, F
            regs[31], regs[32], regs[33], regs[34] = self.serial, MODEL_WORD, SOFTWARE_WORD, REGISTER_34
            return regs
