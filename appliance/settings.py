"""Instrument settings as declared operations: each declared once, reaching the API, CLI and OpenAPI.

A ``Setting`` names the driver command, every argument with its limits as the manual states
them (``Arg``), how to read the setting back and how to write it. From that one declaration:

- ``PUT /api/v1/control/<node>/settings/<name>`` (body ``{"target": "5", "values": {...}}``)
  checks each given value against its limit (400 naming the limit), writes the whole setting on
  the poller (the one owner of the link), reads it back, and answers 409 naming the first field
  that did not take; the configuration snapshot is then forced;
- ``GET /api/v1/control/<node>/settings[/<name>]`` reads the current values;
- ``kelvinpi setting get|set`` (settings_client.py) and the OpenAPI document (``openapi_paths``).

A change is audited like every control request (``Control.audited``): the request, with the
value as last read, before anything is sent; the outcome after.

References: the 372 and 240 manuals as cited in the project notes (lakeshore.md sections 1.6
and 2); where the manual page was not reached, the field order of Lake Shore's own driver
(lakeshore model_372.py), which the tests use to read each value back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from drivers import InstrumentError
from drivers.base import quote_name, text_problem
from drivers.errors import ConnectionLost, DriverError, InstrumentTimeout
from drivers.ls240 import Model240
from drivers.ls370 import ControlMode, ControlSetup, Model370, ReadingRange
from drivers.ls372 import PID, HeaterSetup, InputSetup, InputType, Model372, OutputMode, OutputSetup

from .control import Control, ControlRefused, PartFailed
from .curve_api import snapshots_with_pending

if TYPE_CHECKING:
    from .poller import Poller

CHANNELS_372 = [str(i) for i in range(1, 17)] + ["A"]
# settings that change which inputs are read, how long their pause is or their units: the poller
# plans its acquisition again after one of them takes (as on connect)
REPLAN_AFTER = {"input", "input_type", "scanner"}


@dataclass(frozen=True)
class Arg:
    """One argument of a setting command, with its limit as the manual states it."""

    name: str
    kind: str  # "int", "float", "bool", "channel" (372: 1-16 or A), "text"
    lo: float = 0
    hi: float = 0
    doc: str = ""
    hi_for: Mapping[str, float] = field(default_factory=dict)  # a target with another upper limit
    only_for: tuple[str, ...] = ()  # the targets this argument applies to (empty: all)
    # the step the instrument keeps the value at (its reply's printed precision); 0: six significant digits
    resolution: float = 0.0

    def same(self, wrote: Any, read: Any) -> bool:
        """The read-back equals what was written, at the resolution the instrument keeps it at."""
        if self.resolution and isinstance(wrote, (int, float)) and isinstance(read, (int, float)):
            return abs(wrote - read) <= self.resolution / 2 * (1 + 1e-6)
        return same(wrote, read)

    def limit(self, target: str = "") -> str:
        """The limit in words, as a 400 names it."""
        hi = self.hi_for.get(target, self.hi)
        if self.kind == "bool":
            return f"{self.name} is 0 or 1 ({self.doc})" if self.doc else f"{self.name} is 0 or 1"
        if self.kind == "channel":
            return f"{self.name} is a channel 1-16 or A"
        if self.kind == "text":
            return f'{self.name} is at most {int(hi)} printable ASCII characters (0x20-0x7E), without , ; or "'
        what = "an integer" if self.kind == "int" else "a number"
        return f"{self.name} is {what} from {self.lo:g} to {hi:g}" + (f" ({self.doc})" if self.doc else "")

    def check(self, value: Any, target: str) -> Any:
        """The value as the command takes it, or ``ValueError`` naming the limit."""
        hi = self.hi_for.get(target, self.hi)
        bad = ValueError(f"{self.limit(target)}, not {value!r}")
        if self.kind == "text":
            if not isinstance(value, str):
                raise bad
            problem = text_problem(value, int(hi))
            if problem:
                raise ValueError(f"{self.limit(target)}: {value!r} {problem}")
            return value
        if self.kind == "channel":
            ch = str(value).upper().lstrip("0") if not isinstance(value, bool) else ""
            if ch not in CHANNELS_372:
                raise bad
            return ch
        if self.kind == "bool":
            if value not in (0, 1) or isinstance(value, float):
                raise bad
            return int(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite(value):
            raise bad
        if self.kind == "int" and value != int(value):
            raise bad
        if not self.lo <= value <= hi:
            raise bad
        return int(value) if self.kind == "int" else float(value)

    def schema(self) -> dict:
        if self.kind == "text":
            return {"type": "string", "maxLength": int(self.hi), "description": self.limit()}
        if self.kind == "channel":
            return {"type": "string", "enum": CHANNELS_372, "description": self.limit()}
        if self.kind == "bool":
            return {"type": "integer", "enum": [0, 1], "description": self.limit()}
        hi = max([self.hi, *self.hi_for.values()])
        return {
            "type": "integer" if self.kind == "int" else "number",
            "minimum": self.lo,
            "maximum": hi,
            "description": self.limit() + "".join(f"; for {t}: up to {h:g}" for t, h in self.hi_for.items()),
        }


@dataclass(frozen=True)
class Setting:
    """One declared setting: the command, its arguments, how to read and write it on the driver."""

    name: str
    model: str  # "372" or "240"
    command: str  # the instrument command (its query is the same with "?")
    manual: str  # where its arguments and limits are stated
    summary: str
    target: str  # what one instance is addressed by: "input", "output", or "" (the instrument)
    targets: Callable[[Any], list[str]]
    args: tuple[Arg, ...]
    read: Callable[[Any, str], dict]
    write: Callable[[Any, str, dict], None]
    # the fields whose read-back may lawfully differ from what was written, given the values written
    unchecked: Callable[[dict], set[str]] = lambda values: set()
    # a limit across fields (the 370's voltage excitation 1-12 beside current 1-22): the problem in words, or ""
    across: Callable[[dict], str] = lambda values: ""

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)

    def applies(self, a: Arg, target: str) -> bool:
        return not a.only_for or target in a.only_for


# -- the 372 --------------------------------------------------------------------------------
def _inset_read(inst: Model372, ch: str) -> dict:
    s = inst.input_setup(ch)
    return {"enabled": int(s.enabled), "dwell": s.dwell, "pause": s.pause, "curve": s.curve, "tempco": s.tempco}


def _inset_write(inst: Model372, ch: str, v: dict) -> None:
    inst.set_input_setup(ch, InputSetup(bool(v["enabled"]), v["dwell"], v["pause"], v["curve"], v["tempco"]))


def _intype_read(inst: Model372, ch: str) -> dict:
    t = inst.input_type(ch)
    return {
        "mode": t.mode,
        "excitation": t.excitation,
        "autorange": t.autorange,
        "range": t.range,
        "cs_shunt": t.cs_shunt,
        "units": t.units,
    }


def _intype_write(inst: Model372, ch: str, v: dict) -> None:
    inst.set_input_type(
        ch, InputType(v["mode"], v["excitation"], v["autorange"], v["range"], v["cs_shunt"], v["units"])
    )


def _outmode_read(inst: Model372, out: str) -> dict:
    s = inst.output_mode(int(out))
    return {
        "mode": int(s.mode),
        "input": s.input,
        "powerup": s.powerup,
        "polarity": s.polarity,
        "filter": s.filter,
        "delay": s.delay,
    }


def _outmode_write(inst: Model372, out: str, v: dict) -> None:
    inst.set_output_mode(
        int(out),
        OutputSetup(OutputMode(v["mode"]), v["input"], v["powerup"], v["polarity"], v["filter"], v["delay"]),
    )


def _htrset_read(inst: Model372, out: str) -> dict:
    s = inst.heater_setup(int(out))
    return {
        "resistance": s.resistance,
        "max_current": s.max_current,
        "max_user_current": s.max_user_current,
        "display": s.display,
    }


def _htrset_write(inst: Model372, out: str, v: dict) -> None:
    inst.set_heater_setup(int(out), HeaterSetup(v["resistance"], v["max_current"], v["max_user_current"], v["display"]))


def _pid_write(inst: Model372, out: str, v: dict) -> None:
    inst.set_pid(int(out), PID(v["p"], v["i"], v["d"]))


def _ramp_read(inst: Model372, out: str) -> dict:
    on, rate = inst.ramp(int(out))
    return {"enabled": int(on), "rate": rate}


def _ramp_write(inst: Model372, out: str, v: dict) -> None:
    inst.set_ramp(int(out), bool(v["enabled"]), v["rate"])


def _scan_read(inst: Model372, _: str) -> dict:
    s = inst.scan()
    # an integer, as PUT takes it (SCAN reaches channels 1-16 only): GET's values PUT back unchanged
    return {"channel": int(s.channel), "autoscan": int(s.autoscan)}


def _channels(inst: Model372) -> list[str]:
    return list(CHANNELS_372)


def _outputs(*outs: int) -> Callable[[Any], list[str]]:
    return lambda inst: [str(o) for o in outs]


def _none(inst: object) -> list[str]:
    return [""]


# Manual references. "372 manual" is the Model 372 user's manual rev. 1.7 (P/N 119-372, 18 October 2017), printed
# page N, as read from its published page text (firmware_host/FIDELITY.md names where); "§6.6.1" is its interface
# command list. Where the command's own page was not at hand the reference says so (UNVERIFIED), and the limits
# are the project notes' (lakeshore.md 1.6), on which socs, Lake Shore's lakeshore and QCoDeS agree.
M372 = "372 manual rev. 1.7"
NOT_AT_HAND = "page not at hand, UNVERIFIED; limits from lakeshore.md 1.6, where socs, lakeshore and QCoDeS agree"

SETTINGS_372 = (
    Setting(
        "input",
        "372",
        "INSET",
        M372 + f" §6.6.1 INSET ({NOT_AT_HAND}): INSET <ch>,<enable>,<dwell 1-200 s>,<pause 3-200 s>,<curve 0-59>,"
        "<tempco 1|2>",
        "an input's scanner setup and curve",
        "input",
        _channels,
        (
            Arg("enabled", "bool", doc="1 scanned, 0 skipped"),
            Arg("dwell", "int", 1, 200, "seconds"),
            Arg("pause", "int", 3, 200, "seconds"),
            Arg("curve", "int", 0, 59, "0 none"),
            Arg("tempco", "int", 1, 2, "1 negative, 2 positive"),
        ),
        _inset_read,
        _inset_write,
    ),
    Setting(
        "input_type",
        "372",
        "INTYPE",
        M372 + f" §6.6.1 INTYPE ({NOT_AT_HAND}): INTYPE <ch>,<mode>,<excitation>,<autorange>,<range>,<cs shunt>,"
        "<units>; input A is current excitation only, its range field ignored (FIDELITY.md 372 row 22)",
        "an input's excitation, range and units",
        "input",
        _channels,
        (
            Arg("mode", "int", 0, 1, "0 voltage, 1 current excitation"),
            Arg("excitation", "int", 1, 22, "index: voltage 1-12, current 1-22"),
            Arg("autorange", "int", 0, 2, "0 off, 1 on, 2 ROX102B"),
            Arg("range", "int", 1, 22, "resistance range index"),
            Arg("cs_shunt", "bool", doc="0 excitation on, 1 shunted"),
            Arg("units", "int", 1, 2, "1 kelvin, 2 ohms"),
        ),
        _intype_read,
        _intype_write,
        # autorange picks the range itself: the range read back is the one in use
        lambda v: {"range"} if v.get("autorange") else set(),
    ),
    Setting(
        "name",
        "372",
        "INNAME",
        M372 + f' §6.6.1 INNAME ({NOT_AT_HAND}): INNAME <ch>,"<name, 15 characters>"',
        "an input's name",
        "input",
        _channels,
        (Arg("name", "text", 0, 15),),
        lambda inst, ch: {"name": inst.input_name(ch)},
        lambda inst, ch, v: inst.set_input_name(ch, v["name"]),
    ),
    Setting(
        "scanner",
        "372",
        "SCAN",
        M372 + f" §6.6.1 SCAN ({NOT_AT_HAND}): SCAN <ch 1-16>,<autoscan 0|1>",
        "the scanner's channel and autoscan",
        "",
        _none,
        (Arg("channel", "int", 1, 16, "measurement channel"), Arg("autoscan", "bool", doc="1 on")),
        _scan_read,
        lambda inst, _, v: inst.set_scan(v["channel"], bool(v["autoscan"])),
    ),
    Setting(
        "output_mode",
        "372",
        "OUTMODE",
        M372 + f" §6.6.1 OUTMODE ({NOT_AT_HAND}): OUTMODE <out>,<mode>,<input>,<powerup>,<polarity>,<filter>,"
        "<delay 1-255 s>; §4.6.1.5.1 p.95 (control input: none, A or 1-16), §4.6.1.5.10-11 p.100 (polarity, "
        "control filter)",
        "a heater output's mode and the input it controls from",
        "output",
        _outputs(0, 1, 2),
        (
            Arg("mode", "int", 0, 6, "0 off, 1 monitor out, 2 open loop, 3 zone, 4 still, 5 closed loop, 6 warm up"),
            Arg("input", "channel"),
            Arg("powerup", "bool", doc="1 keeps the output on after power-up"),
            Arg("polarity", "bool", doc="0 unipolar, 1 bipolar"),
            Arg("filter", "bool", doc="1 reads the control input filtered"),
            Arg("delay", "int", 1, 255, "seconds"),
        ),
        _outmode_read,
        _outmode_write,
    ),
    Setting(
        "heater_setup",
        "372",
        "HTRSET",
        M372 + " §6.6.1 HTRSET p.163: HTRSET <0|1>,<resistance>,<max current>,<max user current>,<display 1|2>; "
        "output 0 (sample heater) 1-2000 ohm (also §4.6.1.1 p.91), output 1 (warm-up) a code 1 = 25 ohm, 2 = 50 ohm, "
        "max current 0 user, 1 0.45 A, 2 0.63 A; the max user current is the warm-up heater's (the manual passes 0 "
        "for the sample heater): 0-0.63 A INFERRED, the sample heater's 0-2 A and max current 0-4 the appliance's "
        "own (UNVERIFIED)",
        "a heater's load resistance, current limit and display",
        "output",
        _outputs(0, 1),
        (
            # output 1 (the warm-up heater) takes codes (manual p.163): its upper limits differ (hi_for)
            Arg(
                "resistance",
                "float",
                1,
                2000,
                "ohms; output 1: code 1 = 25 ohm, 2 = 50 ohm",
                hi_for={"1": 2},
                resolution=0.001,  # HTRSET? +nnnn.nnn
            ),
            Arg("max_current", "int", 0, 4, "index, 0 the user limit; output 1: 1 0.45 A, 2 0.63 A", hi_for={"1": 2}),
            Arg(
                "max_user_current",
                "float",
                0,
                2,
                "amperes",
                hi_for={"1": 0.63},
                resolution=0.01,  # HTRSET? +nnnn.nn (output 1: +nnn.nnn)
            ),
            Arg("display", "int", 1, 2, "1 current, 2 power"),
        ),
        _htrset_read,
        _htrset_write,
    ),
    Setting(
        "heater_range",
        "372",
        "RANGE",
        M372 + " §6.6.1 RANGE p.173: RANGE <out>,<range> (output 0: 0 off, 1-8 31.6 uA-100 mA; outputs 1, 2: 0 off, "
        "1 on); §4.6.1.5.9 p.100",
        "a heater output's range (0 off)",
        "output",
        _outputs(0, 1, 2),
        (Arg("range", "int", 0, 1, "0 off", hi_for={"0": 8}),),
        lambda inst, out: {"range": inst.heater_range(int(out))},
        lambda inst, out, v: inst.set_heater_range(int(out), v["range"]),
    ),
    Setting(
        "setpoint",
        "372",
        "SETP",
        M372 + " §6.6.1 SETP (page not at hand: the firmware's bound is UNVERIFIED): SETP <out>,<value> in the "
        "control input's units; bounded by control.max_setpoint_kelvin (the appliance takes a setpoint only while "
        "the control input reads in kelvin)",
        "a heater output's setpoint",
        "output",
        _outputs(0, 1, 2),
        (Arg("value", "float", 0, 400, "kelvin or ohms, the control input's units"),),
        lambda inst, out: {"value": inst.setpoint(int(out))},
        lambda inst, out, v: inst.set_setpoint(int(out), v["value"]),
    ),
    Setting(
        "pid",
        "372",
        "PID",
        M372 + " §6.6.1 PID (page not at hand): PID <out>,<P 0-1000>,<I 0-10000>,<D 0-2500> as §6.6.1 ZONE p.178 "
        "states them; §4.6.1.5.2-4 pp.95-96 give the panel's P 0.001-1000 and D 1-2500 s (0 off)",
        "a heater output's control loop",
        "output",
        _outputs(0, 1),
        # PID? answers +nnnn.n for each (the emulator, as socs' recorded replies): kept at 0.1
        (
            Arg("p", "float", 0, 1000, "gain", resolution=0.1),
            Arg("i", "float", 0, 10000, "seconds", resolution=0.1),
            Arg("d", "float", 0, 2500, "s", resolution=0.1),
        ),
        lambda inst, out: (lambda p: {"p": p.p, "i": p.i, "d": p.d})(inst.pid(int(out))),
        _pid_write,
    ),
    Setting(
        "manual_output",
        "372",
        "MOUT",
        M372 + " §6.6.1 MOUT (page not at hand): MOUT <out>,<value>; §4.6.1.5.5 p.96: 0-100 % of the range, "
        "resolution 0.01 % (ZONE p.178: 0-100 %)",
        "a heater output's manual (open loop) value",
        "output",
        _outputs(0, 1, 2),
        (Arg("value", "float", 0, 100, "percent", resolution=0.001),),  # MOUT? +nnn.nnn
        lambda inst, out: {"value": inst.manual_output(int(out))},
        lambda inst, out, v: inst.set_manual_output(int(out), v["value"]),
    ),
    Setting(
        "ramp",
        "372",
        "RAMP",
        M372 + " §6.6.1 RAMP p.173: RAMP <out 0|1>,<off/on>,<rate 0.001-100 K/min; 0 a step change>",
        "a heater output's setpoint ramp",
        "output",
        _outputs(0, 1),  # the manual's RAMP takes outputs 0 and 1 (p.173)
        (
            Arg("enabled", "bool", doc="1 ramps the setpoint"),
            # 0 or 0.001-100: a rate between 0 and 0.001 is refused by the 372 (409 naming it)
            Arg("rate", "float", 0, 100, "K/min; 0 a step change, else at least 0.001", resolution=0.001),
        ),
        _ramp_read,
        _ramp_write,
    ),
)


# -- the 240 --------------------------------------------------------------------------------
def _inputs_240(inst: Model240) -> list[str]:
    return [str(n) for n in range(1, inst.channel_count + 1)]


def _intype240_read(inst: Model240, ch: str) -> dict:
    t = inst.input_type(int(ch))
    return {
        "sensor": t.sensor,
        "autorange": t.autorange,
        "range": t.range,
        "current_reversal": t.current_reversal,
        "units": t.units,
        "enabled": t.enabled,
    }


def _intype240_write(inst: Model240, ch: str, v: dict) -> None:
    # the 240 is silent when it ignores a command: the read-back below is the check
    inst.write(
        f"INTYPE {int(ch)},{v['sensor']},{v['autorange']},{v['range']},{v['current_reversal']},"
        f"{v['units']},{v['enabled']}"
    )


def _name240_write(inst: Model240, ch: str, v: dict) -> None:
    inst.write(f"INNAME {int(ch)},{quote_name(v['name'], 15)}")


M240 = "Model 240 manual"
SETTINGS_240 = (
    Setting(
        "input_type",
        "240",
        "INTYPE",
        M240
        + " p.47 (as the project notes cite it, lakeshore.md 2): INTYPE <input>,<sensor 1-3>,<autorange>,<range 0-8>,<current reversal>,<units 1-4>,<enabled>",
        "an input's sensor type, range, units and enable (curve N is input N's: the 240 has no INCRV, p.42)",
        "input",
        _inputs_240,
        (
            Arg("sensor", "int", 1, 3, "1 diode, 2 platinum RTD, 3 NTC RTD"),
            Arg("autorange", "bool", doc="NTC only"),
            Arg("range", "int", 0, 8, "NTC 0-8 = 10 ohm-100 kohm; 0 for diode and platinum"),
            Arg("current_reversal", "bool", doc="not for diodes"),
            Arg("units", "int", 1, 4, "1 K, 2 C, 3 sensor, 4 F"),
            Arg("enabled", "bool"),
        ),
        _intype240_read,
        _intype240_write,
        lambda v: {"range"} if v.get("autorange") else set(),
    ),
    Setting(
        "name",
        "240",
        "INNAME",
        M240 + ' p.46 (as the project notes cite it): INNAME <input>,"<name, 15 characters>"',
        "an input's name",
        "input",
        _inputs_240,
        (Arg("name", "text", 0, 15),),
        lambda inst, ch: {"name": inst.input_name(int(ch))},
        _name240_write,
    ),
)


# -- the 370 ----------------------------------------------------------------------------------
def _channels_370(inst: Model370) -> list[str]:
    return [str(i) for i in range(1, 17)]


def _rdgrng_read(inst: Model370, ch: str) -> dict:
    return vars(inst.reading_range(ch))


def _rdgrng_write(inst: Model370, ch: str, v: dict) -> None:
    inst.set_reading_range(ch, ReadingRange(v["mode"], v["excitation"], v["range"], v["autorange"], v["cs_off"]))


def _excitation_370(v: dict) -> str:
    """RDGRNG's excitation index is 1-12 under voltage excitation, 1-22 under current (socs' tables)."""
    if v["mode"] == 0 and v["excitation"] > 12:
        return f"excitation is an integer from 1 to 12 under voltage excitation (mode 0), not {v['excitation']!r}"
    return ""


def _cset_read(inst: Model370, _: str) -> dict:
    c = inst.control_setup()
    return {**vars(c), "channel": int(c.channel)}  # an integer, as PUT takes it


def _cset_write(inst: Model370, _: str, v: dict) -> None:
    inst.set_control_setup(
        ControlSetup(
            str(v["channel"]), v["filtered"], v["units"], v["delay"], v["display"], v["limit"], v["resistance"]
        )
    )


M370 = "Model 370 manual"
M370_NOT_AT_HAND = (
    M370 + " §6.3 (the command page not at hand: the field order socs' Lakeshore370.py sends; FIDELITY.md, Model 370)"
)

SETTINGS_370 = (
    Setting(
        "input",
        "370",
        "INSET",
        M370
        + " p.6-29 (as socs cites it; page not at hand): INSET <ch 1-16>,<enable>,<dwell 1-200 s>,<pause 3-200 s>,<curve 0-20>,<tempco 1|2>",
        "a channel's scanner setup and curve",
        "input",
        _channels_370,
        (
            Arg("enabled", "bool", doc="1 scanned, 0 skipped"),
            Arg("dwell", "int", 1, 200, "seconds"),
            Arg("pause", "int", 3, 200, "seconds"),
            Arg("curve", "int", 0, 20, "0 none"),
            Arg("tempco", "int", 1, 2, "1 negative, 2 positive"),
        ),
        _inset_read,
        _inset_write,
    ),
    Setting(
        "input_range",
        "370",
        "RDGRNG",
        M370
        + " p.6-34 (the query; the command page not at hand): RDGRNG <ch>,<mode>,<excitation>,<range>,<autorange>,<cs off>",
        "a channel's excitation and resistance range",
        "input",
        _channels_370,
        (
            Arg("mode", "int", 0, 1, "0 voltage, 1 current excitation"),
            Arg("excitation", "int", 1, 22, "index: voltage 1-12, current 1-22"),
            Arg("range", "int", 1, 22, "resistance range index, 2 mOhm-63.2 MOhm"),
            Arg("autorange", "bool", doc="1 on"),
            Arg("cs_off", "bool", doc="1 current source shunted (excitation off)"),
        ),
        _rdgrng_read,
        _rdgrng_write,
        lambda v: {"range"} if v.get("autorange") else set(),
        _excitation_370,
    ),
    Setting(
        "scanner",
        "370",
        "SCAN",
        M370_NOT_AT_HAND + ": SCAN <ch 1-16>,<autoscan 0|1>",
        "the scanner's channel and autoscan",
        "",
        _none,
        (Arg("channel", "int", 1, 16, "channel"), Arg("autoscan", "bool", doc="1 on")),
        _scan_read,
        lambda inst, _, v: inst.set_scan(v["channel"], bool(v["autoscan"])),
    ),
    Setting(
        "control_mode",
        "370",
        "CMODE",
        M370 + " p.6-24 (as socs cites it; page not at hand): CMODE <mode> (1 closed loop, 2 zone, 3 open loop, 4 off)",
        "the sample heater's control mode",
        "",
        _none,
        (Arg("mode", "int", 1, 4, "1 closed loop, 2 zone, 3 open loop, 4 off"),),
        lambda inst, _: {"mode": int(inst.control_mode())},
        lambda inst, _, v: inst.set_control_mode(ControlMode(v["mode"])),
    ),
    Setting(
        "control_setup",
        "370",
        "CSET",
        M370_NOT_AT_HAND + ": CSET <ch>,<filter>,<units>,<delay>,<display>,<heater limit>,<heater resistance>",
        "the control channel, setpoint units, heater limit and load",
        "",
        _none,
        (
            Arg("channel", "int", 1, 16, "the control channel"),
            Arg("filtered", "bool", doc="1 controls on filtered readings"),
            Arg("units", "int", 1, 2, "1 kelvin, 2 ohms"),
            Arg("delay", "int", 1, 255, "setpoint change pause, seconds"),
            Arg("display", "int", 1, 2, "1 current, 2 power"),
            Arg("limit", "int", 0, 8, "highest heater range"),
            Arg("resistance", "float", 1, 100000, "heater load, ohms (bounds UNVERIFIED)"),
        ),
        _cset_read,
        _cset_write,
    ),
    Setting(
        "heater_range",
        "370",
        "HTRRNG",
        M370_NOT_AT_HAND + ": HTRRNG <range> (0 off, 1-8 31.6 uA-100 mA)",
        "the sample heater's range (0 off)",
        "output",
        _outputs(0),
        (Arg("range", "int", 0, 8, "0 off"),),
        lambda inst, out: {"range": inst.heater_range(int(out))},
        lambda inst, out, v: inst.set_heater_range(int(out), v["range"]),
    ),
    Setting(
        "setpoint",
        "370",
        "SETP",
        M370_NOT_AT_HAND + ": SETP <value> in CSET's units; bounded by control.max_setpoint_kelvin (kelvin only)",
        "the sample heater's setpoint",
        "output",
        _outputs(0),
        (Arg("value", "float", 0, 400, "kelvin"),),
        lambda inst, out: {"value": inst.setpoint(int(out))},
        lambda inst, out, v: inst.set_setpoint(int(out), v["value"]),
    ),
    Setting(
        "pid",
        "370",
        "PID",
        M370_NOT_AT_HAND + ": PID <P 0-1000>,<I 0-10000>,<D 0-2500> (socs' bounds)",
        "the sample heater's control loop",
        "output",
        _outputs(0),
        (
            Arg("p", "float", 0, 1000, "gain", resolution=0.1),
            Arg("i", "float", 0, 10000, "seconds", resolution=0.1),
            Arg("d", "float", 0, 2500, "s", resolution=0.1),
        ),
        lambda inst, out: vars(inst.pid(int(out))),
        _pid_write,
    ),
    Setting(
        "manual_output",
        "370",
        "MOUT",
        M370_NOT_AT_HAND + ": MOUT <value> (percent)",
        "the sample heater's manual (open loop) output",
        "output",
        _outputs(0),
        (Arg("value", "float", 0, 100, "percent", resolution=0.001),),
        lambda inst, out: {"value": inst.manual_output(int(out))},
        lambda inst, out, v: inst.set_manual_output(int(out), v["value"]),
    ),
)


# -- the Cryomech CPA ------------------------------------------------------------------------
SETTINGS_CPA = (
    Setting(
        "compressor",
        "cpa",
        "holding register 1",
        "CPAxxxx Digital Panel User Manual, Modbus register 40,001 Enable / Disable (page not at hand: the"
        " register list as ograsdijk/CPA1110 quotes it); the values as socs cryomech_cpa drivers.py:81-91"
        " writes them (0x0001 starts, 0x00FF stops) and Cryomech's SampleCode (0xFFFF stops)",
        "start (1) or stop (0) the compressor",
        "",
        _none,
        (Arg("running", "bool", doc="1 start, 0 stop"),),
        # input register 2 alone: a block read here would be a reading delivered and never stored
        lambda inst, _: {"running": int(inst.running())},
        lambda inst, _, v: inst.power(bool(v["running"])),
        # a compressor takes seconds to start or stop (UNVERIFIED how many): the read-back may lag
        lambda v: {"running"},
    ),
)

SETTINGS: dict[str, dict[str, Setting]] = {
    "372": {s.name: s for s in SETTINGS_372},
    "240": {s.name: s for s in SETTINGS_240},
    "370": {s.name: s for s in SETTINGS_370},
    "cpa": {s.name: s for s in SETTINGS_CPA},
}

from .ls336_settings import settings_for  # noqa: E402 (it builds on Setting and Arg above)

SETTINGS.update({m: {s.name: s for s in settings_for(m)} for m in ("336", "350")})


# -- the setpoint cap across a units change -------------------------------------------------------
# ``control.max_setpoint_kelvin`` bounds SETP only while it is a kelvin value. A setting that changes
# the setpoint's units (the 370's CSET, the 372's INTYPE of a control input or OUTMODE's control
# input) or starts the loop would reinterpret the SETP the instrument already holds: 1.5 K becomes
# 1.5 ohm (on an NTC sensor the loop heats as hard as the range allows), a front-panel 20000 ohm
# becomes 20000 K. So such a change is judged on the loop it leaves behind.
ACTIVE_370 = (ControlMode.CLOSED_LOOP, ControlMode.ZONE)
ACTIVE_372 = (OutputMode.ZONE, OutputMode.CLOSED_LOOP, OutputMode.WARM_UP)


@dataclass(frozen=True)
class Loop:
    """What the cap judges of one heater output: its setpoint's units, whether it regulates, its SETP."""

    output: int
    units: int  # 1 kelvin; anything else a unit the kelvin cap cannot bound
    active: bool  # the setpoint drives the heater (closed loop, zone, warm up)
    setp: float


