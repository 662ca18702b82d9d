"""The emulated Model 372's command table: each mnemonic, its declared arguments and its reply format.

This is the protocol side of the instrument (lewis keeps a device's ``StreamInterface`` apart from
the device in the same way; ISIS' ``lewis_emulators/lakeshore372`` is one): it reads arguments,
refuses what the firmware refuses (``ExecutionError``: ESR bit 16, no reply), formats replies,
and leaves state and physics to ``LS372Device``. What each answer is based on is in ``FIDELITY.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import ls372_panel_commands
from .curve_memory import POINTS
from .protocol import (
    ANY,
    PERCENT,
    Choice,
    Command,
    Dispatcher,
    ExecutionError,
    Float,
    Int,
    Text,
    bind_table,
    fmt_372,
)

if TYPE_CHECKING:
    from .ls372_device import LS372Device

ALL_CHANNELS = "0"  # FILTER's "every scanner channel"


@dataclass(frozen=True)
class Input:
    """An input: control input ``A`` (when ``allow_a``) or scanner channel 1-16; ``05`` reads as ``5``."""

    allow_a: bool = True
    allow_all: bool = False  # FILTER: ``0`` means every scanner channel

    def parse(self, text: str) -> str:
        if self.allow_all and text.strip() == ALL_CHANNELS:
            return ALL_CHANNELS
        s = text.strip().upper()
        if s == "A" and self.allow_a:
            return "A"
        try:
            n = int(s)
        except ValueError:
            raise ExecutionError(f"bad channel {s!r}") from None
        if not 1 <= n <= 16:
            raise ExecutionError(f"channel {n} outside 1-16")
        return str(n)


@dataclass(frozen=True)
class ControlInput:
    """OUTMODE's control input: ``A``, ``0`` (none) or a scanner channel written with digits only."""

    def parse(self, text: str) -> str:
        inp = text.strip().upper()
        if inp not in ("A", "0") and not (inp.isdigit() and 1 <= int(inp) <= 16):
            raise ExecutionError("bad input")
        return inp if inp in ("A", "0") else str(int(inp))


CHANNEL = Input()
SCANNER_CHANNEL = Input(allow_a=False)
OUTPUT = Int(0, 2)  # 0 sample heater, 1 warm-up heater, 2 still (analog) output
CURVE = Int(1, 59)
USER_CURVE = Int(21, 59)  # 1-20 are the standard curves, read-only
POINT = Int(1, POINTS)
FLOAT = Float()
FLAG = Int(0, 1)
FREQ_TARGET = Choice(("0", "A"))  # the measurement input(s) or the control input


# -- status and identification --------------------------------------------------------
def idn(d: LS372Device) -> str:
    return f"LSCI,MODEL372,{d.serial},{d.firmware}"


def esr_q(d: LS372Device) -> str:
    return str(d.read_esr())


def stb_q(d: LS372Device) -> str:
    # IEEE 488.2: the event summary bit (32) is set when an event is set that *ESE enables
    return f"{(32 if d.esr & d.ese else 0):03d}"


def ese_set(d: LS372Device, mask: int) -> None:
    d.ese = mask


def cls(d: LS372Device) -> None:
    d.esr = 0


def rst(d: LS372Device) -> None:
    d.reset_settings()


# -- readings ----------------------------------------------------------------------------
def reading(field_name: str) -> Callable[[LS372Device, str], str]:
    """``KRDG?``-style query of one ``Measured`` field, in the 372's reading format."""

    def query(d: LS372Device, ch: str) -> str:
        if field_name == "quad" and ch == "A":
            raise ExecutionError("no quadrature on A")
        return fmt_372(getattr(d.reading(ch), field_name))

    return query


def rdgst_q(d: LS372Device, ch: str) -> str:
    return f"{d.reading(ch).status:03d}"


# -- scanner and inputs ----------------------------------------------------------------
def scan_q(d: LS372Device) -> str:
    channel, autoscan = d.scan()
    return f"{int(channel):02d},{autoscan}"


def inset_q(d: LS372Device, ch: str) -> str:
    c = d.channels[ch]
    return f"{c.enabled},{c.dwell:03d},{c.pause:03d},{c.curve:02d},{c.tempco}"


def intype_q(d: LS372Device, ch: str) -> str:
    c = d.channels[ch]
    return f"{c.mode},{c.excitation:02d},{c.autorange},{c.rng:02d},{c.cs_shunt},{c.units}"


