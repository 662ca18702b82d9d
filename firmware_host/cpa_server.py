"""The emulated CPA on Modbus TCP: a pymodbus server over ``CpaDevice``, fault words and a ledger.

pymodbus frames every request and answer; this module only says what the registers hold
(``SimDevice.action`` fills them from the device at each read, and carries out a write of holding
register 1) and shapes the outgoing bytes for the faults (``trace_packet``).

Fault control (``CpaEmulator.control``, the same words over ``listen_control``'s socket)::

    mute on|off        stop answering (requests are read and ignored)
    slow SECONDS       hold every answer SECONDS (0 clears)
    garble N           the next N answers carry impossible register values (0xFF bytes)
    drop               close every TCP connection now
    trip water         the cooling water stops: the coolant warms until the compressor trips
    trip pressure      the compressor trips now on high pressure
    water on           the cooling water flows again
    advance SECONDS    fast-forward simulated time
    clear              clear mute/slow/garble
    status             one JSON line: faults, simulated time, the compressor's state
    ledger             one JSON line: readings delivered per field, late, faulted, trips
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.cpa import FIRST_REGISTER, REGISTER_COUNT, START, decode_block
from drivers.errors import BadReply

from .control_socket import ControlSocket, dispatch
from .cpa_device import HIGH_PRESSURE_HIGH, INPUT_REGISTERS, CpaDevice
from .cpa_modbus import PanelServer
from .sim_clock import SimClock

log = logging.getLogger("firmware_host.cpa")
UNIT_ID = 1  # socs and Cryomech's samples address unit 1; whether a panel answers others is UNVERIFIED
STOP_VALUES = (0x00FF, 0xFFFF)  # socs writes 0x00FF, Cryomech's sample code 0xFFFF: both stop


@dataclass
class CpaFaults:
    mute: bool = False
    delay: float = 0.0
    garble: int = 0


class CpaLedger:
    """What the emulated panel delivered: per field, the values of every whole, on-time answer of
    the block read (registers 1..53), decoded from the bytes that left; plus late and faulted
    answers and the trips with their wall-clock times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, array] = {}
        self.late: dict[str, int] = {}
        self.faulted = 0
        self.trips: list[dict] = []

    def note(self, regs: list[int], late: bool) -> None:
        try:
            r = decode_block(regs, 0.0)
        except BadReply:
            return
        with self._lock:
            for f, v in r.values.items():
                if late:
                    self.late[f] = self.late.get(f, 0) + 1
                else:
                    self.values.setdefault(f, array("d")).append(v)

    def note_trip(self, cause: str, sim_t: float, wall_t: float) -> None:
        with self._lock:
            self.trips.append({"cause": cause, "sim_t": sim_t, "t": wall_t})

    def snapshot(self) -> dict[str, list[float]]:
        with self._lock:
            return {k: list(v) for k, v in self.values.items()}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in sorted(self.values.items())}