def _units_372(inst: Model372, ch: str) -> int:
    return inst.input_type(ch).units if ch and ch != "0" else 1  # no control input: SETP is plain kelvin


def _loops(inst: Any, name: str, target: str, full: dict | None) -> list[Loop]:  # a 372 or a 370
    """The loops a setting can change, as they are (``full`` None) or as ``full`` would leave them."""
    if hasattr(inst, "setpoint_units"):  # a 370: CSET holds the units, CMODE the loop
        if name not in ("control_setup", "control_mode"):
            return []
        units = full["units"] if full and name == "control_setup" else inst.control_setup().units
        mode = full["mode"] if full and name == "control_mode" else int(inst.control_mode())
        return [Loop(0, units, mode in ACTIVE_370, inst.setpoint(0))]
    if name not in ("input_type", "output_mode") or not isinstance(inst, Model372):
        return []  # the 336/350 (other mode numbers, celsius too) keep check_setpoint's refusal only
    loops = []
    for out in getattr(inst, "heater_outputs", ()):
        om = inst.output_mode(out)
        ch, mode = om.input, int(om.mode)
        if name == "output_mode":
            if str(out) != target:
                continue
            if full:
                ch, mode = full["input"], full["mode"]
        elif ch != target:  # input_type of an input this output does not control from
            continue
        units = full["units"] if full and name == "input_type" and ch == target else _units_372(inst, ch)
        loops.append(Loop(out, units, mode in ACTIVE_372, inst.setpoint(out)))
    return loops