def intype_set(
    d: LS372Device, ch: str, mode: int, excitation: int, autorange: int, rng: int, cs_shunt: int, units: int
) -> None:
    if ch == "A" and mode != 1:
        raise ExecutionError("control input A is current excitation only")
    if ch != "A" and rng == 0:
        raise ExecutionError("resistance range 0 on a measurement channel")
    # excitation ranges: A has 6 (current), a scanner channel 22 current or 12 voltage ones
    if excitation > (6 if ch == "A" else 22 if mode == 1 else 12):
        raise ExecutionError(f"excitation {excitation} outside this input's ranges")
    c = d.channels[ch]
    # input A has no resistance range to set: its field is ignored (the vendor's driver sends 0)
    rng = c.rng if ch == "A" else rng
    c.mode, c.excitation, c.autorange, c.rng, c.cs_shunt, c.units = mode, excitation, autorange, rng, cs_shunt, units


def filter_q(d: LS372Device, ch: str) -> str:
    c = d.channels[ch]
    return f"{c.filt_on},{c.settle:03d},{c.window:02d}"


def filter_set(d: LS372Device, target: str, on: int, settle: int, window: int) -> None:
    for ch in [str(i) for i in range(1, 17)] if target == ALL_CHANNELS else [target]:
        c = d.channels[ch]
        c.filt_on, c.settle, c.window = on, settle, window


def inname_set(d: LS372Device, ch: str, name: str) -> None:
    d.channels[ch].name = name


def tlimit_q(d: LS372Device, ch: str) -> str:
    limit = d.channels[ch].tlimit
    return "+0000" if limit == 0 else f"{limit:+09.4f}"  # socs' fixture: an unset limit is +0000


def tlimit_set(d: LS372Device, ch: str, limit: float) -> None:
    d.channels[ch].tlimit = max(0.0, limit)


# -- curves --------------------------------------------------------------------------------
def crvhdr_q(d: LS372Device, n: int) -> str:
    return d.curves.slot(n).header_reply()


def crvhdr_set(
    d: LS372Device, n: int, name: str, serial: str, data_format: int, limit: float, coefficient: int
) -> None:
    with d.lock:
        d.curves.set_header(n, name, serial, data_format, limit, coefficient)


def crvpt_q(d: LS372Device, n: int, i: int) -> str:
    u, t = d.curves.slot(n).cells[i - 1]
    return f"{u:+.6g},{t:+.6g}"


def crvpt_set(d: LS372Device, n: int, i: int, units: float, kelvin: float) -> None:
    with d.lock:
        d.curves.set_point(n, i, units, kelvin)


def crvdel(d: LS372Device, n: int) -> None:
    with d.lock:
        d.curves.delete(n)


# -- heater outputs -----------------------------------------------------------------------
def outmode_q(d: LS372Device, out: int) -> str:
    o = d.outputs[out]
    return f"{o.mode},{o.input},{o.powerup},{o.polarity},{o.filt},{o.delay:03d}"


def outmode_set(
    d: LS372Device, out: int, mode: int, inp: str, powerup: int, polarity: int, filt: int, delay: int
) -> None:
    o = d.outputs[out]
    o.mode, o.input, o.powerup, o.polarity, o.filt, o.delay = mode, inp, powerup, polarity, filt, delay


def range_set(d: LS372Device, out: int, rng: int) -> None:
    if out != 0 and rng > 1:  # the sample heater has ranges 0-8, the others are on (1) or off
        raise ExecutionError(f"range {rng} outside 0-1 on output {out}")
    d.outputs[out].range = rng


WARMUP_MAX_USER_CURRENT = 0.63  # A: the warm-up heater's largest current (manual p.163, max current code 2)


def htrset_q(d: LS372Device, out: int) -> str:
    o = d.outputs[out]
    if out == 1:  # the warm-up heater: resistance and max current are codes (manual p.163: n,n,+nnn.nnn,n)
        return f"{o.resistance_code},{o.max_current},{o.max_user_current:+08.3f},{o.display}"
    # the sample heater; the still output answers too (socs' fixtures record both in this format)
    return f"{o.resistance:+08.3f},{o.max_current},{o.max_user_current:+08.2f},{o.display}"


def htrset_set(
    d: LS372Device, out: int, resistance: float, max_current: int, max_user_current: float, display: int
) -> None:
    o = d.outputs[out]
    if out == 1:  # manual p.163: resistance 1 = 25 ohm, 2 = 50 ohm; max current 0 user, 1 0.45 A, 2 0.63 A
        if resistance not in (1, 2):
            raise ExecutionError(f"warm-up heater resistance setting {resistance:g} is not 1 (25 ohm) or 2 (50 ohm)")
        if max_current not in (0, 1, 2):
            raise ExecutionError(f"warm-up heater max current {max_current} is not 0, 1 or 2")
        if not 0 <= max_user_current <= WARMUP_MAX_USER_CURRENT:
            raise ExecutionError(f"warm-up heater max user current {max_user_current:g} A outside 0-0.63 A")
        o.resistance_code, o.max_current, o.max_user_current, o.display = (
            int(resistance),
            max_current,
            max_user_current,
            display,
        )
        return
    if not 1 <= resistance <= 2000:
        raise ExecutionError(f"sample heater resistance {resistance:g} outside 1-2000 ohm")
    o.resistance, o.max_current, o.max_user_current, o.display = resistance, max_current, max_user_current, display


