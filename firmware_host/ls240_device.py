"""Emulated Model 240 (2P or 8P): state, readings from the fridge model, and its command table."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from . import standard_curves as std
from .curve_memory import POINTS, CurveMemory
from .physics import Fridge, Noise
from .protocol import Dispatcher, ExecutionError, fmt_240, nargs, to_float, to_int
from .sim_clock import SimClock

STAGE_OF_INPUT = ["50k", "4k"]
NAMES = {1: "50K Plate", 2: "4K Plate"}


@dataclass
class Input240:
    sensor: int = 1  # diode
    autorange: int = 0
    range: int = 0
    reversal: int = 0
    units: int = 1
    enabled: int = 1
    name: str = ""
    filter: int = 100


class LS240Device:
    def __init__(self, clock: SimClock, fridge: Fridge, channels: int = 2, serial: str = "LSA24AZ",
                 seed: int | None = None) -> None:
        if channels not in (2, 8):
            raise ValueError("a Model 240 has 2 or 8 inputs")
        self.clock, self.fridge, self.n, self.serial = clock, fridge, channels, serial
        self.firmware = "1.6"
        self.noise = Noise(seed, relative=2e-5)
        self.lock = threading.RLock()
        self.update_period = 0.1 if channels == 2 else 0.4
        self.power_on(factory=True)

    def power_on(self, factory: bool = False) -> None:
        """Power cycle; ``factory`` also restores inputs and curves (``DFLT 99``)."""
        with self.lock:
            self._cache: dict[int, tuple[int, tuple[float, float, int]]] = {}
            if factory or not hasattr(self, "inputs"):
                self.inputs = {i: Input240(name=NAMES.get(i, f"Input {i}")) for i in range(1, self.n + 1)}
                self.curves = CurveMemory(range(1, self.n + 1), range(1, self.n + 1))
                for i in self.inputs:
                    self.curves.load(i, std.dt670())
                self.modname = f"Kelvinpi emulated 240-{self.n}P"
                self.brightness = 4
                self.addr = 126
                self.profinum = 1
                self.profislots = {s: (s, 1) for s in range(1, 9)}

    def error(self, exc: Exception) -> None:
        """The 240 has no error register: a bad line is simply not answered."""

    def reading(self, ch: int) -> tuple[float, float, int]:
        """(kelvin, volts, status) updated at the module's rate."""
        with self.lock:
            t = self.clock.now()
            tick = int(t / self.update_period)
            cached = self._cache.get(ch)
            if cached and cached[0] == tick:
                return cached[1]
            value = self._measure(ch, tick * self.update_period)
            self._cache[ch] = (tick, value)
            return value

    def _measure(self, ch: int, t: float) -> tuple[float, float, int]:
        inp = self.inputs[ch]
        if not inp.enabled:
            return 0.0, 0.0, 1
        temp = self.fridge.temperature(STAGE_OF_INPUT[(ch - 1) % 2], t)
        if ch > 2:
            temp *= 1 + 0.03 * (ch - 2)  # 8P: other thermometers on the same stages, slightly warmer
        physical = std.dt670()
        lo, hi = physical.t_range
        volts = self.noise.apply(physical.sensor(min(max(temp, lo), hi)) or 0.0)
        status = 0
        if volts >= 7.5:
            status |= 128
        if volts <= -7.5:
            status |= 64
        curve = self.curves.curve(ch)
        kelvin = 0.0
        if curve is not None:
            k = curve.temperature(volts)
            if k is None:
                slo, shi = curve.sensor_range
                kelvin = curve.temperature(min(max(volts, slo), shi)) or 0.0
                status |= 16 if volts > shi else 32  # diode: higher voltage = colder
            else:
                kelvin = k
        return kelvin, volts, status

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(_table(self), self.error)


