"""Emulated Model 372: device state, scanner timing, readings and the heater loop.

The state (settings, scanner, heaters) lives in ``LS372Device``; what each command reads,
refuses and replies is ``ls372_commands.py``, so the physics never sees a string and the
wire code never sees a kelvin.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from . import ls372_commands
from . import standard_curves as std
from .controller import (  # noqa: F401 (ESR_* and the loop's constants were defined here before)
    ESR_CMD,
    ESR_EXEC,
    ESR_PON,
    ESR_QUERY,
    HEATER_MAX_STEPS,
    HEATER_STEP,
    TICK_SLACK,
    EventRegisters,
    SteppedLoop,
    TickedReadings,
)
from .curve_memory import CurveMemory, CurveSlot
from .physics import Fridge, Noise
from .protocol import Dispatcher
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
    output_pct: float = 0.0  # the loop's last output, what HTR? reads
    # output 1 (warm-up heater) only: HTRSET's heater resistance setting as a code, 1 = 25 ohm, 2 = 50 ohm
    resistance_code: int = 1


@dataclass
class Alarm372:
    """``ALARM`` settings of one input: kept and reported, not acted on (no alarm ever goes off)."""

    enabled: int = 0
    source: int = 1  # 1 kelvin, 2 ohms, ... (the manual's data source field)
    high: float = 0.0
    low: float = 0.0
    deadband: float = 0.0
    latch: int = 0
    audible: int = 0
    visible: int = 0


@dataclass
class Analog372:
    """``ANALOG`` settings of output 1 or 2: polarity, mode, input, source, high, low, manual value."""

    polarity: int = 0
    mode: int = 0
    input: str = "0"
    source: int = 1
    high: float = 0.0
    low: float = 0.0
    manual: float = 0.0


@dataclass
class Zone372:
    """One row of ``ZONE``'s table (10 per output 0 and 1)."""

    upper: float = 0.0
    p: float = 10.0
    i: float = 20.0
    d: float = 0.0
    mout: float = 0.0
    range: int = 0
    rate: float = 0.0
    relay1: int = 0
    relay2: int = 0


@dataclass
class Relay372:
    """``RELAY``: mode 0 off, 1 on, 2 alarms, 3 sample-heater zone, 4 warm-up-heater zone."""

    mode: int = 0
    channel: str = "1"
    alarm_type: int = 0


@dataclass
class Panel372:
    """Front panel and interface settings a client reads back; none of them changes a reading.

    Defaults are what a factory-reset 372 is assumed to hold; which of them the manual states
    is in FIDELITY.md (the rest are UNVERIFIED placeholders, chosen only to parse as the
    vendor's driver parses them).
    """

    display: tuple[int, int, int] = (2, 1, 1)  # mode custom, 4 large fields, sample heater info
    ieee_address: int = 12
    ieee_terminator: int = 0
    ieee_eoi: int = 0
    mode: int = 0  # 0 local, 1 remote, 2 remote with local lockout
    dout: int = 0  # five digital output bits
    intsel: int = 0  # 0 USB, 1 Ethernet, 2 IEEE-488
    monitor: int = 0  # monitor output source, 0 off
    lock: tuple[int, int] = (0, 123)  # keypad unlocked, lock-out code 123
    beep: int = 1
    weblog: tuple[str, str] = ("user", "user")


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


def empty_curve_slot() -> CurveSlot:
    """An empty 372 curve slot: ``User Curve``, format 4 (log ohm/K), limit 40 K, coefficient 1.

    socs' simulator models an empty slot this way, and socs' upload (delete, then re-read the
    header, then write) only works on hardware if the deleted slot's header parses: its format
    must be 3, 4 or 7 and its coefficient 1 or 2 (FIDELITY.md, Model 372 row 13).
    """
    return CurveSlot("User Curve", "", 4, 40.0, 1)


def default_curves() -> CurveMemory:
    """Standard curves 1-20 are not loaded (none of our sensors uses one); user curves 21 and 22 are."""
    mem = CurveMemory(range(1, 60), range(21, 60), blank=empty_curve_slot)
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