def pid_q(d: LS372Device, out: int = 0) -> str:
    o = d.outputs[out]
    return f"{o.p:+08.1f},{o.i:+08.1f},{o.d:+07.1f}"


def pid_set(d: LS372Device, out: int, p: float, i: float, dd: float) -> None:
    o = d.outputs[out]
    o.p, o.i, o.d = p, i, dd


def setp_set(d: LS372Device, out: int, kelvin: float) -> None:
    d.outputs[out].setp = kelvin


def mout_set(d: LS372Device, out: int, percent: float) -> None:
    d.outputs[out].mout = percent


def htr_q(d: LS372Device) -> str:
    # socs' fixture records +00.0005E+00: percent with four decimals and a fixed E+00
    return f"{d.heater_output():+08.4f}E+00"


def ramp_q(d: LS372Device, out: int) -> str:
    on, rate = d.ramps[out]  # QCoDeS asks for all three outputs
    return f"{on},{rate:+07.3f}"


RAMP_MIN_RATE = 0.001  # K/min: manual p.173, "from 0.001 to 100"; 0 is a step change


def ramp_set(d: LS372Device, out: int, on: int, rate: float) -> None:
    if 0 < rate < RAMP_MIN_RATE:  # it would print as +0.000, a step change: refused (FIDELITY.md 372 row 50)
        raise ExecutionError(f"ramp rate {rate:g} K/min is below 0.001 and not 0")
    d.ramps[out] = (on, rate)


def still_set(d: LS372Device, percent: float) -> None:
    d.still = percent


def aout_q(d: LS372Device, out: int) -> str:
    return f"{(d.still if out == 2 else d.outputs[1].mout):+06.2f}"


def freq_set(d: LS372Device, which: str, code: int) -> None:
    d.freq[which] = code


def cmr_set(d: LS372Device, on: int) -> None:
    d.cmr = on


def warmup_set(d: LS372Device, on: int, percent: float) -> None:
    d.warmup = (on, percent)


def emul_set(d: LS372Device, mode: str | None = None) -> None:
    if mode is None:
        raise ExecutionError("Model 370 emulation mode is not emulated")


def ignore(d: LS372Device, *args: object) -> None:
    """A command accepted and not acted on."""


