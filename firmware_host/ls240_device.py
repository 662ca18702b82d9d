"""Emulated Model 240 (2P or 8P): state and readings from the fridge model; its commands are ``ls240_commands.py``."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from . import ls240_commands
from . import standard_curves as std
from .curve_memory import CurveMemory
from .physics import Fridge, Noise
from .protocol import Dispatcher
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
    def __init__(
        self, clock: SimClock, fridge: Fridge, channels: int = 2, serial: str = "LSA24AZ", seed: int | None = None
    ) -> None:
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

    def forget_readings(self) -> None:
        """Drop the readings of this update period: a new setting or curve shows in the next query."""
        with self.lock:
            self._cache.clear()

    def dispatcher(self) -> Dispatcher:
        """This device behind its command table (``ls240_commands``), as one connection sees it."""
        return ls240_commands.dispatcher(self)
