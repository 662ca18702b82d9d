"""Emulated Pfeiffer gauge controllers: the TPG 366 and the MaxiGauge TPG 256 A.

The device holds the six gauges (identifier, on or off, measuring range) over the vacuum model
(``pfeiffer_physics``); ``PfeifferProtocol`` is one connection's view of it: the mnemonic the
host last sent (acknowledged or refused) and the error word a refusal left. The bytes (ACK, NAK,
ENQ, line ends) are ``pfeiffer_wire``'s. Evidence for every answer: FIDELITY.md, "Pfeiffer".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .pfeiffer_physics import CHANNELS, Vacuum
from .sim_clock import SimClock

# Measuring range of each gauge type in mbar (Pfeiffer data sheets; the emulator's ranges, UNVERIFIED per unit).
RANGES = {
    "PKR": (5e-9, 1000.0),
    "TPR": (5e-4, 1000.0),
    "CMR": (1e-1, 1100.0),
    "IKR": (1e-11, 1e-2),
}
NO_SENSOR = "noSen"
NO_SENSOR_VALUE = 2.0e-2  # TPG 261 manual p.71: "5 -> No sensor (output: 5,2.0000E-2 [mbar])"
OFF_VALUE = 0.0  # what a switched-off gauge reports beside status 4: UNVERIFIED
DEFAULT_GAUGES = ("PKR", "PKR", "CMR", "TPR", "CMR", "TPR")  # a plausible Bluefors set: UNVERIFIED

# The error status a refusal leaves, read with ERR. TPG 366: a four-flag word (the TPG 26x/300/36x
# family's: 0001 syntax error, 0010 inadmissible parameter). TPG 256 A: "system,gauge" error
# bit sums (256 A manual p.97: 4096 syntax error, 8192 inadmissible parameter), which it also
# sends at the ENQ after a NAK (as PyMaxiGauge, written against a 256 A, reads it).
ERRORS = {
    "tpg366": {"syntax": "0001", "parameter": "0010", "none": "0000"},
    "maxigauge": {"syntax": "4096,0", "parameter": "8192,0", "none": "0,0"},
}


# UNI codes each model takes: 0 mbar, 1 Torr, 2 Pa (256 A manual 8.2.4); the TPG 366 also 3 micron,
# 4 hPa (TPG 36x protocol BG 5511). 5 (V, the measurement voltage) is refused here: what the controller
# sends in V is UNVERIFIED.
UNIT_CODES = {"tpg366": ("0", "1", "2", "3", "4"), "maxigauge": ("0", "1", "2")}
FROM_MBAR = (1.0, 0.750062, 100.0, 750.062, 1.0)  # one mbar in each UNI unit


def fmt_pressure(value: float) -> str:
    """``+1.2345E-03``: sign, 4 decimals, 2-digit signed exponent (socs' TPG 366 fixture; TPG 261 p.71)."""
    return f"{value:+.4E}"


@dataclass
class Reading:
    """One gauge's answer: what the wire carries, and whether it was a measurement."""

    channel: int
    code: int
    value: float


class PfeifferDevice:
    """Six gauges behind one controller; ``model`` is ``"tpg366"`` or ``"maxigauge"``."""

    def __init__(
        self,
        model: str,
        clock: SimClock,
        seed: int | None = None,
        gauges: tuple[str, ...] = DEFAULT_GAUGES,
        serial: str = "44990000",
    ) -> None:
        if model not in ("tpg366", "maxigauge"):
            raise ValueError(f"unknown Pfeiffer model {model!r}: tpg366 or maxigauge")
        if len(gauges) != CHANNELS or any(g not in RANGES and g != NO_SENSOR for g in gauges):
            raise ValueError(f"gauges must be {CHANNELS} of {sorted(RANGES)} or {NO_SENSOR!r}, not {gauges!r}")
        self.model, self.clock, self.serial = model, clock, serial
        self.vacuum = Vacuum(seed)
        self.lock = threading.RLock()
        self.gauges = list(gauges)
        self.power_on()

    def power_on(self) -> None:
        """Power cycle: every present gauge on, units mbar, leaks kept (they are the fridge's); the
        interface sends a reading every second, unasked, until it receives a character (TPG 261
        manual p.65; socs says the same of the TPG 366, drivers.py:37-38)."""
        with self.lock:
            self.on = [g != NO_SENSOR for g in self.gauges]
            self.units = 0
            self.announcing = True

    def heard(self) -> None:
        """A character arrived on the interface: the unasked readings after power-up stop."""
        with self.lock:
            self.announcing = False

    def announcement(self) -> str | None:
        """The unasked line sent every second after power-up (the six gauges, as ``PRX`` answers
        them: the six-gauge form of the continuous output is UNVERIFIED), or None once a character came."""
        with self.lock:
            if not self.announcing:
                return None
            p = PfeifferProtocol(self)
            return p._prx([])[0]

    def set_sensor(self, channel: int, on: bool) -> None:
        """Switch a gauge on or off (the front panel's key, or ``SEN``)."""
        if not 1 <= channel <= CHANNELS:
            raise ValueError(f"gauge {channel} is not 1-{CHANNELS}")
        with self.lock:
            if self.gauges[channel - 1] == NO_SENSOR:
                raise ValueError(f"gauge {channel}: no sensor connected")
            self.on[channel - 1] = on

    def reading(self, channel: int) -> Reading:
        """Status code and wire value of one gauge now."""
        with self.lock:
            kind, on = self.gauges[channel - 1], self.on[channel - 1]
        if kind == NO_SENSOR:
            return Reading(channel, 5, NO_SENSOR_VALUE)
        if not on:
            return Reading(channel, 4, OFF_VALUE)
        p = self.vacuum.pressure(channel, self.clock.now())
        lo, hi = RANGES[kind]
        if p < lo:
            return Reading(channel, 1, lo)
        if p > hi:
            return Reading(channel, 2, hi)
        return Reading(channel, 0, p)

    def protocol(self) -> PfeifferProtocol:
        """This device as one connection sees it."""
        return PfeifferProtocol(self)


Answer = tuple[str, list[Reading]]  # the answer line, and the gauge readings it carries (for the ledger)


class PfeifferProtocol:
    """One connection's mnemonic state: a mnemonic is acknowledged or refused; ENQ answers it."""

    def __init__(self, device: PfeifferDevice) -> None:
        self.device = device
        self.pending: tuple[str, list[str]] | None = None
        self.words = ERRORS[device.model]
        self.error = self.words["none"]
        self.commands: dict[str, Callable[[list[str]], Answer]] = {f"PR{n}": self._pr(n) for n in range(1, 7)}
        self.commands.update({"TID": self._tid, "SEN": self._sen, "UNI": self._uni, "ERR": self._err})
        if device.model == "tpg366":
            self.commands.update({"PRX": self._prx, "AYT": self._ayt})
        else:
            self.commands.update({"PNR": self._pnr})

    def reset(self) -> None:
        """ETX: the interface forgets the mnemonic in progress."""
        self.pending = None

    def mnemonic(self, line: str) -> bool:
        """Take one mnemonic line; True: ACK, False: NAK (and the error word says why)."""
        name, _, rest = line.strip().partition(",")
        name = name.strip().upper()
        args = [a.strip() for a in rest.split(",")] if rest else []
        if name not in self.commands:
            return self._refuse("syntax")
        try:
            self._check(name, args)
        except ValueError:
            return self._refuse("parameter")
        self.pending = (name, args)
        return True

    def _refuse(self, why: str) -> bool:
        """A NAK: the error status is set; on the 256 A the next ENQ answers it."""
        self.error = self.words[why]
        self.pending = ("ERR", []) if self.device.model == "maxigauge" else None
        return False

    def enquiry(self) -> Answer | None:
        """ENQ: the answer to the acknowledged mnemonic, measured now (again at each ENQ)."""
        if self.pending is None:
            # "If <ENQ> is received without a valid request, the ERROR word is transmitted" (TPG 261
            # manual p.67): the error status as ERR answers it. Whether it is cleared then: UNVERIFIED (kept).
            return self.error, []
        name, args = self.pending
        with self.device.lock:
            return self.commands[name](args)

    # -- parameters: checked at the mnemonic, so a bad one is a NAK -----------------------
    def _check(self, name: str, args: list[str]) -> None:
        if name.startswith("PR") or name in ("TID", "ERR", "AYT", "PNR"):
            if args:
                raise ValueError("takes no parameters")
        elif name == "SEN":
            if args:
                if len(args) != CHANNELS or any(a not in ("0", "1", "2") for a in args):
                    raise ValueError("SEN takes six of 0 (no change), 1 (off), 2 (on)")
                for ch, a in enumerate(args, start=1):
                    if a != "0":
                        self.device.set_sensor(ch, a == "2")
        elif name == "UNI" and args:
            allowed = UNIT_CODES[self.device.model]
            if len(args) != 1 or args[0] not in allowed:
                raise ValueError(f"UNI takes one of {allowed}")
            self.device.units = int(args[0])

    # -- answers ---------------------------------------------------------------------------
    def _pr(self, n: int) -> Callable[[list[str]], Answer]:
        def answer(args: list[str]) -> Answer:
            r = self._on_wire(self.device.reading(n))
            return f"{r.code},{fmt_pressure(r.value)}", [r]

        return answer

    def _on_wire(self, r: Reading) -> Reading:
        """The reading in the current unit, rounded as the wire carries it (what the ledger keeps)."""
        return Reading(r.channel, r.code, float(fmt_pressure(r.value * FROM_MBAR[self.device.units])))

    def _prx(self, args: list[str]) -> Answer:
        rs = [self._on_wire(self.device.reading(n)) for n in range(1, CHANNELS + 1)]
        return ",".join(f"{r.code},{fmt_pressure(r.value)}" for r in rs), rs

    def _tid(self, args: list[str]) -> Answer:
        return ",".join(self.device.gauges), []

    def _sen(self, args: list[str]) -> Answer:
        d = self.device
        states = ["0" if g == "noSen" else ("2" if on else "1") for g, on in zip(d.gauges, d.on, strict=True)]
        return ",".join(states), []

    def _uni(self, args: list[str]) -> Answer:
        return str(self.device.units), []

    def _err(self, args: list[str]) -> Answer:
        word, self.error = self.error, self.words["none"]
        return word, []

    def _ayt(self, args: list[str]) -> Answer:
        return f"TPG366,PTG28290,{self.device.serial},010100,010100", []

    def _pnr(self, args: list[str]) -> Answer:
        return "BG5930-E", []