COMMANDS: tuple[Command, ...] = (
    # IEEE 488.2 common commands; they ignore any arguments
    Command("*IDN?", idn, counts=ANY),
    Command("*ESR?", esr_q, counts=ANY),
    Command("*CLS", cls, counts=ANY),
    Command("*RST", rst, counts=ANY),
    Command("*OPC?", lambda d: "1", counts=ANY),
    Command("*OPC", ignore, counts=ANY),
    Command("*STB?", stb_q, counts=ANY),
    Command("*SRE", ignore, counts=ANY),
    Command("*SRE?", lambda d: "000", counts=ANY),
    Command("*ESE", ese_set, (Int(0, 255),)),  # manual p.152: format nnn
    Command("*ESE?", lambda d: f"{d.ese:03d}", counts=ANY),
    Command("*TST?", lambda d: "0", counts=ANY),  # manual p.154: 0 = no errors found at power-up
    Command("*WAI", ignore, counts=ANY),  # manual p.154: commands run in order, nothing is pending
    # readings (RDGK? is the 370's spelling, which socs sends; SRDG? the 240's)
    Command("KRDG?", reading("kelvin"), (CHANNEL,)),
    Command("RDGK?", reading("kelvin"), (CHANNEL,)),
    Command("RDGR?", reading("ohms"), (CHANNEL,)),
    Command("SRDG?", reading("ohms"), (CHANNEL,)),
    Command("RDGPWR?", reading("power"), (CHANNEL,)),
    Command("QRDG?", reading("quad"), (CHANNEL,)),
    Command("RDGST?", rdgst_q, (CHANNEL,)),
    # scanner and inputs
    Command("SCAN?", scan_q, counts=ANY),
    Command("SCAN", lambda d, ch, auto: d.select_scan(ch, auto), (SCANNER_CHANNEL, FLAG)),
    Command("INSET?", inset_q, (CHANNEL,)),
    Command(
        "INSET", lambda d, *v: d.configure_input(*v), (CHANNEL, FLAG, Int(1, 200), Int(3, 200), Int(0, 59), Int(1, 2))
    ),  # enabled, dwell, pause, curve, tempco
    Command("INTYPE?", intype_q, (CHANNEL,)),
    Command(
        "INTYPE", intype_set, (CHANNEL, FLAG, Int(1, 22), Int(0, 2), Int(0, 22), FLAG, Int(1, 2))
    ),  # mode, exc, auto, range (0 only on A, where it is ignored), shunt, units
    Command("FILTER?", filter_q, (CHANNEL,)),
    Command("FILTER", filter_set, (Input(allow_all=True), FLAG, Int(0, 200), Int(1, 80))),  # on, settle %, window %
    Command("INNAME?", lambda d, ch: d.channels[ch].name, (CHANNEL,)),
    Command("INNAME", inname_set, (CHANNEL, Text(15))),
    Command("TLIMIT?", tlimit_q, (CHANNEL,)),
    Command("TLIMIT", tlimit_set, (CHANNEL, FLOAT)),
    # curves
    Command("CRVHDR?", crvhdr_q, (CURVE,)),
    Command("CRVHDR", crvhdr_set, (USER_CURVE, Text(15), Text(10), Int(3, 7, only=(3, 4, 7)), FLOAT, Int(1, 2))),
    Command("CRVPT?", crvpt_q, (CURVE, POINT)),
    # an optional fifth field, the curvature (socs sends one for cubic-spline curves), is ignored
    Command("CRVPT", crvpt_set, (USER_CURVE, POINT, FLOAT, FLOAT), counts=(4, 5)),
    Command("CRVDEL", crvdel, (USER_CURVE,)),
    # heater outputs
    Command("OUTMODE?", outmode_q, (OUTPUT,)),
    Command(
        "OUTMODE", outmode_set, (OUTPUT, Int(0, 6), ControlInput(), FLAG, FLAG, FLAG, Int(1, 255))
    ),  # mode, input, powerup, polarity, filter, delay
    Command("RANGE?", lambda d, out: str(d.outputs[out].range), (OUTPUT,)),
    Command("RANGE", range_set, (OUTPUT, Int(0, 8))),
    Command("HTRSET?", htrset_q, (OUTPUT,)),
    # outputs 0-1 only; the fields' ranges depend on the output (htrset_set)
    Command("HTRSET", htrset_set, (Int(0, 1), FLOAT, Int(0, 4), FLOAT, Int(1, 2))),
    Command("PID?", pid_q, (OUTPUT,), counts=(0, 1)),
    Command("PID", pid_set, (OUTPUT, Float(0, 1000), Float(0, 10000), Float(0, 2500))),
    Command("SETP?", lambda d, out: fmt_372(d.outputs[out].setp), (OUTPUT,)),
    Command("SETP", setp_set, (OUTPUT, FLOAT)),
    Command("MOUT?", lambda d, out: f"{d.outputs[out].mout:+08.3f}", (OUTPUT,)),
    Command("MOUT", mout_set, (OUTPUT, PERCENT)),
    Command("HTR?", htr_q, counts=(0, 1)),  # the sample heater's output, whatever the argument (FIDELITY.md 5a)
    Command("HTRST?", lambda d: "0", counts=(0, 1)),  # heater status: no error (1 would be heater open, 2 short)
    Command("RAMP?", ramp_q, (OUTPUT,)),
    # K/min: 0 (a step change) or 0.001-100 (manual p.173); output 2 is accepted as QCoDeS sends it (FIDELITY.md 11)
    Command("RAMP", ramp_set, (OUTPUT, FLAG, Float(0, 100))),
    Command("RAMPST?", lambda d, out: "0", (OUTPUT,)),  # the setpoint is not ramped in simulation: it changes at once
    Command("STILL?", lambda d: f"{d.still:+06.2f}", counts=ANY),
    Command("STILL", still_set, (PERCENT,)),
    Command("AOUT?", aout_q, (Int(1, 2),)),
    # measurement settings
    Command("FREQ?", lambda d, which: str(d.freq[which]), (FREQ_TARGET,)),
    Command("FREQ", freq_set, (FREQ_TARGET, Int(1, 5))),
    Command("CMR?", lambda d: str(d.cmr), counts=ANY),
    Command("CMR", cmr_set, (FLAG,)),
    Command("WARMUP?", lambda d: f"{d.warmup[0]},{d.warmup[1]:+08.3f}", counts=ANY),
    Command("WARMUP", warmup_set, (FLAG, PERCENT)),
    # Model 370 emulation mode: only "off" (0) is accepted
    Command("EMUL?", lambda d: "0", counts=ANY),
    Command("EMUL", emul_set, (Choice(("0",)),), counts=ANY),
)


def dispatcher(device: LS372Device) -> Dispatcher:
    """A dispatcher for one connection: the command table bound to ``device``, errors into its ESR."""
    return Dispatcher(bind_table(COMMANDS + ls372_panel_commands.COMMANDS, device), device.error)