def _unbounded(loop: Loop, cap: float) -> str:
    """Why the kelvin cap does not hold for ``loop`` ("" when it does)."""
    if loop.units == 1:
        return f"SETP {loop.setp:g} a kelvin setpoint above it" if loop.setp > cap else ""
    if loop.active or loop.setp != 0:
        return f"SETP {loop.setp:g} a setpoint in ohms, which it cannot bound" + (
            " while the loop regulates" if loop.active else ""
        )
    return ""


def check_setpoint_cap(control: Control, node: str, inst: Any, name: str, target: str, full: dict) -> None:
    """Refuse (400, naming the cap) a change that would leave a held setpoint outside the kelvin cap.

    Run on the poller before the write. Only a change of units or of regulation is judged: a loop
    already outside the cap (set on the front panel) does not block an unrelated field.
    """
    cap = control.cfg.max_setpoint_kelvin
    before = {lp.output: lp for lp in _loops(inst, name, target, None)}
    for lp in _loops(inst, name, target, full):
        was = before.get(lp.output)
        if was is not None and (was.units, was.active) == (lp.units, lp.active):
            continue
        why = _unbounded(lp, cap)
        if why:
            raise ControlRefused(
                400,
                f"{node} {name} would make output {lp.output}'s {why}: control.max_setpoint_kelvin is "
                f"{cap:g} K; change the setpoint (or turn the loop off) first",
            )


