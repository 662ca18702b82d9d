"""The emulated Model 336 / 350 command table: each mnemonic, its declared arguments and its reply format.

The protocol side of the instrument, as ``ls372_commands.py`` is the 372's: it reads arguments,
refuses what the firmware refuses (``ExecutionError``: ESR bit 16, no reply; an unknown mnemonic:
ESR bit 32, no reply), formats replies, and leaves state and physics to ``LS336Device``. The IEEE
488.2 common commands and the curve commands are the 372's rows (the same firmware family answers
them alike). What each answer is based on is in ``FIDELITY.md`` (Model 336 and 350).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import ls372_commands as common
from .protocol import ANY, PERCENT, Command, Dispatcher, ExecutionError, Float, Int, Text, bind_table, fmt_240

if TYPE_CHECKING:
    from .ls336_device import LS336Device

ALL_INPUTS = "0"  # KRDG? 0: every input, comma-separated
NAMES = ("A", "B", "C", "D", "D2", "D3", "D4", "D5")


@dataclass(frozen=True)
class Input:
    """An input name ``A``-``D`` or ``D1``-``D5`` (``D1`` is ``D``); ``0`` for every input where allowed."""

    allow_all: bool = False

    def parse(self, text: str) -> str:
        s = text.strip().upper()
        if self.allow_all and s == ALL_INPUTS:
            return s
        s = "D" if s == "D1" else s
        if s not in NAMES:
            raise ExecutionError(f"bad input {text!r}")
        return s


INPUT = Input()
OUTPUT = Int(1, 4)
HEATER = Int(1, 2)
FLAG = Int(0, 1)
FLOAT = Float()


def fitted(d: LS336Device, ch: str) -> str:
    """``ch`` if this instrument has it (D2-D5 only with the 3062 option), else the firmware's refusal."""
    if ch not in d.ins:
        raise ExecutionError(f"input {ch} is not fitted")
    return ch


def number(x: float) -> str:
    """The 336's reading format: a sign and six digits (``+293.873``, ``+0.82001``); manual p.130 (CRDG?)."""
    return fmt_240(x)


# -- readings ----------------------------------------------------------------------------
def reading(kind: str) -> Callable[[LS336Device, str], str]:
    """``KRDG?``/``CRDG?``/``SRDG?`` of one input, or of every input (``0``) comma-separated."""

    def value(d: LS336Device, ch: str) -> str:
        m = d.reading(ch)
        v = m.kelvin if kind == "kelvin" else m.sensor if kind == "sensor" else (m.kelvin - 273.15 if m.kelvin else 0)
        return number(v)

    def query(d: LS336Device, ch: str) -> str:
        if ch == ALL_INPUTS:
            return ",".join(value(d, c) for c in d.ins)
        return value(d, fitted(d, ch))

    return query


def rdgst_q(d: LS336Device, ch: str) -> str:
    return f"{d.reading(fitted(d, ch)).status:03d}"


# -- inputs --------------------------------------------------------------------------------
# the ranges an INTYPE may name, by sensor type (manual; lakeshore DiodeRange, RTDRange, ThermocoupleRange)
RANGES = {0: 0, 1: 1, 2: 6, 3: 8, 4: 0}


def intype_q(d: LS336Device, ch: str) -> str:
    c = d.ins[fitted(d, ch)]
    return f"{c.sensor_type},{c.autorange},{c.range},{c.compensation},{c.units}"


def intype_set(d: LS336Device, ch: str, sensor: int, autorange: int, rng: int, comp: int, units: int) -> None:
    c = d.ins[fitted(d, ch)]
    if sensor == 5:
        raise ExecutionError("capacitance inputs need the 3061 option")
    if rng > RANGES[sensor]:
        raise ExecutionError(f"range {rng} outside 0-{RANGES[sensor]} for sensor type {sensor}")
    c.sensor_type, c.autorange, c.range, c.compensation, c.units = sensor, autorange, rng, comp, units
    d.forget_readings()


# the curve formats each sensor type can use: mV/K, V/K for a diode; ohm/K, log ohm/K for an RTD; mV/K for a thermocouple
FORMATS = {1: (1, 2), 2: (3, 4), 3: (3, 4), 4: (1,)}