class LS372Device(EventRegisters, TickedReadings, SteppedLoop):
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
            self.outputs = {
                0: Output372(),
                1: Output372(),
                2: Output372(
                    mode=4, input="16", powerup=1, resistance=120.0, max_current=8, max_user_current=0.0, display=1
                ),
            }
            self.ramps = {o: (0, 0.0) for o in (0, 1, 2)}
            self.outputs[0].max_current = 2
            self.outputs[0].max_user_current = 0.0
            self.still = 0.0
            self.ese = 0  # IEEE 488.2: the event enable register is 0 after power-on
            self.alarms = {ch: Alarm372() for ch in CHANNELS}
            self.analog = {1: Analog372(), 2: Analog372(mode=4)}
            self.zones = {(o, z): Zone372() for o in (0, 1) for z in range(1, 11)}
            self.relays = {1: Relay372(), 2: Relay372()}
            self.panel = Panel372()
            self.freq = {"0": 1, "A": 1}
            self.cmr = 0
            self.warmup = (0, 0.0)
            self.scan_channel = "1"
            self.autoscan = 1
            self.switched_at = self.clock.now()
            self.last: dict[str, Measured] = {}
            self._tick_cache: dict[str, tuple[int, Measured]] = {}
            now = self.clock.now()
            self._heater_t = self._heater_origin = now  # the loop's steps: origin + n * HEATER_STEP
            self._heater_n = 0
            if not hasattr(self, "forced_heater_w"):
                self.forced_heater_w: float | None = None
            for ch in CHANNELS:
                self.last[ch] = self._measure(ch, now)

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
        tick = int(t * 10 + TICK_SLACK)
        ohms = self.noise.apply_at(true_r, ch, tick, "r")
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
        current = (
            A_CURRENT_EXC.get(c.excitation, 1e-9)
            if ch == "A"
            else CURRENT_EXC.get(c.excitation, 1e-9)
            if c.mode == 1
            else VOLTAGE_EXC.get(c.excitation, 2e-5) / max(ohms, 1e-6)
        )
        return Measured(
            kelvin,
            ohms,
            status,
            current * current * ohms,
            self.noise.apply_at(1e-3 * ohms, ch, tick, "q") - 1e-3 * ohms,
        )

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
            # the last reading of the channel's last tick (the loop may have made it already)
            self.last[self.scan_channel] = self._reading_at(self.scan_channel, end - 0.05)
            self.scan_channel = self._next_enabled(self.scan_channel)
            self.switched_at = end
        # A long fast-forward: restart the cycle at "now" rather than replaying it.
        self.switched_at = t

    def _control_reading(self, inp: str, t: float) -> Measured:
        """What the loop controls from at ``t``: the instrument's own reading, whoever polls it.

        Input A is measured all the time. A scanner channel is measured while the scanner is on
        it and past its pause; otherwise the loop holds the last value measured there (the
        manual, 4.6.1.6: the heater output is held while the control channel is not active).
        The scanner is advanced to ``t`` first, so the result does not depend on which
        queries a client sent in between (issue 24, item 6).
        """
        if inp == "A":
            return self._reading_at("A", t)
        self._advance_scanner(t)
        c = self.channels[inp]
        if inp == self.scan_channel and t >= self.switched_at + c.pause:
            self.last[inp] = self._reading_at(inp, t)
        return self.last[inp]

    def _heater_step(self, t: float, dt: float) -> None:
        o = self.outputs[0]
        current_max = SAMPLE_RANGE_A.get(o.range, 0.0)
        # The fridge runs up to this step under the power the loop set at the last one, so the
        # thermal history is the same however the queries fall between steps.
        self.fridge.advance_to(t)
        if o.mode == 2:
            pct = o.mout
        elif o.mode == 5 and o.range:
            inp = o.input if o.input in self.channels else "A"
            meas = self._control_reading(inp, t)
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
            return self.outputs[0].output_pct

    # -- what the command table drives ------------------------------------------------
    def scan(self) -> tuple[str, int]:
        """The scanner's channel now and whether it autoscans."""
        with self.lock:
            self._advance_scanner(self.clock.now())
            return self.scan_channel, self.autoscan

    def select_scan(self, ch: str, autoscan: int) -> None:
        """``SCAN``: move the scanner to ``ch``; its pause starts again only if the channel changes."""
        with self.lock:
            self.reading(self.scan_channel)  # freeze the old channel's value at the switch
            if ch != self.scan_channel:
                self.switched_at = self.clock.now()
            self.scan_channel, self.autoscan = ch, autoscan

    def configure_input(self, ch: str, enabled: int, dwell: int, pause: int, curve: int, tempco: int) -> None:
        """``INSET``; the manual: disabling every scanner channel re-enables channel 1."""
        with self.lock:
            c = self.channels[ch]
            c.enabled, c.dwell, c.pause, c.curve, c.tempco = enabled, dwell, pause, curve, tempco
            if not any(self.channels[str(i)].enabled for i in range(1, 17)):
                self.channels["1"].enabled = 1

    def dispatcher(self) -> Dispatcher:
        """This device behind its command table (``ls372_commands``), as one connection sees it."""
        return ls372_commands.dispatcher(self)


_SENSORS = {21: std.rx102a(), 22: std.rx102a_calibrated()}
