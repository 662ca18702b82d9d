"""An emulated instrument: device + physics + wire interfaces + fault control, startable in-process.

Fault control (the same words on the control socket and from Python; ``CONTROLS`` maps each word
to its action)::

    mute on|off        stop answering (input is read and ignored)
    slow SECONDS [MNEMONIC]  delay every reply (or only replies to lines naming MNEMONIC) by SECONDS (0 clears)
    garbage N [MNEMONIC]  replace the next N replies (or only replies to lines naming MNEMONIC) with garbage
    partial N          send only the first half of the next N replies, no terminator
    drop               close every TCP connection now
    unplug SECONDS     the serial pty vanishes for SECONDS, then comes back (new pty, same link)
    reset              power cycle: settings to defaults, ESR power-on bit, connections dropped
    advance SECONDS    fast-forward simulated time (the fridge keeps cooling)
    warm               put every stage at room temperature (start a cooldown)
    warmup TAU         warm every stage towards room temperature with time constant TAU simulated
                       seconds (a cooldown run backwards; ``warmup 0`` lets the fridge cool again)
    settle             end any warm-up and put every stage at its base temperature now (a cooldown
                       back to base takes hours of simulated time; an emulator control, not firmware)
    heater WATTS       force the mixing-chamber heater power (0 returns control to the 372)
    clear              clear mute/slow/garbage/partial
    status             one JSON line: faults, simulated time, stage temperatures
    ledger             one JSON line: readings delivered per channel/quantity, late, faulted
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from .control_socket import ControlSocket, dispatch
from .ledger import Ledger
from .ls240_device import LS240Device
from .ls336_device import LS336Device
from .ls370_device import LS370Device
from .ls370_ledger import ReadingLedger
from .ls372_device import LS372Device
from .physics import BASE, STAGES, Fridge
from .sim_clock import SimClock
from .wire import Faults, PtyInterface, TcpInterface

log = logging.getLogger("firmware_host")


class Emulator:
    def __init__(self, device: Any, clock: SimClock, fridge: Fridge) -> None:  # any model's device
        self.device, self.clock, self.fridge = device, clock, fridge
        self.faults = Faults()
        self.ledger = Ledger()
        self.tcp: TcpInterface | None = None
        self.pty: PtyInterface | None = None
        self._control: ControlSocket | None = None
        self._stop = threading.Event()

    # -- construction -----------------------------------------------------------
    @classmethod
    def ls372(
        cls, serial: str = "LSA23JD", time_scale: float = 1.0, seed: int | None = None, warm: bool = False
    ) -> Emulator:
        clock = SimClock(time_scale)
        fridge = Fridge.warm() if warm else Fridge()
        return cls(LS372Device(clock, fridge, serial=serial, seed=seed), clock, fridge)

    @classmethod
    def ls370(
        cls, serial: str = "370A1B", time_scale: float = 1.0, seed: int | None = None, warm: bool = False
    ) -> Emulator:
        clock = SimClock(time_scale)
        fridge = Fridge.warm() if warm else Fridge()
        emu = cls(LS370Device(clock, fridge, serial=serial, seed=seed), clock, fridge)
        emu.ledger = ReadingLedger()  # a 370 reading is three replies (ls370_ledger)
        return emu

    @classmethod
    def ls240(
        cls,
        channels: int = 2,
        serial: str = "LSA24AZ",
        time_scale: float = 1.0,
        seed: int | None = None,
        warm: bool = False,
    ) -> Emulator:
        clock = SimClock(time_scale)
        fridge = Fridge.warm() if warm else Fridge()
        return cls(LS240Device(clock, fridge, channels=channels, serial=serial, seed=seed), clock, fridge)

    @classmethod
    def ls336(
        cls, serial: str = "LSA336A", time_scale: float = 1.0, seed: int | None = None, warm: bool = False, **kw: Any
    ) -> Emulator:
        """A Model 336 (``model="350"``: a 350; ``scanner=True``: with the 3062's inputs D2-D5)."""
        clock = SimClock(time_scale)
        fridge = Fridge.warm() if warm else Fridge()
        return cls(LS336Device(clock, fridge, serial=serial, seed=seed, **kw), clock, fridge)

    def listen_tcp(self, host: str = "127.0.0.1", port: int = 7777) -> tuple[str, int]:
        self.tcp = TcpInterface(host, port, self.device.dispatcher, self.device.lock, self.faults, ledger=self.ledger)
        self.tcp.start()
        return self.tcp.address

    def listen_pty(self, link: str) -> str:
        framing = "7O1" if isinstance(self.device, (LS372Device, LS336Device)) else "8N1"
        self.pty = PtyInterface(
            link, self.device.dispatcher, self.device.lock, self.faults, framing, ledger=self.ledger
        )
        self.pty.start()
        return self.pty.link

    def listen_control(self, path: str) -> str:
        self._control = ControlSocket(path, self.control)
        return path

    # -- faults -------------------------------------------------------------------
    def control(self, line: str) -> str:
        """Run one fault-control command; returns ``ok`` / ``error: ...`` / a JSON status line."""
        return dispatch(CONTROLS, self, line, logger=log)

    def _mute(self, args: list[str]) -> None:
        self.faults.mute = (args or ["on"])[0] == "on"

    def _slow(self, args: list[str]) -> None:
        with self.faults.lock:
            self.faults.delay = float(args[0])
            self.faults.delay_only = args[1].upper() if len(args) > 1 else None

    def _garbage(self, args: list[str]) -> None:
        with self.faults.lock:
            self.faults.garbage = int(args[0]) if args else 1
            self.faults.garbage_only = args[1].upper() if len(args) > 1 else None

    def _partial(self, args: list[str]) -> None:
        self.faults.partial = int(args[0]) if args else 1

    def _drop(self, args: list[str]) -> None:
        if self.tcp:
            self.tcp.drop_all()

    def _unplug(self, args: list[str]) -> str | None:
        if not self.pty:
            return "error: no serial pty to unplug"
        self.pty.unplug(float(args[0]) if args else 2.0)
        return None

    def _reset(self, args: list[str]) -> None:
        self.device.power_on()
        if self.tcp:
            self.tcp.drop_all()

    def _advance(self, args: list[str]) -> None:
        self.clock.advance(float(args[0]))

    def _warm(self, args: list[str]) -> None:
        with self.fridge.lock:
            for s in STAGES:
                self.fridge.temps[s] = 295.0

    def _warmup(self, args: list[str]) -> None:
        self.fridge.advance_to(self.clock.now())  # the time so far at the old physics
        with self.fridge.lock:
            self.fridge.warmup_tau = max(0.0, float(args[0]))

    def _settle(self, args: list[str]) -> None:
        self.fridge.advance_to(self.clock.now())  # the time so far at the old physics
        with self.fridge.lock:
            self.fridge.warmup_tau = 0.0
            self.fridge.temps.update(BASE)

    def _heater(self, args: list[str]) -> None:
        watts = float(args[0])
        if hasattr(self.device, "force_heater"):
            self.device.force_heater(watts or None)
        else:
            self.fridge.sample_heater_w = watts

    def _clear(self, args: list[str]) -> None:
        self.faults.clear()

    def _status(self, args: list[str]) -> str:
        now = self.clock.now()
        self.fridge.advance_to(now)
        return json.dumps(
            {
                "sim_time": now,
                "mute": self.faults.mute,
                "delay": self.faults.delay,
                "garbage": self.faults.garbage,
                "partial": self.faults.partial,
                "temperatures": dict(self.fridge.temps),
                "tcp_clients": len(self.tcp.clients) if self.tcp else 0,
                "pty": self.pty.link if self.pty else None,
            }
        )

    def _ledger(self, args: list[str]) -> str:
        return json.dumps(
            {"delivered": self.ledger.counts(), "late": self.ledger.late_total(), "faulted": self.ledger.faulted}
        )

    def stop(self) -> None:
        self._stop.set()
        if self.tcp:
            self.tcp.stop()
        if self.pty:
            self.pty.stop()
        if self._control:
            self._control.close()


# The fault-control words (the module docstring says what each does). An action returns None for
# "ok" (the change is logged) or the reply itself; IndexError/ValueError from its arguments is the
# "error: <word>: ..." reply.
CONTROLS: dict[str, Callable[[Emulator, list[str]], str | None]] = {
    "mute": Emulator._mute,
    "slow": Emulator._slow,
    "garbage": Emulator._garbage,
    "partial": Emulator._partial,
    "drop": Emulator._drop,
    "unplug": Emulator._unplug,
    "reset": Emulator._reset,
    "advance": Emulator._advance,
    "warm": Emulator._warm,
    "warmup": Emulator._warmup,
    "settle": Emulator._settle,
    "heater": Emulator._heater,
    "clear": Emulator._clear,
    "status": Emulator._status,
    "ledger": Emulator._ledger,
}


def send_control(path: str, line: str, timeout: float = 5.0) -> str:
    """Client side of the control socket (used by tests and ``kelvinpi emulate ctl``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(line.strip().encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()