def incrv_set(d: LS336Device, ch: str, curve: int) -> None:
    """The manual (INCRV): a curve whose format does not suit the input's sensor makes the curve number 0."""
    c = d.ins[fitted(d, ch)]
    fits = curve == 0 or d.curves.slot(curve).data_format in FORMATS.get(c.sensor_type, ())
    c.curve = curve if fits else 0
    d.forget_readings()


def inname_set(d: LS336Device, ch: str, name: str) -> None:
    d.ins[fitted(d, ch)].name = name


def tlimit_set(d: LS336Device, ch: str, limit: float) -> None:
    d.ins[fitted(d, ch)].tlimit = max(0.0, limit)


def filter_q(d: LS336Device, ch: str) -> str:
    on, points, window = d.ins[fitted(d, ch)].filt
    return f"{on},{points:02d},{window:02d}"


def filter_set(d: LS336Device, ch: str, on: int, points: int, window: int) -> None:
    d.ins[fitted(d, ch)].filt = (on, points, window)


# -- outputs --------------------------------------------------------------------------------
def outmode_q(d: LS336Device, out: int) -> str:
    o = d.outputs[out]
    return f"{o.mode},{o.input},{o.powerup}"


def outmode_set(d: LS336Device, out: int, mode: int, inp: int, powerup: int = 0) -> None:
    if inp and d.input_of(inp) is None:
        raise ExecutionError(f"input {inp} is not fitted")
    if mode == 5 and out in (1, 2):
        raise ExecutionError("warm-up supply mode is for the voltage outputs 3 and 4")
    o = d.outputs[out]
    o.mode, o.input, o.powerup = mode, inp, powerup
    o.integral = 0.0


def range_set(d: LS336Device, out: int, rng: int) -> None:
    top = d.heater_ranges if out in (1, 2) else 1
    if rng > top:
        raise ExecutionError(f"range {rng} outside 0-{top} on output {out}")
    with d.lock:
        d.output_percent(out)  # the loop runs to now under the old range
        d.outputs[out].range = rng


def htrset_q(d: LS336Device, out: int) -> str:
    o = d.outputs[out]
    return f"{o.resistance},{o.max_current},{o.max_user_current:+.3f},{o.display}"


def htrset_set(d: LS336Device, out: int, resistance: int, max_current: int, user: float, display: int) -> None:
    o = d.outputs[out]
    o.resistance, o.max_current, o.max_user_current, o.display = resistance, max_current, user, display


def pid_q(d: LS336Device, out: int) -> str:
    o = d.outputs[out]
    return f"{o.p:+07.1f},{o.i:+07.1f},{o.d:+06.1f}"


def pid_set(d: LS336Device, out: int, p: float, i: float, dd: float) -> None:
    o = d.outputs[out]
    o.p, o.i, o.d = p, i, dd


def setp_set(d: LS336Device, out: int, value: float) -> None:
    with d.lock:
        d.output_percent(out)  # the loop runs to now under the old setpoint
        d.outputs[out].setp = value


def mout_set(d: LS336Device, out: int, value: float) -> None:
    with d.lock:
        d.output_percent(out)
        d.outputs[out].mout = value


def percent_of(outputs: tuple[int, ...]) -> Callable[[LS336Device, int], str]:
    """``HTR?`` (outputs 1, 2) and ``AOUT?`` (3, 4): the loop's output in percent, ``+nnn.n``."""

    def query(d: LS336Device, out: int) -> str:
        if out not in outputs:
            raise ExecutionError(f"output {out} is not one of {outputs}")
        return f"{d.output_percent(out):+06.1f}"

    return query


def ramp_q(d: LS336Device, out: int) -> str:
    on, rate = d.outputs[out].ramp
    return f"{on},{rate:+06.1f}"


def ramp_set(d: LS336Device, out: int, on: int, rate: float) -> None:
    d.outputs[out].ramp = (on, rate)


def idn(d: LS336Device) -> str:
    # manual: LSCI,MODEL336,<serial>/<option card serial>,<firmware>; the lakeshore package splits the '/'
    return f"LSCI,MODEL{d.model},{d.serial}/#######,{d.firmware}"


COMMON = tuple(c for c in common.COMMANDS if c.mnemonic.startswith("*") and c.mnemonic != "*IDN?")
CURVES = tuple(c for c in common.COMMANDS if c.mnemonic in ("CRVHDR?", "CRVPT?", "CRVPT", "CRVDEL"))

