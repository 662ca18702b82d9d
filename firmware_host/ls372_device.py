"""Emulated Model 372: device state, scanner timing and readings, plus its command table.

The state (settings, scanner, heaters) lives in ``LS372Device``; the wire format
of each reply is produced by the command table at the bottom, so the physics
never sees a string and the wire code never sees a kelvin.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from . import standard_curves as std
from .curve_memory import POINTS, CurveMemory
from .physics import Fridge, Noise
from .protocol import (
    CommandError,
    Dispatcher,
    ExecutionError,
    fmt_372,
    nargs,
    to_float,
    to_int,
    to_percent,
)
from .sim_clock import SimClock

CHANNELS = ["A"] + [str(i) for i in range(1, 17)]
# Resistance ranges 1-22: 2 mOhm, 6.32 mOhm, ... 63.2 MOhm.
R_RANGES = {i: 2e-3 * (10 ** ((i - 1) / 2)) for i in range(1, 23)}
CURRENT_EXC = {i: 1e-12 * (10 ** ((i - 1) / 2)) for i in range(1, 23)}
VOLTAGE_EXC = {i: 2e-6 * (10 ** ((i - 1) / 2)) for i in range(1, 13)}
A_CURRENT_EXC = {1: 316e-12, 2: 1e-9, 3: 3.16e-9, 4: 10e-9, 5: 31.6e-9, 6: 100e-9}
SAMPLE_RANGE_A = {0: 0.0, 1: 31.6e-6, 2: 100e-6, 3: 316e-6, 4: 1e-3, 5: 3.16e-3, 6: 10e-3, 7: 31.6e-3, 8: 100e-3}

# Which stage each input's thermometer sits on, its default name and curve.
WIRING = {
    "A": ("mxc", "MXC Control", 22),
    "1": ("4k", "4K Plate", 21),
    "2": ("still", "Still", 21),
    "3": ("cold_plate", "Cold Plate", 21),
    "5": ("mxc", "MXC", 22),
}
ESR_QUERY, ESR_EXEC, ESR_CMD, ESR_PON = 4, 16, 32, 128
HEATER_STEP = 0.1  # simulated seconds per control-loop step (the 372 reads 10 times a second)
HEATER_MAX_STEPS = 20000  # a longer fast-forward takes coarser steps


@dataclass
class Channel372:
    enabled: int = 0
    dwell: int = 10
    pause: int = 3
    curve: int = 0
    tempco: int = 1
    mode: int = 0  # 0 voltage, 1 current excitation
    excitation: int = 3
    autorange: int = 1
    rng: int = 10
    cs_shunt: int = 0
    units: int = 1
    filt_on: int = 1
    settle: int = 10
    window: int = 2
    name: str = ""
    tlimit: float = 0.0


@dataclass
class Output372:
    mode: int = 0
    input: str = "A"
    powerup: int = 0
    polarity: int = 0
    filt: int = 0
    delay: int = 1
    range: int = 0
    resistance: float = 120.0
    max_current: int = 0
    max_user_current: float = 0.0
    display: int = 2
    p: float = 10.0
    i: float = 20.0
    d: float = 0.0
    setp: float = 0.0
    mout: float = 0.0
    integral: float = 0.0


def default_channels() -> dict[str, Channel372]:
    chans = {c: Channel372() for c in CHANNELS}
    for ch, (_stage, name, curve) in WIRING.items():
        c = chans[ch]
        c.name, c.curve = name, curve
        c.enabled = 1
        c.mode = 1 if ch == "A" else 0
        c.excitation = 2 if ch == "A" else 3
    for ch, c in chans.items():
        if not c.name:
            c.name = f"Channel {int(ch):02d}"
    return chans


def default_curves() -> CurveMemory:
    """Standard curves 1-20 are not loaded (none of our sensors uses one); user curves 21 and 22 are."""
    mem = CurveMemory(range(1, 60), range(21, 60))
    mem.load(21, std.rx102a())
    mem.load(22, std.rx102a_calibrated())
    return mem


@dataclass
class Measured:
    kelvin: float = 0.0
    ohms: float = 0.0
    status: int = 0
    power: float = 0.0
    quad: float = 0.0


class LS372Device:
    """The 372's state. Times are simulated seconds from ``clock``."""

    def __init__(self, clock: SimClock, fridge: Fridge, serial: str = "LSA23JD", seed: int | None = None) -> None:
        self.clock = clock
        self.fridge = fridge
        self.serial = serial
        self.firmware = "1.3"
        self.noise = Noise(seed)
        self.lock = threading.RLock()
        self.curves = default_curves()
        self.power_on()

    # -- state ------------------------------------------------------------------
    def power_on(self) -> None:
        """Factory settings for everything but curves; as after a power cycle."""
        with self.lock:
            self.esr = ESR_PON
            self.channels = default_channels()
            # Output 2 (still) as socs' fixtures record a real 372: OUTMODE? 2 -> 4,16,1,0,0,001,
            # HTRSET? 2 -> +120.000,8,+0000.00,1 (FIDELITY.md).
            self.outputs = {0: Output372(), 1: Output372(),
                            2: Output372(mode=4, input="16", powerup=1, resistance=120.0, max_current=8,
                                         max_user_current=0.0, display=1)}
            self.ramps = {o: (0, 0.0) for o in (0, 1, 2)}
            self.outputs[0].max_current = 2
            self.outputs[0].max_user_current = 0.0
            self.still = 0.0
            self.freq = {"0": 1, "A": 1}
            self.cmr = 0
            self.warmup = (0, 0.0)
            self.scan_channel = "1"
            self.autoscan = 1
            self.switched_at = self.clock.now()
            self.last: dict[str, Measured] = {}
            self._tick_cache: dict[str, tuple[int, Measured]] = {}
            now = self.clock.now()
            self._heater_t = now
            if not hasattr(self, "forced_heater_w"):
                self.forced_heater_w: float | None = None
            for ch in CHANNELS:
                self.last[ch] = self._measure(ch, now)

    def reset_settings(self) -> None:
        """``*RST``: factory settings without the power-on flag."""
        with self.lock:
            esr = self.esr
            self.power_on()
            self.esr = esr

    def error(self, exc: Exception) -> None:
        with self.lock:
            self.esr |= ESR_CMD if isinstance(exc, CommandError) else ESR_EXEC if isinstance(exc, ExecutionError) else ESR_QUERY

    # -- physics -----------------------------------------------------------------
    def _stage_temperature(self, ch: str, t: float) -> float | None:
        wiring = WIRING.get(ch)
        if wiring is None:
            return None
        return self.fridge.temperature(wiring[0], t)

    def _measure(self, ch: str, t: float) -> Measured:
        """A fresh reading of input ``ch`` at time ``t`` (as if it were being measured now)."""
        c = self.channels[ch]
        temp = self._stage_temperature(ch, t)
        if temp is None:
            return Measured(0.0, 0.0, 16, 0.0, 0.0)  # open input: R.OVER
        sensor_curve = _SENSORS[WIRING[ch][2]]  # the physical thermometer, whatever curve is assigned
        lo, hi = sensor_curve.t_range
        true_r = sensor_curve.sensor(min(max(temp, lo), hi)) or 0.0
        if temp > hi:  # RuOx below its calibrated range in R: extrapolate gently, it is still a resistor
            true_r *= 1 - 0.02 * math.log(temp / hi)
        ohms = self.noise.apply(true_r)
        status = 0
        full_scale = R_RANGES[c.rng]
        if c.autorange and ch != "A":
            full_scale = next((v for v in R_RANGES.values() if v >= ohms), R_RANGES[22])
        if ch != "A" and ohms > full_scale:
            status |= 16
        if ohms < 1e-4:
            status |= 32
        kelvin = 0.0
        curve = self.curves.curve(c.curve) if c.curve else None
        if curve is not None:
            k = curve.temperature(ohms)
            if k is None:
                clo, chi = curve.sensor_range
                edge_t = curve.temperature(min(max(ohms, clo), chi))
                kelvin = edge_t or 0.0
                # NTC: resistance below the curve means too warm.
                hot = ohms < clo if curve.coefficient == 1 else ohms > chi
                status |= 64 if hot else 128
            else:
                kelvin = k
        if c.tlimit and kelvin > c.tlimit:
            for o in self.outputs.values():
                o.range = 0
        current = (A_CURRENT_EXC.get(c.excitation, 1e-9) if ch == "A" else
                   CURRENT_EXC.get(c.excitation, 1e-9) if c.mode == 1 else
                   VOLTAGE_EXC.get(c.excitation, 2e-5) / max(ohms, 1e-6))
        return Measured(kelvin, ohms, status, current * current * ohms, self.noise.apply(1e-3 * ohms) - 1e-3 * ohms)

    def _reading_at(self, ch: str, t: float) -> Measured:
        """The 372 updates a reading 10 times a second; repeated queries in one tick agree."""
        tick = int(t * 10)
        cached = self._tick_cache.get(ch)
        if cached and cached[0] == tick:
            return cached[1]
        m = self._measure(ch, tick / 10)
        self._tick_cache[ch] = (tick, m)
        return m

    def _next_enabled(self, ch: str) -> str:
        order = [str(i) for i in range(1, 17)]
        i = order.index(ch)
        for k in range(1, 17):
            cand = order[(i + k) % 16]
            if self.channels[cand].enabled:
                return cand
        return ch

    def _advance_scanner(self, t: float) -> None:
        """Step the autoscan through enabled channels, each for its pause plus dwell."""
        if not self.autoscan:
            return
        for _ in range(10000):
            c = self.channels[self.scan_channel]
            end = self.switched_at + c.pause + c.dwell
            if t < end:
                return
            self.last[self.scan_channel] = self._measure(self.scan_channel, end - 0.05)
            self.scan_channel = self._next_enabled(self.scan_channel)
            self.switched_at = end
        # A long fast-forward: restart the cycle at "now" rather than replaying it.
        self.switched_at = t

    def _advance_heater(self, t: float) -> None:
        """Run the sample-heater loop up to simulated time ``t`` in fixed steps.

        The loop is a function of simulated time only: however often (or seldom) ``HTR?``
        or a reading is queried, the same simulated interval runs the same steps. A long
        fast-forward takes at most ``HEATER_MAX_STEPS`` coarser steps, so it stays cheap.
        """
        gap = t - self._heater_t
        if gap <= 0:
            return
        step = max(HEATER_STEP, gap / HEATER_MAX_STEPS)
        while self._heater_t + step <= t:
            self._heater_t += step
            self._heater_step(self._heater_t, step)

    def _heater_step(self, t: float, dt: float) -> None:
        o = self.outputs[0]
        current_max = SAMPLE_RANGE_A.get(o.range, 0.0)
        if o.mode == 2:
            pct = o.mout
        elif o.mode == 5 and o.range:
            inp = o.input if o.input in self.channels else "A"
            # The control input: A is always measured; a scanner channel holds its last value
            # while the scanner is elsewhere (the manual: the heater output is held then).
            meas = self._reading_at("A", t) if inp == "A" else self.last[inp]
            err = o.setp - meas.kelvin
            o.integral = max(-100.0, min(100.0, o.integral + err * o.i * 0.01 * dt))
            pct = max(0.0, min(100.0, o.p * err * 100 + o.integral))
        else:
            pct = 0.0
        o.output_pct = pct
        if self.forced_heater_w is None:
            self.fridge.sample_heater_w = (pct / 100 * current_max) ** 2 * o.resistance
        else:
            self.fridge.sample_heater_w = self.forced_heater_w
        self.fridge.still_heater_w = (self.still / 100) ** 2 * 1e-3

    def force_heater(self, watts: float | None) -> None:
        """Fault control: hold the mixing-chamber heater at ``watts`` (None: the 372's loop again)."""
        with self.lock:
            self._advance_heater(self.clock.now())
            self.forced_heater_w = watts
            self.fridge.sample_heater_w = watts if watts is not None else self.fridge.sample_heater_w

    def reading(self, ch: str, t: float | None = None) -> Measured:
        with self.lock:
            t = self.clock.now() if t is None else t
            self._advance_heater(t)
            if ch == "A":
                return self._reading_at("A", t)
            self._advance_scanner(t)
            c = self.channels[ch]
            if ch == self.scan_channel and t >= self.switched_at + c.pause:
                m = self._reading_at(ch, t)
                self.last[ch] = m
                return m
            return self.last[ch]

    def heater_output(self) -> float:
        with self.lock:
            self._advance_heater(self.clock.now())
            return getattr(self.outputs[0], "output_pct", 0.0)

    # -- command table -------------------------------------------------------------
    def table(self) -> dict:
        return _table(self)

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.table(), self.error)