def finite(value: int | float) -> bool:
    """A finite number that fits a float (a JSON integer of 400 digits does not: math.isfinite raises)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class DidNotTake(ControlRefused):
    """Written, but the read-back differs beyond the instrument's resolution: audited as such, not "refused"."""

    outcome = "did not take"


# When each setting's last read (``Control.last_read``) was taken, wall time, per Control: the
# "was" of the next request is the newer of it and the latest configuration snapshot.
_READ_AT: WeakKeyDictionary[Control, dict[tuple[str, str, str], float]] = WeakKeyDictionary()


def remember(control: Control, key: tuple[str, str, str], values: Any) -> None:
    """``values`` as read from the instrument just now: the next request's "was"."""
    control.last_read[key] = values
    _READ_AT.setdefault(control, {})[key] = time.time()


def forget(control: Control, key: tuple[str, str, str]) -> None:
    """What the instrument holds is not known: the next snapshot says."""
    control.last_read.pop(key, None)
    _READ_AT.get(control, {}).pop(key, None)


def written_not_read_back(
    control: Control, poller: Poller, key: tuple[str, str, str], written: dict | None, exc: DriverError
) -> DriverError:
    """A setting sent whose acknowledgement (``written`` None) or read-back did not come: audited
    "failed part way", not "failed", since the instrument may well hold it. Either way what it
    holds is not known (a command has no reply of its own: bytes written to a link that then died
    may never have arrived), so the last read is forgotten and the next request's "was" comes
    from the snapshot taken once the link is back, which reads what the instrument holds.
    A lost link or a timeout stays one (the poller reconnects on it), carrying the outcome; an
    error answer becomes a ``PartFailed``."""
    forget(control, key)
    if written is None:
        state = f"sent, not acknowledged ({exc}): the instrument may hold it; the next snapshot reads what it holds"
    else:
        state = f"written, not read back ({exc}); the next snapshot reads what the instrument holds"
    poller.snapshot_due = True
    if isinstance(exc, (ConnectionLost, InstrumentTimeout)):
        exc.outcome = PartFailed.outcome  # type: ignore[union-attr]
        exc.state = state  # type: ignore[union-attr]
        return exc
    return PartFailed(str(exc), state, 409)


