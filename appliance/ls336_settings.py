"""The Model 336's and 350's declared settings (registered in ``settings.SETTINGS``).

Field order and limits: the 336 manual's command summary as Lake Shore's ``lakeshore`` package
(``model_336.py``) and socs' ``Lakeshore336.py`` send each command; the 350's heater ranges from its
manual p.154. Each is read back by the ``lakeshore`` package in tests/test_ls336_settings.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.ls336 import INPUT_NUMBER, PID, HeaterSetup, InputType, OutputMode, OutputSetup, input_name_of

from .settings import Arg, Setting

M336 = (
    "336 manual §6 (the command's own page not at hand, UNVERIFIED; field order and limits as Lake Shore's"
    " lakeshore model_336.py and socs' Lakeshore336.py send them)"
)


def _inputs(inst: Any) -> list[str]:
    return list(inst.inputs)


def _outputs(*outs: int) -> Callable[[object], list[str]]:
    return lambda inst: [str(o) for o in outs]


def _intype_read(inst: Any, ch: str) -> dict:
    return vars(inst.input_type(ch)).copy()


def _intype_write(inst: Any, ch: str, v: dict) -> None:
    inst.set_input_type(ch, InputType(v["sensor_type"], v["autorange"], v["range"], v["compensation"], v["units"]))


def _outmode_read(inst: Any, out: str) -> dict:
    s = inst.output_mode(int(out))
    return {"mode": int(s.mode), "input": INPUT_NUMBER[s.input], "powerup": s.powerup}


def _outmode_write(inst: Any, out: str, v: dict) -> None:
    inst.set_output_mode(int(out), OutputSetup(OutputMode(v["mode"]), input_name_of(v["input"]), v["powerup"]))


def _htrset_write(inst: Any, out: str, v: dict) -> None:
    inst.set_heater_setup(int(out), HeaterSetup(v["resistance"], v["max_current"], v["max_user_current"], v["display"]))


def settings_for(model: str) -> tuple[Setting, ...]:
    """The settings of a 336 or a 350: the same commands, the 350's heaters with ranges 1-5."""
    top = 5 if model == "350" else 3
    return (
        Setting(
            "input_type",
            model,
            "INTYPE",
            M336 + ": INTYPE <input>,<sensor type>,<autorange>,<range>,<compensation>,<units>",
            "an input's sensor type, range and units",
            "input",
            _inputs,
            (
                Arg("sensor_type", "int", 0, 4, "0 disabled, 1 diode, 2 PTC RTD, 3 NTC RTD, 4 thermocouple"),
                Arg("autorange", "bool", doc="1 on (RTDs)"),
                Arg("range", "int", 0, 8, "diode 0-1, PTC 0-6, NTC 0-8, thermocouple 0"),
                Arg("compensation", "bool", doc="thermal EMF / reversal compensation"),
                Arg("units", "int", 1, 3, "1 kelvin, 2 Celsius, 3 sensor"),
            ),
            _intype_read,
            _intype_write,
            lambda v: {"range"} if v.get("autorange") else set(),
        ),
        Setting(
            "curve",
            model,
            "INCRV",
            M336 + ": INCRV <input>,<curve 0-59> (a curve whose format does not suit the sensor reads back 0)",
            "the curve an input converts through",
            "input",
            _inputs,
            (Arg("curve", "int", 0, 59, "0 none, 1-20 standard, 21-59 user"),),
            lambda inst, ch: {"curve": inst.input_curve(ch)},
            lambda inst, ch, v: inst.set_input_curve(ch, v["curve"]),
        ),
        Setting(
            "name",
            model,
            "INNAME",
            M336 + ': INNAME <input>,"<name, 15 characters>"',
            "an input's name",
            "input",
            _inputs,
            (Arg("name", "text", 0, 15),),
            lambda inst, ch: {"name": inst.input_name(ch)},
            lambda inst, ch, v: inst.set_input_name(ch, v["name"]),
        ),
        Setting(
            "output_mode",
            model,
            "OUTMODE",
            M336 + ": OUTMODE <output 1-4>,<mode>,<input>,<powerup>",
            "an output's mode and the input it controls from",
            "output",
            _outputs(1, 2, 3, 4),
            (
                Arg("mode", "int", 0, 5, "0 off, 1 closed loop, 2 zone, 3 open loop, 4 monitor out, 5 warm up"),
                Arg("input", "int", 0, 8, "0 none, 1-4 A-D, 5-8 D2-D5"),
                Arg("powerup", "bool", doc="1 keeps the output on after power-up"),
            ),
            _outmode_read,
            _outmode_write,
        ),
        Setting(
            "heater_setup",
            model,
            "HTRSET",
            M336 + ": HTRSET <output 1|2>,<resistance 1 = 25, 2 = 50 ohm>,<max current>,<max user current>,<display>",
            "a heater's load, current limit and display",
            "output",
            _outputs(1, 2),
            (
                Arg("resistance", "int", 1, 2, "1 = 25 ohm, 2 = 50 ohm"),
                Arg("max_current", "int", 0, 4, "0 user, 1 0.707 A, 2 1 A, 3 1.141 A, 4 2 A"),
                Arg("max_user_current", "float", 0, 2, "amperes", resolution=0.001),  # HTRSET? +n.nnn
                Arg("display", "int", 1, 2, "1 current, 2 power"),
            ),
            lambda inst, out: vars(inst.heater_setup(int(out))).copy(),
            _htrset_write,
        ),
        Setting(
            "heater_range",
            model,
            "RANGE",
            M336 + f": RANGE <output>,<range> (outputs 1, 2: 0 off, 1-{top}; outputs 3, 4: 0 off, 1 on);"
            " 350 manual p.154 (RANGE: outputs 1, 2 take 0-5 on a 350)",
            "an output's range (0 off)",
            "output",
            _outputs(1, 2, 3, 4),
            (Arg("range", "int", 0, 1, "0 off", hi_for={"1": top, "2": top}),),
            lambda inst, out: {"range": inst.heater_range(int(out))},
            lambda inst, out, v: inst.set_heater_range(int(out), v["range"]),
        ),
        Setting(
            "setpoint",
            model,
            "SETP",
            M336 + ": SETP <output>,<value> in the control input's units; bounded by control.max_setpoint_kelvin",
            "an output's setpoint",
            "output",
            _outputs(1, 2, 3, 4),
            (Arg("value", "float", 0, 1500, "kelvin, the control input's units"),),
            lambda inst, out: {"value": inst.setpoint(int(out))},
            lambda inst, out, v: inst.set_setpoint(int(out), v["value"]),
        ),
        Setting(
            "pid",
            model,
            "PID",
            M336 + ": PID <output>,<P 0.1-1000>,<I 0.1-1000>,<D 0-200 %>",
            "an output's control loop",
            "output",
            _outputs(1, 2, 3, 4),
            (  # PID? answers +nnnn.n (the emulator; UNVERIFIED): kept at 0.1
                Arg("p", "float", 0.1, 1000, "gain", resolution=0.1),
                Arg("i", "float", 0.1, 1000, "reset", resolution=0.1),
                Arg("d", "float", 0, 200, "percent", resolution=0.1),
            ),
            lambda inst, out: vars(inst.pid(int(out))).copy(),
            lambda inst, out, v: inst.set_pid(int(out), PID(v["p"], v["i"], v["d"])),
        ),
        Setting(
            "manual_output",
            model,
            "MOUT",
            M336 + ": MOUT <output>,<value> (percent)",
            "an output's manual (open loop) value",
            "output",
            _outputs(1, 2, 3, 4),
            (Arg("value", "float", 0, 100, "percent", resolution=0.01),),  # MOUT? +nnn.nn
            lambda inst, out: {"value": inst.manual_output(int(out))},
            lambda inst, out, v: inst.set_manual_output(int(out), v["value"]),
        ),
    )
