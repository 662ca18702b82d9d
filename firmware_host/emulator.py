"""An emulated instrument: device + physics + wire interfaces + fault control, startable in-process.

Fault control (the same words on the control socket and from Python)::

    mute on|off        stop answering (input is read and ignored)
    slow SECONDS [MNEMONIC]  delay every reply (or only replies to lines naming MNEMONIC) by SECONDS (0 clears)
    garbage N          replace the next N replies with garbage bytes
    partial N          send only the first half of the next N replies, no terminator
    drop               close every TCP connection now
    unplug SECONDS     the serial pty vanishes for SECONDS, then comes back (new pty, same link)
    reset              power cycle: settings to defaults, ESR power-on bit, connections dropped
    advance SECONDS    fast-forward simulated time (the fridge keeps cooling)
    warm               put every stage at room temperature (start a cooldown)
    warmup TAU         warm every stage towards room temperature with time constant TAU simulated
                       seconds (a cooldown run backwards; ``warmup 0`` lets the fridge cool again)
    heater WATTS       force the mixing-chamber heater power (0 returns control to the 372)
    clear              clear mute/slow/garbage/partial
    status             one JSON line: faults, simulated time, stage temperatures
    ledger             one JSON line: readings delivered per channel/quantity, late, faulted
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading

from .ledger import Ledger
from .ls240_device import LS240Device
from .ls372_device import LS372Device
from .physics import STAGES, Fridge
from .sim_clock import SimClock
from .wire import Faults, PtyInterface, TcpInterface

log = logging.getLogger("firmware_host")


class Emulator:
    def __init__(self, device, clock: SimClock, fridge: Fridge) -> None:
        self.device, self.clock, self.fridge = device, clock, fridge
        self.faults = Faults()
        self.ledger = Ledger()
        self.tcp: TcpInterface | None = None
        self.pty: PtyInterface | None = None
        self._control_sock: socket.socket | None = None
        self._control_path: str | None = None
        self._stop = threading.Event()

    # -- construction -----------------------------------------------------------
    @classmethod
    def ls372(cls, serial: str = "LSA23JD", time_scale: float = 1.0, seed: int | None = None,
              warm: bool = False) -> "Emulator":
        clock = SimClock(time_scale)
        fridge = Fridge.warm() if warm else Fridge()
        return cls(LS372Device(clock, fridge, serial=serial, seed=seed), clock, fridge)

    @classmethod
    def ls240(cls, channels: int = 2, serial: str = "LSA24AZ", time_scale: float = 1.0, seed: int | None = None,
              warm: bool = False) -> "Emulator":
        clock = SimClock(time_scale)
        fridge = Fridge.warm() if warm else Fridge()
        return cls(LS240Device(clock, fridge, channels=channels, serial=serial, seed=seed), clock, fridge)

    def listen_tcp(self, host: str = "127.0.0.1", port: int = 7777) -> tuple[str, int]:
        self.tcp = TcpInterface(host, port, self.device.dispatcher, self.device.lock, self.faults, ledger=self.ledger)
        self.tcp.start()
        return self.tcp.address

    def listen_pty(self, link: str) -> str:
        framing = "7O1" if isinstance(self.device, LS372Device) else "8N1"
        self.pty = PtyInterface(link, self.device.dispatcher, self.device.lock, self.faults, framing, ledger=self.ledger)
        self.pty.start()
        return self.pty.link

    def listen_control(self, path: str) -> str:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(4)
        self._control_sock, self._control_path = s, path
        threading.Thread(target=self._control_loop, name="control", daemon=True).start()
        return path

    # -- faults -------------------------------------------------------------------
    def control(self, line: str) -> str:
        """Run one fault-control command; returns ``ok`` / ``error: ...`` / a JSON status line."""
        words = line.strip().split()
        if not words:
            return "error: empty command"
        cmd, args = words[0].lower(), words[1:]
        try:
            if cmd == "mute":
                self.faults.mute = (args or ["on"])[0] == "on"
            elif cmd == "slow":
                with self.faults.lock:
                    self.faults.delay = float(args[0])
                    self.faults.delay_only = args[1].upper() if len(args) > 1 else None
            elif cmd == "garbage":
                self.faults.garbage = int(args[0]) if args else 1
            elif cmd == "partial":
                self.faults.partial = int(args[0]) if args else 1
            elif cmd == "drop":
                if self.tcp:
                    self.tcp.drop_all()
            elif cmd == "unplug":
                if not self.pty:
                    return "error: no serial pty to unplug"
                self.pty.unplug(float(args[0]) if args else 2.0)
            elif cmd == "reset":
                self.device.power_on()
                if self.tcp:
                    self.tcp.drop_all()
            elif cmd == "advance":
                self.clock.advance(float(args[0]))
            elif cmd == "warm":
                with self.fridge.lock:
                    for s in STAGES:
                        self.fridge.temps[s] = 295.0
            elif cmd == "warmup":
                self.fridge.advance_to(self.clock.now())  # the time so far at the old physics
                with self.fridge.lock:
                    self.fridge.warmup_tau = max(0.0, float(args[0]))
            elif cmd == "heater":
                watts = float(args[0])
                if hasattr(self.device, "force_heater"):
                    self.device.force_heater(watts or None)
                else:
                    self.fridge.sample_heater_w = watts
            elif cmd == "clear":
                self.faults.clear()
            elif cmd == "status":
                now = self.clock.now()
                self.fridge.advance_to(now)
                return json.dumps({
                    "sim_time": now, "mute": self.faults.mute, "delay": self.faults.delay,
                    "garbage": self.faults.garbage, "partial": self.faults.partial,
                    "temperatures": dict(self.fridge.temps),
                    "tcp_clients": len(self.tcp.clients) if self.tcp else 0,
                    "pty": self.pty.link if self.pty else None,
                })
            elif cmd == "ledger":
                return json.dumps({"delivered": self.ledger.counts(), "late": self.ledger.late_total(),
                                   "faulted": self.ledger.faulted})
            else:
                return f"error: unknown command {cmd!r}"
        except (IndexError, ValueError) as exc:
            return f"error: {cmd}: {exc}"
        log.info("fault control: %s", line.strip())
        return "ok"

    def _control_loop(self) -> None:
        assert self._control_sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._control_sock.accept()
            except OSError:
                return
            with conn:
                f = conn.makefile("rwb")
                for raw in f:
                    f.write(self.control(raw.decode("utf-8", "replace")).encode() + b"\n")
                    f.flush()

    def stop(self) -> None:
        self._stop.set()
        if self.tcp:
            self.tcp.stop()
        if self.pty:
            self.pty.stop()
        if self._control_sock:
            self._control_sock.close()
            if self._control_path:
                try:
                    os.unlink(self._control_path)
                except OSError:
                    pass


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