def same(a: Any, b: Any) -> bool:
    """Equal as the instrument keeps it (six significant digits for a number)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-5 * max(1.0, abs(a), abs(b))
    return str(a).strip().upper() == str(b).strip().upper()


class SettingService:
    """The declared settings of one appliance's instruments, run through ``Control``."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def _find(self, node: str, name: str) -> tuple[Any, Setting]:
        poller = self.control.poller(node)
        declared = SETTINGS.get(poller.cfg.model, {})
        if name not in declared:
            raise ControlRefused(
                404, f"a Model {poller.cfg.model} has no setting {name!r} (it has: {', '.join(declared)})"
            )
        return poller, declared[name]

    @staticmethod
    def _target(poller: Poller, s: Setting, target: Any) -> str:
        targets = s.targets(poller.instrument)
        if not s.target:
            t = ""
        elif target is None or isinstance(target, bool) or not str(target).strip():
            t = "?"
        else:
            t = str(target).strip().upper().lstrip("0") or "0"
            t = getattr(poller.instrument, "input_aliases", {}).get(t, t)  # a 336's D1 is its D
        if t not in targets:
            raise ControlRefused(400, f"{s.name} needs a target, the {s.target}: one of {', '.join(targets)}")
        return t

    def _was(self, node: str, s: Setting, t: str) -> Any:
        """The setting as last read: by a request, or by a configuration snapshot taken since
        (the newer wins: a snapshot after a reconnect or a change at the front panel corrects it)."""
        key = (node, s.name, t)
        known = self.control.last_read.get(key)
        snaps = snapshots_with_pending(self.control.store, node)
        snap = self._snapshotted(snaps[-1][1], s, t) if snaps else None
        if known is None:
            return snap
        at = _READ_AT.get(self.control, {}).get(key)
        if snap is not None and at is not None and snaps[-1][0] > at:
            return snap
        return known

    @staticmethod
    def _snapshotted(snap: dict, s: Setting, t: str) -> dict | None:
        """The setting as a configuration snapshot read it."""
        key = {"input": "inset", "input_type": "intype", "name": "name"}.get(s.name)
        if key and t in snap.get("channels", {}):
            value = snap["channels"][t].get(key)
            return {"name": value} if key == "name" else value
        out = snap.get("outputs", {}).get(t, {})
        key = {
            "output_mode": "outmode",
            "heater_setup": "htrset",
            "heater_range": "range",
            "setpoint": "setpoint",
            "pid": "pid",
            "manual_output": "manual_output",
            "ramp": "ramp",
        }.get(s.name)
        if key and key in out:
            value = out[key]
            return value if isinstance(value, dict) else {s.args[0].name: value}
        return None

    def describe(self, node: str) -> dict:
        """Every declared setting of ``node``'s model, read from the instrument (the settings view)."""
        poller = self.control.poller(node)
        declared = list(SETTINGS.get(poller.cfg.model, {}).values())

        def read_all(inst: Any) -> dict:
            out: dict = {}
            for s in declared:
                out[s.name] = {}
                for t in s.targets(inst):
                    try:
                        out[s.name][t] = s.read(inst, t)
                    except InstrumentError as exc:
                        out[s.name][t] = {"error": str(exc)}
            return out

        values = self.control.on_link(poller, read_all, "settings read", 60.0)
        for name, per in values.items():
            for t, v in per.items():
                if "error" not in v:  # an error answer says nothing of what the instrument holds
                    remember(self.control, (node, name, t), v)
        return {"node": node, "model": poller.cfg.model, "settings": values}

    def get(self, node: str, name: str, target: Any) -> dict:
        poller, s = self._find(node, name)
        t = self._target(poller, s, target)
        values = self.control.on_link(poller, lambda inst: s.read(inst, t), f"{s.name} read")
        remember(self.control, (node, s.name, t), values)
        return {"node": node, "setting": s.name, "target": t, "values": values}

    def set(self, node: str, name: str, body: dict, who: str) -> dict:
        poller, s = self._find(node, name)
        if not isinstance(body, dict):
            raise ControlRefused(400, 'give {"target": ..., "values": {field: value, ...}}')
        t = self._target(poller, s, body.get("target"))
        given = body.get("values")
        if not isinstance(given, dict) or not given:
            raise ControlRefused(
                400, f'give the fields to change as {{"values": {{...}}}}: {", ".join(a.name for a in s.args)}'
            )
        want: dict = {}
        for key, value in given.items():
            try:
                a = s.arg(key)
            except KeyError:
                raise ControlRefused(
                    400, f"{s.name} has no field {key!r} (it has: {', '.join(a.name for a in s.args)})"
                ) from None
            try:
                want[key] = a.check(value, t)
            except ValueError as exc:
                raise ControlRefused(
                    400, f"{node} {s.name} {s.target} {t}: {exc} ({s.manual})".replace("  ", " ")
                ) from None
        where = f"{s.target} {t} " if s.target else ""
        what = f"{s.name} ({s.command}) {where}set {want}"
        old = self._was(node, s, t)

        def change(inst: Any) -> tuple[dict, dict]:
            if s.name == "setpoint":
                self.control.check_setpoint(node, inst, int(t), want["value"])
            before = s.read(inst, t)
            full = {**before, **want}
            problem = s.across(full)
            if problem:
                raise ControlRefused(400, f"{node} {s.name} {where}{problem} ({s.manual})")
            check_setpoint_cap(self.control, node, inst, s.name, t, full)
            try:
                s.write(inst, t, full)
            except InstrumentError as exc:
                raise ControlRefused(409, f"{node} {s.name} {where}refused {', '.join(want)}: {exc}") from None
            except (ConnectionLost, InstrumentTimeout) as exc:  # sent, but its acknowledgement never came
                raise written_not_read_back(self.control, poller, (node, s.name, t), None, exc) from None
            try:
                after = s.read(inst, t)
            except DriverError as exc:
                raise written_not_read_back(self.control, poller, (node, s.name, t), full, exc) from None
            # the write happened: whatever it reads now is the last read, and the snapshot names it
            remember(self.control, (node, s.name, t), after)
            poller.snapshot_due = True
            for key in want:
                if key not in s.unchecked(full) and not s.arg(key).same(want[key], after[key]):
                    raise DidNotTake(
                        409,
                        f"{node} {s.name} {where}did not take {key}: set {want[key]!r}, the instrument reads "
                        f"{after[key]!r}",
                    )
            if s.name in REPLAN_AFTER and hasattr(poller, "replan"):
                poller.replan(f"{s.name} {where}changed to {after}: inputs planned again")
            return before, after

        before, after = self.control.audited(
            poller, who, what, "not read yet" if old is None else str(old), change, applied=lambda r: f"now {r[1]}"
        )
        remember(self.control, (node, s.name, t), after)
        poller.snapshot_due = True
        return {"node": node, "setting": s.name, "target": t, "before": before, "values": after}


