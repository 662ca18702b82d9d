"""The emulated Model 370's command table: each mnemonic, its declared arguments and its reply format.

Arguments and refusals are declared here (``ExecutionError``: ESR bit 16, no reply); state and
physics are ``LS370Device`` (the 372's, reused). Handlers shared with the 372 (readings, scanner,
curves, IEEE 488.2 status) are the 372 table's own functions. What each answer is based on is the
"Model 370" section of ``FIDELITY.md``; where the 370 manual was not at hand it says UNVERIFIED.

Two rules of the 370's serial firmware are the dispatcher's (``Dispatcher370``): only the last
query of a message is answered (the manuals of its generation: "the instrument will respond only
to the last query it receives"), and a message that starts less than 50 ms after the previous
reply or command is ignored (370 manual 6.2.6, socs: "manual says 50ms").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import ls372_commands as c372
from .curve_memory import POINTS
from .ls372_commands import Input
from .protocol import (
    ANY,
    PERCENT,
    Command,
    Dispatcher,
    ExecutionError,
    Float,
    Int,
    Text,
    bind_table,
    fmt_372,
    parse_message,
)

if TYPE_CHECKING:
    from .ls370_device import LS370Device

QUIET_S = 0.05  # the manual's quiet time after a reply or a command
# CMODE (370: 1 closed loop, 2 zone, 3 open loop, 4 off) <-> the 372 loop's OUTMODE mode it runs as
MODE_372 = {1: 5, 2: 3, 3: 2, 4: 0}
MODE_370 = {v: k for k, v in MODE_372.items()}
CHANNEL = Input(allow_a=False)  # 1-16: the 370 has no control input A
CURVE = Int(1, 20)
FLAG = Int(0, 1)


def idn(d: LS370Device) -> str:
    return f"LSCI,MODEL370,{d.serial},{d.firmware}"


def rdgrng_q(d: LS370Device, ch: str) -> str:
    c = d.channels[ch]  # manual p.6-34: n,nn,nn,n,n
    return f"{c.mode},{c.excitation:02d},{c.rng:02d},{c.autorange},{c.cs_shunt}"


def rdgrng_set(d: LS370Device, ch: str, mode: int, excitation: int, rng: int, autorange: int, cs_off: int) -> None:
    if excitation > (22 if mode == 1 else 12):  # current 1-22, voltage 1-12 (socs' excitation keys)
        raise ExecutionError(f"excitation {excitation} outside the {'current' if mode else 'voltage'} ranges")
    c = d.channels[ch]
    c.mode, c.excitation, c.rng, c.autorange, c.cs_shunt = mode, excitation, rng, autorange, cs_off


def inset_set(d: LS370Device, ch: str, enabled: int, dwell: int, pause: int, curve: int, tempco: int) -> None:
    d.configure_input(ch, enabled, dwell, pause, curve, tempco)


def cmode_q(d: LS370Device) -> str:
    return str(MODE_370.get(d.outputs[0].mode, 4))


def cmode_set(d: LS370Device, mode: int) -> None:
    with d.lock:
        d.heater_output()  # the loop runs up to now under the old mode
        d.outputs[0].mode = MODE_372[mode]


def cset_q(d: LS370Device) -> str:
    o, k = d.outputs[0], d.control
    return f"{int(o.input):02d},{k.filtered},{k.units},{o.delay:03d},{k.display},{k.limit},{o.resistance:g}"


def cset_set(
    d: LS370Device, ch: str, filtered: int, units: int, delay: int, display: int, limit: int, resistance: float
) -> None:
    o, k = d.outputs[0], d.control
    o.input, o.delay, o.resistance = ch, delay, resistance
    k.filtered, k.units, k.display, k.limit = filtered, units, display, limit


def htrrng_set(d: LS370Device, rng: int) -> None:
    with d.lock:
        d.heater_output()
        d.outputs[0].range = rng


def pid_set(d: LS370Device, p: float, i: float, dd: float) -> None:
    c372.pid_set(d, 0, p, i, dd)


def setp_set(d: LS370Device, value: float) -> None:
    with d.lock:
        d.heater_output()
        d.outputs[0].setp = value


def mout_set(d: LS370Device, value: float) -> None:
    d.outputs[0].mout = value


def cpol_set(d: LS370Device, polarity: int) -> None:
    d.control.polarity = polarity


def ieee_set(d: LS370Device, terminator: int, eoi: int, address: int | None = None) -> None:
    """``IEEE <terminator>,<EOI>[,<address>]`` (InstrumentKit sends ``IEEE 3,0``); GPIB only: the
    serial port always ends replies with CR LF."""
    d.ieee = (terminator, eoi, d.ieee[2] if address is None else address)


COMMANDS: tuple[Command, ...] = (
    # IEEE 488.2 common commands (manual pp.6-20, 6-21); *WAI is "not supported in the Model 370"
    Command("*IDN?", idn, counts=ANY),
    Command("*ESR?", c372.esr_q, counts=ANY),
    Command("*CLS", c372.cls, counts=ANY),
    Command("*RST", c372.rst, counts=ANY),
    Command("*OPC?", lambda d: "1", counts=ANY),
    Command("*OPC", c372.ignore, counts=ANY),
    Command("*STB?", c372.stb_q, counts=ANY),
    Command("*SRE", c372.ignore, counts=ANY),
    Command("*SRE?", lambda d: "000", counts=ANY),
    Command("*ESE", c372.ese_set, (Int(0, 255),)),
    Command("*ESE?", lambda d: f"{d.ese:03d}", counts=ANY),
    Command("*TST?", lambda d: "0", counts=ANY),
    Command("IEEE?", lambda d: "{},{},{:02d}".format(*d.ieee), counts=ANY),
    Command("IEEE", ieee_set, (Int(0, 3), FLAG, Int(1, 30)), counts=(2, 3)),
    # readings (channels 1-16)
    Command("RDGK?", c372.reading("kelvin"), (CHANNEL,)),
    Command("RDGR?", c372.reading("ohms"), (CHANNEL,)),
    Command("RDGPWR?", c372.reading("power"), (CHANNEL,)),
    Command("RDGST?", c372.rdgst_q, (CHANNEL,)),
    # scanner and inputs
    Command("SCAN?", c372.scan_q, counts=ANY),
    Command("SCAN", lambda d, ch, auto: d.select_scan(ch, auto), (CHANNEL, FLAG)),
    Command("INSET?", c372.inset_q, (CHANNEL,)),
    Command("INSET", inset_set, (CHANNEL, FLAG, Int(1, 200), Int(3, 200), Int(0, 20), Int(1, 2))),
    Command("RDGRNG?", rdgrng_q, (CHANNEL,)),
    Command("RDGRNG", rdgrng_set, (CHANNEL, FLAG, Int(1, 22), Int(1, 22), FLAG, FLAG)),
    # curves 1-20, formats 3 and 4
    Command("CRVHDR?", c372.crvhdr_q, (CURVE,)),
    Command("CRVHDR", c372.crvhdr_set, (CURVE, Text(15), Text(10), Int(3, 4), Float(), Int(1, 2))),
    Command("CRVPT?", c372.crvpt_q, (CURVE, Int(1, POINTS))),
    Command("CRVPT", c372.crvpt_set, (CURVE, Int(1, POINTS), Float(), Float())),
    Command("CRVDEL", c372.crvdel, (CURVE,)),
    # the sample heater
    Command("CMODE?", cmode_q, counts=ANY),
    Command("CMODE", cmode_set, (Int(1, 4),)),
    Command("CPOL?", lambda d: str(d.control.polarity), counts=ANY),
    Command("CPOL", cpol_set, (FLAG,)),
    Command("CSET?", cset_q, counts=ANY),
    Command(
        "CSET", cset_set, (CHANNEL, FLAG, Int(1, 2), Int(1, 255), Int(1, 2), Int(0, 8), Float(1, 100000))
    ),  # channel, filter, units, delay, display, heater limit, heater resistance
    Command("HTRRNG?", lambda d: str(d.outputs[0].range), counts=ANY),
    Command("HTRRNG", htrrng_set, (Int(0, 8),)),
    Command("HTR?", lambda d: fmt_372(d.heater_output()), counts=ANY),
    Command("SETP?", lambda d: fmt_372(d.outputs[0].setp), counts=ANY),
    Command("SETP", setp_set, (Float(0, 100000),)),
    Command("PID?", lambda d: c372.pid_q(d, 0), counts=ANY),
    Command("PID", pid_set, (Float(0, 1000), Float(0, 10000), Float(0, 2500))),
    Command("MOUT?", lambda d: fmt_372(d.outputs[0].mout), counts=ANY),
    Command("MOUT", mout_set, (PERCENT,)),
    Command("STILL?", lambda d: f"{d.still:+06.2f}", counts=ANY),
    Command("STILL", c372.still_set, (PERCENT,)),
)


class Dispatcher370(Dispatcher):
    """The 372's line dialect with the 370's two serial rules (one answer per message; 50 ms quiet)."""

    def __init__(self, device: LS370Device) -> None:
        super().__init__(bind_table(COMMANDS, device), device.error)
        self.device = device
        self._quiet_until = 0.0
        self._arrival: float | None = None

    def arrived(self, t: float) -> None:
        """The wire's note of when bytes came: a message is judged by its arrival, not by when
        this thread got to it (a busy host must not turn an early message into a timely one)."""
        self._arrival = t

    def handle_line(self, line: str) -> str | None:
        if not line.strip():
            return None
        now = self._arrival if self._arrival is not None else time.monotonic()
        if self.device.strict_pacing and now < self._quiet_until:
            self.device.paced_drops += 1  # the 370 was not ready: the message is lost, nothing is flagged
            return None
        # each part on its own, so the answer is the last *query's* (FIDELITY 370 row 3): a last
        # query that fails (``RDGK? 5;FOO?``) answers nothing, not an earlier query's reply
        answer: str | None = None
        for part in line.split(";"):
            try:
                name = parse_message(part)[0]
            except ExecutionError:
                name = "?"  # a malformed part may have been the last query: it is refused, unanswered
            reply = super().handle_line(part)
            if name.endswith("?"):
                answer = reply
        self._quiet_until = time.monotonic() + QUIET_S
        return answer


def dispatcher(device: LS370Device) -> Dispatcher:
    """A dispatcher for one link: the command table bound to ``device``, errors into its ESR."""
    return Dispatcher370(device)
