"""An emulated Pfeiffer gauge controller, startable in-process or as ``kelvinpi emulate tpg366|maxigauge``.

The thermometry emulators' fault words (``emulator.py``: mute, slow, garbage, partial, drop,
unplug, advance, clear) work here too, ``garble N`` being ``garbage N``; the gauges add::

    sensor off|on N    switch gauge N off (status 4, "sensor off") or back on
    soft TAU [N]       the vacuum on gauge N (default 1, the OVC) goes soft: its pressure grows by
                       e every TAU simulated seconds, up to atmosphere; ``soft 0 [N]`` ends it
    reset              power cycle: every gauge on, units mbar, connections dropped
    status             one JSON line: faults, simulated time, each gauge's status and pressure
    ledger             one JSON line: readings delivered per gauge, late, faulted
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from .emulator import Emulator
from .pfeiffer_device import PfeifferDevice
from .pfeiffer_ledger import PfeifferLedger
from .pfeiffer_physics import CHANNELS
from .pfeiffer_wire import PfeifferPty, PfeifferTcp
from .physics import Fridge
from .sim_clock import SimClock

NOT_FOR_GAUGES = {"warm", "warmup", "settle", "heater"}  # the thermometry emulators' fridge words


class PfeifferEmulator(Emulator):
    device: PfeifferDevice

    def __init__(self, device: PfeifferDevice, clock: SimClock) -> None:
        super().__init__(device, clock, Fridge())
        self.ledger = PfeifferLedger()  # type: ignore[assignment]

    @classmethod
    def tpg366(cls, time_scale: float = 1.0, seed: int | None = None) -> PfeifferEmulator:  # type: ignore[override]
        clock = SimClock(time_scale)
        return cls(PfeifferDevice("tpg366", clock, seed=seed), clock)

    @classmethod
    def maxigauge(cls, time_scale: float = 1.0, seed: int | None = None) -> PfeifferEmulator:
        clock = SimClock(time_scale)
        return cls(PfeifferDevice("maxigauge", clock, seed=seed), clock)

    def listen_tcp(self, host: str = "127.0.0.1", port: int = 8000) -> tuple[str, int]:
        self.tcp = PfeifferTcp(host, port, self.device.protocol, self.device.lock, self.faults, ledger=self.ledger)  # type: ignore[arg-type]
        self.tcp.start()
        return self.tcp.address

    def listen_pty(self, link: str) -> str:
        self.pty = PfeifferPty(link, self.device.protocol, self.device.lock, self.faults, "8N1", ledger=self.ledger)  # type: ignore[arg-type]
        self.pty.start()
        return self.pty.link

    def control(self, line: str) -> str:
        words = line.strip().split()
        cmd = words[0].lower() if words else ""
        if cmd in NOT_FOR_GAUGES:
            return f"error: {cmd!r} is a thermometry word; a gauge controller knows sensor, soft"
        action = GAUGE_CONTROLS.get(cmd)
        if action is None:
            return super().control(line)
        try:
            reply = action(self, words[1:])
        except (IndexError, ValueError) as exc:
            return f"error: {cmd}: {exc}"
        return "ok" if reply is None else reply

    def _sensor(self, args: list[str]) -> None:
        if len(args) != 2 or args[0] not in ("on", "off"):
            raise ValueError("usage: sensor off|on N")
        self.device.set_sensor(int(args[1]), args[0] == "on")

    def _soft(self, args: list[str]) -> None:
        gauge = int(args[1]) if len(args) > 1 else 1
        self.device.vacuum.go_soft(gauge, float(args[0]), self.clock.now())

    def _garble(self, args: list[str]) -> None:
        n = int(args[0]) if args else 1
        if n < 0:
            raise ValueError(f"garble {n}: the count of replies to garble is 0 or more")
        self.faults.garbage = n

    def _reset_gauges(self, args: list[str]) -> None:
        self.device.power_on()
        if self.tcp:
            self.tcp.drop_all()
        session = getattr(self.pty, "_session", None)
        if session is not None:  # a serial line stays: the power-up readings come down it
            session._heard.clear()
            session.announced = 0
            session.announce()

    def _gauge_status(self, args: list[str]) -> str:
        gauges = {}
        for n in range(1, CHANNELS + 1):
            r = self.device.reading(n)
            gauges[str(n)] = {"kind": self.device.gauges[n - 1], "code": r.code, "mbar": r.value}
        return json.dumps(
            {
                "sim_time": self.clock.now(),
                "mute": self.faults.mute,
                "delay": self.faults.delay,
                "garbage": self.faults.garbage,
                "partial": self.faults.partial,
                "gauges": gauges,
                "tcp_clients": len(self.tcp.clients) if self.tcp else 0,
                "pty": self.pty.link if self.pty else None,
            }
        )


GAUGE_CONTROLS = {
    "sensor": PfeifferEmulator._sensor,
    "soft": PfeifferEmulator._soft,
    "garble": PfeifferEmulator._garble,
    "reset": PfeifferEmulator._reset_gauges,
    "status": PfeifferEmulator._gauge_status,
}


def add_parsers(esub: argparse._SubParsersAction) -> None:
    """``kelvinpi emulate tpg366 --listen HOST:PORT`` and ``kelvinpi emulate maxigauge --serial-link PATH``."""
    a = esub.add_parser("tpg366", help="Pfeiffer TPG 366 gauge controller on TCP (port 8000)")
    a.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT for the TCP interface (default %(default)s)")
    b = esub.add_parser("maxigauge", help="Pfeiffer MaxiGauge TPG 256 A on a serial pty (9600 8N1)")
    b.add_argument("--serial-link", required=True, help="path of the symlink to the pty")
    for q in (a, b):
        q.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
        q.add_argument("--seed", type=int, default=None, help="noise seed for reproducible readings")
        q.add_argument("--control", help="unix socket path for fault injection (see `kelvinpi emulate ctl`)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.model == "tpg366":
        emu = PfeifferEmulator.tpg366(args.time_scale, args.seed)
        host, _, port = args.listen.rpartition(":")
        try:
            addr = emu.listen_tcp(host or "127.0.0.1", int(port))
        except (OSError, ValueError) as exc:
            print(f"kelvinpi emulate tpg366: cannot listen on {args.listen}: {exc}", file=sys.stderr)
            return 2
        where = [f"tcp {addr[0]}:{addr[1]}"]
        name = "TPG 366"
    else:
        emu = PfeifferEmulator.maxigauge(args.time_scale, args.seed)
        try:
            where = [f"serial {emu.listen_pty(args.serial_link)}"]
        except OSError as exc:
            print(f"kelvinpi emulate maxigauge: cannot make {args.serial_link}: {exc}", file=sys.stderr)
            return 2
        name = "MaxiGauge TPG 256 A"
    if args.control:
        where.append(f"control {emu.listen_control(args.control)}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"emulated {name} ready: {', '.join(where)}", flush=True)
    while not stop.wait(0.5):
        pass
    emu.stop()
    return 0
