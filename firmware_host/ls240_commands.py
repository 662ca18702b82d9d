"""The emulated Model 240's command table: each mnemonic, its declared arguments and its reply format.

The protocol side of the 240, as ``ls372_commands.py`` is the 372's: it reads arguments, refuses
what the firmware refuses (the 240 has no error register: a refused line is not answered), formats
replies in the 240's plain decimals, and leaves state and readings to ``LS240Device``. The input
argument's range depends on the module (1-2 or 1-8), so the table is built per device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .curve_memory import POINTS
from .protocol import ANY, Choice, Command, Dispatcher, ExecutionError, Float, Int, Text, bind_table, fmt_240

if TYPE_CHECKING:
    from .ls240_device import LS240Device

FLOAT = Float()
FLAG = Int(0, 1)
SLOT = Int(1, 8)  # PROFIBUS slots


def reading(unit: str) -> Callable[[LS240Device, int], str]:
    """``KRDG?``-style query: kelvin, celsius, fahrenheit or sensor units (volts)."""

    def query(d: LS240Device, ch: int) -> str:
        k, v, _ = d.reading(ch)
        value = {"K": k, "C": k - 273.15 if k else 0.0, "F": (k - 273.15) * 9 / 5 + 32 if k else 0.0, "S": v}[unit]
        return fmt_240(value)

    return query


def rdgst_q(d: LS240Device, ch: int) -> str:
    return f"{d.reading(ch)[2]:03d}"


def intype_q(d: LS240Device, ch: int) -> str:
    i = d.inputs[ch]
    return f"{i.sensor},{i.autorange},{i.range},{i.reversal},{i.units},{i.enabled}"


def intype_set(
    d: LS240Device, ch: int, sensor: int, autorange: int, rng: int, reversal: int, units: int, enabled: int
) -> None:
    if rng > (8 if sensor == 3 else 0):  # only an NTC RTD (3) has ranges to choose from
        raise ExecutionError(f"range {rng} for sensor type {sensor}")
    i = d.inputs[ch]
    with d.lock:
        i.sensor, i.autorange, i.range, i.reversal, i.units, i.enabled = (
            sensor,
            autorange,
            rng,
            reversal,
            units,
            enabled,
        )
        d.forget_readings()


def inname_set(d: LS240Device, ch: int, name: str) -> None:
    d.inputs[ch].name = name


def modname_set(d: LS240Device, name: str) -> None:
    d.modname = name


def filter_set(d: LS240Device, ch: int, points: int) -> None:
    i = d.inputs[ch]
    if d.n != 2 or i.reversal:
        raise ExecutionError("FILTER only on a 2P with current reversal off")
    i.filter = points


def crvhdr_q(d: LS240Device, ch: int) -> str:
    return d.curves.slot(ch).header_reply()


def crvhdr_set(
    d: LS240Device, ch: int, name: str, serial: str, data_format: int, limit: float, coefficient: int
) -> None:
    with d.lock:
        d.curves.set_header(ch, name, serial, data_format, limit, coefficient)
        d.forget_readings()


def crvpt_q(d: LS240Device, ch: int, i: int) -> str:
    u, t = d.curves.slot(ch).cells[i - 1]
    return f"{fmt_240(u)},{fmt_240(t)}"


def crvpt_set(d: LS240Device, ch: int, i: int, units: float, kelvin: float) -> None:
    with d.lock:
        d.curves.set_point(ch, i, units, kelvin)
        d.forget_readings()


def crvdel(d: LS240Device, ch: int) -> None:
    with d.lock:
        d.curves.delete(ch)
        d.forget_readings()


def brigt_set(d: LS240Device, level: int) -> None:
    d.brightness = level


def addr_set(d: LS240Device, addr: int) -> None:
    d.addr = addr


def profinum_set(d: LS240Device, n: int) -> None:
    d.profinum = n


def profislot_q(d: LS240Device, slot: int) -> str:
    inp, units = d.profislots[slot]
    return f"{inp},{units}"


def profislot_set(d: LS240Device, slot: int, inp: int, units: int) -> None:
    d.profislots[slot] = (inp, units)


def dflt(d: LS240Device, code: str) -> None:
    d.power_on(factory=True)


def commands(inputs: int) -> tuple[Command, ...]:
    """The table of a module with ``inputs`` inputs (2 or 8)."""
    inp = Int(1, inputs)
    return (
        Command("*IDN?", lambda d: f"LSCI,MODEL240-{d.n}P,{d.serial},{d.firmware}", counts=ANY),
        Command("KRDG?", reading("K"), (inp,)),
        Command("CRDG?", reading("C"), (inp,)),
        Command("FRDG?", reading("F"), (inp,)),
        Command("SRDG?", reading("S"), (inp,)),
        Command("RDGST?", rdgst_q, (inp,)),
        Command("INTYPE?", intype_q, (inp,)),
        # sensor (1 diode, 2 PTC RTD, 3 NTC RTD), autorange, range, current reversal, units, enabled
        Command("INTYPE", intype_set, (inp, Int(1, 3), FLAG, Int(0, 8), FLAG, Int(1, 4), FLAG)),
        Command("INNAME?", lambda d, ch: d.inputs[ch].name, (inp,)),
        Command("INNAME", inname_set, (inp, Text(15))),
        Command("MODNAME?", lambda d: d.modname, counts=ANY),
        Command("MODNAME", modname_set, (Text(32),)),
        Command("FILTER?", lambda d, ch: f"{d.inputs[ch].filter:03d}", (inp,)),
        Command("FILTER", filter_set, (inp, Int(1, 100))),
        Command("CRVHDR?", crvhdr_q, (inp,)),
        Command("CRVHDR", crvhdr_set, (inp, Text(15), Text(10), Int(2, 4), FLOAT, Int(1, 2))),
        Command("CRVPT?", crvpt_q, (inp, Int(1, POINTS))),
        # the manual's own example carries a stray fifth field: accepted, ignored
        Command("CRVPT", crvpt_set, (inp, Int(1, POINTS), FLOAT, FLOAT), counts=(4, 5)),
        Command("CRVDEL", crvdel, (inp,)),
        Command("BRIGT?", lambda d: f"{d.brightness:03d}", counts=ANY),
        Command("BRIGT", brigt_set, (Int(0, 4),)),
        Command("ADDR?", lambda d: f"{d.addr:03d}", counts=ANY),
        Command("ADDR", addr_set, (Int(1, 126),)),
        Command("PROFINUM?", lambda d: str(d.profinum), counts=ANY),
        Command("PROFINUM", profinum_set, (SLOT,)),
        Command("PROFISLOT?", profislot_q, (SLOT,)),
        Command("PROFISLOT", profislot_set, (SLOT, Int(1, 8), Int(1, 4))),  # slot, input, units
        Command("PROFISTAT?", lambda d: "0,", counts=ANY),
        Command("DFLT", dflt, (Choice(("99",)),)),  # 99 guards against a factory reset by accident
    )


def dispatcher(device: LS240Device) -> Dispatcher:
    """A dispatcher for one connection: the command table of ``device``'s size bound to it."""
    return Dispatcher(bind_table(commands(device.n), device), device.error)