def openapi_paths(ok: Callable[..., dict], errors: Callable[..., dict], api: str) -> dict:
    """The settings routes, one GET and PUT per declared setting, described from the declarations."""
    sec: list[dict[str, list[str]]] = [{"controlToken": []}]
    node = {"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}
    fails = errors(400, 401, 403, 404, 409, 413, 503)
    paths: dict = {
        f"{api}/{{node}}/settings": {
            "get": {
                "summary": "every declared setting of the instrument, as it reads now (needs the control token)",
                "security": sec,
                "parameters": [node],
                "responses": {**ok({"type": "object"}), **fails},
            }
        }
    }
    names = sorted({n for per in SETTINGS.values() for n in per})
    lines, shapes = [], []
    for model, per in SETTINGS.items():
        for d in per.values():
            lines.append(
                f"{d.name} (Model {model}, {d.command}, target: {d.target or 'none'}): {d.summary}; "
                + "; ".join(a.limit() for a in d.args)
                + f". {d.manual}"
            )
            shapes.append(
                {
                    "title": f"{d.name} (Model {model})",
                    "type": "object",
                    "properties": {a.name: a.schema() for a in d.args},
                    "additionalProperties": False,
                }
            )
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": names},
        "description": "the declared setting: " + " | ".join(lines),
    }
    target = {
        "name": "target",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "the input or output the setting belongs to (none for the 372's scanner)",
    }
    paths[f"{api}/{{node}}/settings/{{name}}"] = {
        "get": {
            "summary": "read one declared setting (needs the control token)",
            "security": sec,
            "parameters": [node, name, target],
            "responses": {**ok({"type": "object"}), **fails},
        },
        "put": {
            "summary": "change fields of a declared setting on the poller, read back; 400 names the limit, "
            "409 the field that did not take; forces a configuration snapshot",
            "security": sec,
            "parameters": [node, name],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["values"],
                            "properties": {
                                "target": {"type": "string"},
                                "values": {"anyOf": shapes},
                            },
                        }
                    }
                },
            },
            "responses": {**ok({"type": "object"}), **fails},
        },
    }
    return paths