COMMANDS: tuple[Command, ...] = (
    Command("*IDN?", idn, counts=ANY),
    *COMMON,  # the 372's rows: *ESR?, *ESE, *CLS, *RST, *OPC, *STB?, *SRE, *TST?, *WAI act on any device's registers
    # readings
    Command("KRDG?", reading("kelvin"), (Input(allow_all=True),)),
    Command("CRDG?", reading("celsius"), (Input(allow_all=True),)),
    Command("SRDG?", reading("sensor"), (Input(allow_all=True),)),
    Command("RDGST?", rdgst_q, (INPUT,)),
    # inputs
    Command("INTYPE?", intype_q, (INPUT,)),
    # sensor type, autorange, range, compensation, units (1 K, 2 C, 3 sensor)
    Command("INTYPE", intype_set, (INPUT, Int(0, 5), FLAG, Int(0, 8), FLAG, Int(1, 3))),
    Command("INCRV?", lambda d, ch: f"{d.ins[fitted(d, ch)].curve:02d}", (INPUT,)),
    Command("INCRV", incrv_set, (INPUT, Int(0, 59))),
    Command("INNAME?", lambda d, ch: d.ins[fitted(d, ch)].name, (INPUT,)),
    Command("INNAME", inname_set, (INPUT, Text(15))),
    Command("TLIMIT?", lambda d, ch: f"{d.ins[fitted(d, ch)].tlimit:+.3f}", (INPUT,)),
    Command("TLIMIT", tlimit_set, (INPUT, FLOAT)),
    Command("FILTER?", filter_q, (INPUT,)),
    Command("FILTER", filter_set, (INPUT, FLAG, Int(2, 64), Int(1, 10))),  # on, points, window %
    # curves: the 372's rows over this device's memory; CRVHDR takes this model's formats 1-4
    Command("CRVHDR", common.crvhdr_set, (Int(21, 59), Text(15), Text(10), Int(1, 4), FLOAT, Int(1, 2))),
    *CURVES,
    # outputs
    Command("OUTMODE?", outmode_q, (OUTPUT,)),
    Command("OUTMODE", outmode_set, (OUTPUT, Int(0, 5), Int(0, 8), FLAG), counts=(3, 4)),  # mode, input, powerup
    Command("RANGE?", lambda d, out: str(d.outputs[out].range), (OUTPUT,)),
    Command("RANGE", range_set, (OUTPUT, Int(0, 5))),
    Command("HTRSET?", htrset_q, (HEATER,)),
    # resistance 1 = 25 / 2 = 50 ohm, max current 0 user / 1-4 presets, max user current (A), display 1 current / 2 power
    Command("HTRSET", htrset_set, (HEATER, Int(1, 2), Int(0, 4), Float(0, 2), Int(1, 2))),
    Command("PID?", pid_q, (OUTPUT,)),
    Command("PID", pid_set, (OUTPUT, Float(0.1, 1000), Float(0.1, 1000), Float(0, 200))),
    Command("SETP?", lambda d, out: number(d.outputs[out].setp), (OUTPUT,)),
    Command("SETP", setp_set, (OUTPUT, FLOAT)),
    Command("MOUT?", lambda d, out: f"{d.outputs[out].mout:+07.2f}", (OUTPUT,)),
    Command("MOUT", mout_set, (OUTPUT, PERCENT)),
    Command("HTR?", percent_of((1, 2)), (HEATER,)),
    Command("AOUT?", percent_of((3, 4)), (Int(3, 4),)),
    Command("HTRST?", lambda d, out: "0", (HEATER,)),  # heater status: no error
    Command("RAMP?", ramp_q, (OUTPUT,)),
    Command("RAMP", ramp_set, (OUTPUT, FLAG, Float(0, 100))),
    Command("RAMPST?", lambda d, out: "0", (OUTPUT,)),  # the setpoint is not ramped in simulation
)


def dispatcher(device: LS336Device) -> Dispatcher:
    """A dispatcher for one connection: the command table bound to ``device``, errors into its ESR."""
    d = Dispatcher(bind_table(COMMANDS, device), device.error)
    d.cr_ends_line = True  # a CR alone ends a message too (FIDELITY 336-28)
    return d