def _table(d: LS240Device) -> dict:
    def ch(args: list[str], i: int = 0) -> int:
        if len(args) <= i:
            raise ExecutionError("missing input")
        return to_int(args[i], 1, d.n)

    def rd(kind: str):
        def handler(args):
            nargs(args, 1)
            k, v, _ = d.reading(ch(args))
            value = {"K": k, "C": k - 273.15 if k else 0.0, "F": (k - 273.15) * 9 / 5 + 32 if k else 0.0,
                     "S": v}[kind]
            return fmt_240(value)
        return handler

    def rdgst(args):
        nargs(args, 1)
        return f"{d.reading(ch(args))[2]:03d}"

    def intype_q(args):
        nargs(args, 1)
        i = d.inputs[ch(args)]
        return f"{i.sensor},{i.autorange},{i.range},{i.reversal},{i.units},{i.enabled}"

    def intype_set(args):
        nargs(args, 7)
        i = d.inputs[ch(args)]
        sensor = to_int(args[1], 1, 3)
        vals = (sensor, to_int(args[2], 0, 1), to_int(args[3], 0, 8 if sensor == 3 else 0),
                to_int(args[4], 0, 1), to_int(args[5], 1, 4), to_int(args[6], 0, 1))
        with d.lock:
            i.sensor, i.autorange, i.range, i.reversal, i.units, i.enabled = vals
            d._cache.clear()

    def inname_q(args):
        nargs(args, 1)
        return d.inputs[ch(args)].name

    def inname_set(args):
        nargs(args, 2)
        if len(args[1]) > 15:
            raise ExecutionError("name too long")
        d.inputs[ch(args)].name = args[1]

    def modname_set(args):
        nargs(args, 1)
        if len(args[0]) > 32:
            raise ExecutionError("name too long")
        d.modname = args[0]

    def filter_q(args):
        nargs(args, 1)
        return f"{d.inputs[ch(args)].filter:03d}"

    def filter_set(args):
        nargs(args, 2)
        i = d.inputs[ch(args)]
        v = to_int(args[1], 1, 100)
        if d.n != 2 or i.reversal:
            raise ExecutionError("FILTER only on a 2P with current reversal off")
        i.filter = v

    def crvhdr_q(args):
        nargs(args, 1)
        slot = d.curves.slot(ch(args))
        if slot.empty:
            return ",,0,+000.000,0"
        return f"{slot.name},{slot.serial},{slot.data_format},{slot.limit:+08.3f},{slot.coefficient}"

    def crvhdr_set(args):
        nargs(args, 6)
        n = ch(args)
        if len(args[1]) > 15 or len(args[2]) > 10:
            raise ExecutionError("name or serial too long")
        fmt = to_int(args[3], 2, 4)
        with d.lock:
            d.curves.set_header(n, args[1], args[2], fmt, to_float(args[4]), to_int(args[5], 1, 2))
            d._cache.clear()

    def crvpt_q(args):
        nargs(args, 2)
        slot = d.curves.slot(ch(args))
        u, t = slot.cells[to_int(args[1], 1, POINTS) - 1]
        return f"{fmt_240(u)},{fmt_240(t)}"

    def crvpt_set(args):
        nargs(args, 4, 5)  # the manual's own example carries a stray fifth field
        n = ch(args)
        i = to_int(args[1], 1, POINTS)
        with d.lock:
            d.curves.set_point(n, i, to_float(args[2]), to_float(args[3]))
            d._cache.clear()

    def crvdel(args):
        nargs(args, 1)
        with d.lock:
            d.curves.delete(ch(args))
            d._cache.clear()

    def brigt_set(args):
        nargs(args, 1)
        d.brightness = to_int(args[0], 0, 4)

    def addr_set(args):
        nargs(args, 1)
        d.addr = to_int(args[0], 1, 126)

    def profinum_set(args):
        nargs(args, 1)
        d.profinum = to_int(args[0], 1, 8)

    def profislot_q(args):
        nargs(args, 1)
        inp, units = d.profislots[to_int(args[0], 1, 8)]
        return f"{inp},{units}"

    def profislot_set(args):
        nargs(args, 3)
        d.profislots[to_int(args[0], 1, 8)] = (to_int(args[1], 1, 8), to_int(args[2], 1, 4))

    def dflt(args):
        nargs(args, 1)
        if args[0].strip() != "99":
            raise ExecutionError("DFLT needs 99")
        d.power_on(factory=True)

    return {
        "*IDN?": lambda a: f"LSCI,MODEL240-{d.n}P,{d.serial},{d.firmware}",
        "KRDG?": rd("K"), "CRDG?": rd("C"), "FRDG?": rd("F"), "SRDG?": rd("S"), "RDGST?": rdgst,
        "INTYPE?": intype_q, "INTYPE": intype_set, "INNAME?": inname_q, "INNAME": inname_set,
        "MODNAME?": lambda a: d.modname, "MODNAME": modname_set, "FILTER?": filter_q, "FILTER": filter_set,
        "CRVHDR?": crvhdr_q, "CRVHDR": crvhdr_set, "CRVPT?": crvpt_q, "CRVPT": crvpt_set, "CRVDEL": crvdel,
        "BRIGT?": lambda a: f"{d.brightness:03d}", "BRIGT": brigt_set,
        "ADDR?": lambda a: f"{d.addr:03d}", "ADDR": addr_set,
        "PROFINUM?": lambda a: str(d.profinum), "PROFINUM": profinum_set,
        "PROFISLOT?": profislot_q, "PROFISLOT": profislot_set, "PROFISTAT?": lambda a: "0,",
        "DFLT": dflt,
    }