def reference() -> str:
    """docs/settings.md: every declared setting with its command, target, manual reference and limits.

    Written from the declarations (``python -m tools.gen_docs``), so the page and the API's 400s state
    the same limits; tests/test_settings_docs.py fails when the committed page is stale.
    """
    out = [
        "# Instrument settings",
        "",
        "<!-- generated from appliance/settings.py by `python -m tools.gen_docs`: do not edit -->",
        "",
        "Each setting is declared once in `appliance/settings.py` and reaches the control API",
        "(`PUT /api/v1/control/<node>/settings/<name>`, see [api.md](api.md)), `kelvinpi setting` and the",
        "OpenAPI document from that declaration. A value outside a limit below is refused with a 400 naming",
        "the limit before anything is sent; a value the instrument does not take is a 409 naming the field.",
        "Where a limit differs by target, the target is named. UNVERIFIED marks what no manual page at hand",
        "states (firmware_host/FIDELITY.md gives the evidence for each command).",
        "",
    ]
    for model, per in SETTINGS.items():
        out += [f"## Model {model}", ""]
        for s in per.values():
            targets = "the instrument" if not s.target else f"{s.target}"
            out += [
                f"### `{s.name}` ({s.command})",
                "",
                f"{s.summary[0].upper()}{s.summary[1:]}; target: {targets}.",
                "",
            ]
            out += [f"Manual: {s.manual}.", ""]
            out += ["| field | limit |", "|---|---|"]
            for a in s.args:
                limit = a.limit()
                extra = "".join(f"; {s.target} {t}: up to {h:g}" for t, h in a.hi_for.items())
                out.append(f"| `{a.name}` | {limit}{extra} |")
            out.append("")
    return "\n".join(out)