_SENSORS = {21: std.rx102a(), 22: std.rx102a_calibrated()}


def _ch(args: list[str], i: int = 0, allow_a: bool = True) -> str:
    if len(args) <= i:
        raise ExecutionError("missing channel")
    s = args[i].strip().upper()
    if s == "A" and allow_a:
        return "A"
    try:
        n = int(s)
    except ValueError:
        raise ExecutionError(f"bad channel {s!r}") from None
    if not 1 <= n <= 16:
        raise ExecutionError(f"channel {n} outside 1-16")
    return str(n)


def _out(args: list[str], i: int = 0) -> int:
    if len(args) <= i:
        raise ExecutionError("missing output")
    return to_int(args[i], 0, 2)


def _curve_no(args: list[str], lo: int, hi: int) -> int:
    nargs(args, *range(1, 8))
    return to_int(args[0], lo, hi)


def _table(d: LS372Device) -> dict:
    def reading(field_name: str):
        def handler(args: list[str]) -> str:
            nargs(args, 1)
            ch = _ch(args)
            if field_name == "quad" and ch == "A":
                raise ExecutionError("no quadrature on A")
            return fmt_372(getattr(d.reading(ch), field_name))
        return handler

    def idn(args):
        return f"LSCI,MODEL372,{d.serial},{d.firmware}"

    def esr(args):
        with d.lock:
            v, d.esr = d.esr, 0
        return str(v)

    def cls(args):
        d.esr = 0

    def rst(args):
        d.reset_settings()

    def rdgst(args):
        nargs(args, 1)
        return f"{d.reading(_ch(args)).status:03d}"

    def scan_q(args):
        with d.lock:
            d._advance_scanner(d.clock.now())
            return f"{int(d.scan_channel):02d},{d.autoscan}"

    def scan_set(args):
        nargs(args, 2)
        ch = _ch(args, 0, allow_a=False)
        auto = to_int(args[1], 0, 1)
        with d.lock:
            d.reading(d.scan_channel)  # freeze the old channel's value at the switch
            if ch != d.scan_channel:
                d.switched_at = d.clock.now()
            d.scan_channel, d.autoscan = ch, auto

    def inset_q(args):
        nargs(args, 1)
        c = d.channels[_ch(args)]
        return f"{c.enabled},{c.dwell:03d},{c.pause:03d},{c.curve:02d},{c.tempco}"

    def inset_set(args):
        nargs(args, 6)
        ch = _ch(args)
        vals = (to_int(args[1], 0, 1), to_int(args[2], 1, 200), to_int(args[3], 3, 200),
                to_int(args[4], 0, 59), to_int(args[5], 1, 2))
        with d.lock:
            c = d.channels[ch]
            c.enabled, c.dwell, c.pause, c.curve, c.tempco = vals
            if not any(d.channels[str(i)].enabled for i in range(1, 17)):
                d.channels["1"].enabled = 1  # the manual: disabling all re-enables channel 1

    def intype_q(args):
        nargs(args, 1)
        c = d.channels[_ch(args)]
        return f"{c.mode},{c.excitation:02d},{c.autorange},{c.rng:02d},{c.cs_shunt},{c.units}"

    def intype_set(args):
        nargs(args, 7)
        ch = _ch(args)
        mode = to_int(args[1], 0, 1)
        exc_max = 6 if ch == "A" else (22 if mode == 1 else 12)
        if ch == "A" and mode != 1:
            raise ExecutionError("control input A is current excitation only")
        vals = (mode, to_int(args[2], 1, exc_max), to_int(args[3], 0, 2), to_int(args[4], 1, 22),
                to_int(args[5], 0, 1), to_int(args[6], 1, 2))
        c = d.channels[ch]
        c.mode, c.excitation, c.autorange, c.rng, c.cs_shunt, c.units = vals

    def filter_q(args):
        nargs(args, 1)
        c = d.channels[_ch(args)]
        return f"{c.filt_on},{c.settle:03d},{c.window:02d}"

    def filter_set(args):
        nargs(args, 4)
        target = args[0].strip()
        vals = (to_int(args[1], 0, 1), to_int(args[2], 0, 200), to_int(args[3], 1, 80))
        chans = [str(i) for i in range(1, 17)] if target == "0" else [_ch(args)]
        for ch in chans:
            c = d.channels[ch]
            c.filt_on, c.settle, c.window = vals

    def inname_q(args):
        nargs(args, 1)
        return d.channels[_ch(args)].name

    def inname_set(args):
        nargs(args, 2)
        name = args[1]
        if len(name) > 15:
            raise ExecutionError("name longer than 15")
        d.channels[_ch(args)].name = name

    def tlimit_q(args):
        nargs(args, 1)
        limit = d.channels[_ch(args)].tlimit
        return "+0000" if limit == 0 else f"{limit:+09.4f}"  # socs' fixture: an unset limit is +0000

    def tlimit_set(args):
        nargs(args, 2)
        d.channels[_ch(args)].tlimit = max(0.0, to_float(args[1]))

    def crvhdr_q(args):
        nargs(args, 1)
        slot = d.curves.slot(to_int(args[0], 1, 59))
        if slot.empty:
            return ",,0,+000.000,0"
        return f"{slot.name},{slot.serial},{slot.data_format},{slot.limit:+08.3f},{slot.coefficient}"

    def crvhdr_set(args):
        nargs(args, 6)
        n = to_int(args[0], 21, 59)
        name, serial = args[1], args[2]
        if len(name) > 15 or len(serial) > 10:
            raise ExecutionError("name or serial too long")
        fmt = to_int(args[3], 3, 7)
        if fmt not in (3, 4, 7):
            raise ExecutionError("format must be 3, 4 or 7")
        with d.lock:
            d.curves.set_header(n, name, serial, fmt, to_float(args[4]), to_int(args[5], 1, 2))

    def crvpt_q(args):
        nargs(args, 2)
        slot = d.curves.slot(to_int(args[0], 1, 59))
        u, t = slot.cells[to_int(args[1], 1, POINTS) - 1]
        return f"{u:+.6g},{t:+.6g}"

    def crvpt_set(args):
        nargs(args, 4, 5)  # an optional curvature field (socs sends one for cubic-spline curves)
        n = to_int(args[0], 21, 59)
        i = to_int(args[1], 1, POINTS)
        with d.lock:
            d.curves.set_point(n, i, to_float(args[2]), to_float(args[3]))

    def crvdel(args):
        nargs(args, 1)
        with d.lock:
            d.curves.delete(to_int(args[0], 21, 59))

    def outmode_q(args):
        nargs(args, 1)
        o = d.outputs[_out(args)]
        return f"{o.mode},{o.input},{o.powerup},{o.polarity},{o.filt},{o.delay:03d}"

    def outmode_set(args):
        nargs(args, 7)
        out = _out(args)
        mode = to_int(args[1], 0, 6)
        inp = args[2].strip().upper()
        if inp not in ("A", "0") and not (inp.isdigit() and 1 <= int(inp) <= 16):
            raise ExecutionError("bad input")
        inp = inp if inp in ("A", "0") else str(int(inp))
        o = d.outputs[out]
        o.mode, o.input = mode, inp
        o.powerup, o.polarity, o.filt, o.delay = (to_int(args[3], 0, 1), to_int(args[4], 0, 1),
                                                   to_int(args[5], 0, 1), to_int(args[6], 1, 255))

    def range_q(args):
        nargs(args, 1)
        return str(d.outputs[_out(args)].range)

    def range_set(args):
        nargs(args, 2)
        out = _out(args)
        d.outputs[out].range = to_int(args[1], 0, 8 if out == 0 else 1)

    def htrset_q(args):
        nargs(args, 1)
        o = d.outputs[to_int(args[0], 0, 2)]  # the still output answers too (socs' fixtures)
        return f"{o.resistance:+08.3f},{o.max_current},{o.max_user_current:+08.2f},{o.display}"

    def htrset_set(args):
        nargs(args, 5)
        o = d.outputs[to_int(args[0], 0, 1)]
        r = to_float(args[1])
        if not 1 <= r <= 2000:
            raise ExecutionError("heater resistance outside 1-2000")
        o.resistance, o.max_current = r, to_int(args[2], 0, 4)
        o.max_user_current, o.display = to_float(args[3]), to_int(args[4], 1, 2)

    def pid_q(args):
        nargs(args, 0, 1)
        o = d.outputs[_out(args) if args else 0]
        return f"{o.p:+08.1f},{o.i:+08.1f},{o.d:+07.1f}"

    def pid_set(args):
        nargs(args, 4)
        o = d.outputs[_out(args)]
        p, i, dd = to_float(args[1]), to_float(args[2]), to_float(args[3])
        if not (0 <= p <= 1000 and 0 <= i <= 10000 and 0 <= dd <= 2500):
            raise ExecutionError("PID out of range")
        o.p, o.i, o.d = p, i, dd

    def setp_q(args):
        nargs(args, 1)
        return fmt_372(d.outputs[_out(args)].setp)

    def setp_set(args):
        nargs(args, 2)
        d.outputs[_out(args)].setp = to_float(args[1])

    def mout_q(args):
        nargs(args, 1)
        return f"{d.outputs[_out(args)].mout:+08.3f}"

    def mout_set(args):
        nargs(args, 2)
        d.outputs[_out(args)].mout = to_percent(args[1], "manual output")

    def htr_q(args):
        nargs(args, 0, 1)
        # socs' fixture records +00.0005E+00: percent with four decimals and a fixed E+00
        return f"{d.heater_output():+08.4f}E+00"

    def htrst_q(args):
        nargs(args, 0, 1)
        return "0"  # heater status: no error (1 would be heater open, 2 short)

    def ramp_q(args):
        nargs(args, 1)
        on, rate = d.ramps[_out(args)]  # QCoDeS asks for all three outputs
        return f"{on},{rate:+07.3f}"

    def ramp_set(args):
        nargs(args, 3)
        out = _out(args)
        rate = to_float(args[2])
        if not 0 <= rate <= 100:  # 0 means an infinite rate (QCoDeS docstring)
            raise ExecutionError("ramp rate outside 0-100 K/min")
        d.ramps[out] = (to_int(args[1], 0, 1), rate)

    def rampst_q(args):
        nargs(args, 1)
        _out(args)
        return "0"  # the setpoint is not ramped in simulation: it changes at once

    def still_q(args):
        return f"{d.still:+06.2f}"

    def still_set(args):
        nargs(args, 1)
        d.still = to_percent(args[0], "still output")

    def aout_q(args):
        nargs(args, 1)
        out = to_int(args[0], 1, 2)
        return f"{(d.still if out == 2 else d.outputs[1].mout):+06.2f}"

    def opc(args):
        return "1"

    def freq_target(args, n):
        nargs(args, n)
        which = args[0].strip().upper()
        if which not in ("0", "A"):
            raise ExecutionError("FREQ takes 0 (measurement) or A (control)")
        return which

    def freq_q(args):
        return str(d.freq[freq_target(args, 1)])

    def freq_set(args):
        d.freq[freq_target(args, 2)] = to_int(args[1], 1, 5)

    def cmr_set(args):
        nargs(args, 1)
        d.cmr = to_int(args[0], 0, 1)

    def warmup_q(args):
        return f"{d.warmup[0]},{d.warmup[1]:+08.3f}"

    def warmup_set(args):
        nargs(args, 2)
        d.warmup = (to_int(args[0], 0, 1), to_percent(args[1], "warm-up current"))

    t = {
        "*IDN?": idn, "*ESR?": esr, "*CLS": cls, "*RST": rst, "*OPC?": opc, "*OPC": lambda a: None,
        "*STB?": lambda a: f"{(32 if d.esr else 0):03d}", "*SRE": lambda a: None, "*SRE?": lambda a: "000",
        "KRDG?": reading("kelvin"), "RDGK?": reading("kelvin"), "RDGR?": reading("ohms"),
        "SRDG?": reading("ohms"), "RDGPWR?": reading("power"), "QRDG?": reading("quad"),
        "RDGST?": rdgst, "SCAN?": scan_q, "SCAN": scan_set,
        "INSET?": inset_q, "INSET": inset_set, "INTYPE?": intype_q, "INTYPE": intype_set,
        "FILTER?": filter_q, "FILTER": filter_set, "INNAME?": inname_q, "INNAME": inname_set,
        "TLIMIT?": tlimit_q, "TLIMIT": tlimit_set,
        "CRVHDR?": crvhdr_q, "CRVHDR": crvhdr_set, "CRVPT?": crvpt_q, "CRVPT": crvpt_set, "CRVDEL": crvdel,
        "OUTMODE?": outmode_q, "OUTMODE": outmode_set, "RANGE?": range_q, "RANGE": range_set,
        "HTRSET?": htrset_q, "HTRSET": htrset_set, "PID?": pid_q, "PID": pid_set,
        "SETP?": setp_q, "SETP": setp_set, "MOUT?": mout_q, "MOUT": mout_set, "HTR?": htr_q,
        "HTRST?": htrst_q, "RAMP?": ramp_q, "RAMP": ramp_set, "RAMPST?": rampst_q,
        "STILL?": still_q, "STILL": still_set, "AOUT?": aout_q,
        "FREQ?": freq_q, "FREQ": freq_set, "CMR?": lambda a: str(d.cmr), "CMR": cmr_set,
        "WARMUP?": warmup_q, "WARMUP": warmup_set,
        "EMUL?": lambda a: "0", "EMUL": lambda a: None if a and a[0].strip() == "0" else _no_370(),
    }
    return t


def _no_370() -> None:
    raise ExecutionError("Model 370 emulation mode is not emulated")