class CpaEmulator:
    """Device + Modbus TCP server (its own asyncio loop on a thread) + fault control + ledger."""

    def __init__(self, time_scale: float = 1.0, serial: int = 10556) -> None:
        self.clock = SimClock(time_scale)
        self.device = CpaDevice(self.clock, serial)
        self.faults = CpaFaults()
        self.ledger = CpaLedger()
        self.address: tuple[str, int] | None = None
        self._server: PanelServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: tuple[list[int], bool] | None = None  # the block just read, for trace_packet
        self._trips_seen = 0
        self._control: ControlSocket | None = None

    # -- the wire --------------------------------------------------------------------
    def _simdevice(self) -> SimDevice:
        inputs = [SimData(0, count=INPUT_REGISTERS, values=0, datatype=DataType.REGISTERS)]
        holding = [SimData(0, count=2, values=0, datatype=DataType.REGISTERS)]
        none = [SimData(0, count=1, values=False, datatype=DataType.BITS)]  # coils, discrete inputs: UNVERIFIED
        return SimDevice(UNIT_ID, simdata=(none, none, holding, inputs), action=self._action)

    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[int], values: list[int] | list[bool] | None
    ) -> ExcCodes | None:
        delay = self.faults.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if fc == 4:
            image = self.device.registers()
            self._note_trips()
            regs[:] = image[start : start + len(regs)]
            block = address <= FIRST_REGISTER and address + count >= FIRST_REGISTER + REGISTER_COUNT
            self._pending = (image[FIRST_REGISTER : FIRST_REGISTER + REGISTER_COUNT], delay > 0) if block else None
            return None
        if fc == 6 and values is not None:
            if address != 1:
                return ExcCodes.ILLEGAL_ADDRESS  # only the enable register is writable (UNVERIFIED)
            value = int(values[0])
            if value == START:
                self.device.start()
            elif value in STOP_VALUES:
                self.device.stop()
            else:
                return ExcCodes.ILLEGAL_VALUE  # UNVERIFIED: what a panel does with another value
            log.info("holding register 1 <- %#06x", value)
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        pending, self._pending = self._pending, None
        if self.faults.mute:
            if pending is not None:
                self.ledger.faulted += 1
            return b""
        if self.faults.garble and len(data) > 9:
            self.faults.garble -= 1
            if pending is not None:
                self.ledger.faulted += 1
            return data[:9] + b"\xff" * (len(data) - 9)  # the frame holds, the values are impossible
        if pending is not None:
            self.ledger.note(*pending)
        return data

    def _note_trips(self) -> None:
        trips = self.device.state.trips
        while self._trips_seen < len(trips):
            t = trips[self._trips_seen]
            self.ledger.note_trip(t.cause, t.sim_t, time.time())
            self._trips_seen += 1

    def listen_tcp(self, host: str = "127.0.0.1", port: int = 502) -> tuple[str, int]:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            try:
                self._server = PanelServer(
                    self._simdevice(), address=(host, port), trace_packet=self._trace_packet, unit=UNIT_ID
                )
                await self._server.serve_forever(background=True)
                sock = self._server.transport.sockets[0]  # type: ignore[attr-defined]  # an asyncio Server
                self.address = sock.getsockname()[:2]
            except BaseException as exc:  # reported to the caller of listen_tcp
                failure.append(exc)
            finally:
                ready.set()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            loop.run_until_complete(serve())
            if not failure:
                loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="cpa-modbus", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise OSError(f"cannot listen on {host}:{port}: {failure[0]}")
        assert self.address is not None
        return self.address

    def _on_loop(self, fn: Callable[[], object]) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(fn)

    def drop_all(self) -> None:
        def drop() -> None:
            if self._server is not None:
                for conn in list(self._server.active_connections.values()):
                    conn.close()

        done = threading.Event()

        def drop_then_tell() -> None:
            drop()
            done.set()

        self._on_loop(drop_then_tell)
        done.wait(5)

    # -- fault control ---------------------------------------------------------------
    def control(self, line: str) -> str:
        return dispatch(CPA_CONTROLS, self, line, logger=log, list_words=True)

    def _mute(self, args: list[str]) -> None:
        word = (args or ["on"])[0]
        if word not in ("on", "off"):
            raise ValueError(f"mute takes on or off, not {word!r}")
        self.faults.mute = word == "on"

    def _slow(self, args: list[str]) -> None:
        delay = float(args[0])
        if not 0 <= delay <= 3600:
            raise ValueError(f"slow takes 0..3600 seconds, not {args[0]!r}")
        self.faults.delay = delay

    def _garble(self, args: list[str]) -> None:
        n = int(args[0]) if args else 1
        if n < 0:
            raise ValueError(f"garble takes a count >= 0, not {n}")
        self.faults.garble = n

    def _drop(self, args: list[str]) -> None:
        self.drop_all()

    def _trip(self, args: list[str]) -> None:
        what = args[0].lower() if args else ""
        if what == "water":
            self.device.set_water(False)
        elif what == "pressure":
            self.device.advance_to(self.clock.now())
            self.device.trip("pressure", HIGH_PRESSURE_HIGH)
        else:
            raise ValueError(f"trip takes water or pressure, not {what!r}")
        self.device.advance_to(self.clock.now())
        self._note_trips()

    def _water(self, args: list[str]) -> None:
        word = args[0].lower() if args else ""
        if word not in ("on", "off"):
            raise ValueError(f"water takes on or off, not {word!r}")
        self.device.set_water(word == "on")
        self._note_trips()

    def _advance(self, args: list[str]) -> None:
        seconds = float(args[0])
        if not 0 <= seconds < 1e9:
            raise ValueError(f"advance takes seconds >= 0, not {args[0]!r}")
        self.clock.advance(seconds)
        self.device.advance_to(self.clock.now())
        self._note_trips()

    def _clear(self, args: list[str]) -> None:
        self.faults = CpaFaults()

    def _status(self, args: list[str]) -> str:
        d = self.device
        with d.lock:
            d.advance_to(self.clock.now())
            s = d.state
            return json.dumps(
                {
                    "sim_time": self.clock.now(),
                    "mute": self.faults.mute,
                    "delay": self.faults.delay,
                    "garble": self.faults.garble,
                    "running": s.running,
                    "water": s.water,
                    "operating_state": s.operating_state,
                    "warning_bits": s.warning_bits,
                    "alarm_bits": s.alarm_bits,
                    "coolant_out": s.coolant_out,
                    "high_pressure": s.high,
                }
            )

    def _ledger(self, args: list[str]) -> str:
        return json.dumps(
            {
                "delivered": self.ledger.counts(),
                "late": sum(self.ledger.late.values()),
                "faulted": self.ledger.faulted,
                "trips": self.ledger.trips,
            }
        )

    def listen_control(self, path: str) -> str:
        self._control = ControlSocket(path, self.control, name="cpa-control")
        return path

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._server is not None:
            server = self._server
            fut = asyncio.run_coroutine_threadsafe(server.shutdown(), loop)
            with contextlib.suppress(Exception):
                fut.result(5)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if self._control:
            self._control.close()


CPA_CONTROLS: dict[str, Callable[[CpaEmulator, list[str]], str | None]] = {
    "mute": CpaEmulator._mute,
    "slow": CpaEmulator._slow,
    "garble": CpaEmulator._garble,
    "drop": CpaEmulator._drop,
    "trip": CpaEmulator._trip,
    "water": CpaEmulator._water,
    "advance": CpaEmulator._advance,
    "clear": CpaEmulator._clear,
    "status": CpaEmulator._status,
    "ledger": CpaEmulator._ledger,
}
