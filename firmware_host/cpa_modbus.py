"""The emulated CPA panel's Modbus TCP server: pymodbus' server, answering as a device should.

pymodbus 3.16's server handler answers one request per TCP segment (a second request in the same
segment waits in its buffer until more bytes come) and answers a request for a unit id it has
no device for with a traceback and exception 4. A Modbus TCP client may send its next request
before the answer to the first (the Modbus Messaging on TCP/IP Implementation Guide V1.0b,
4.2: a server may receive several transactions on one connection); a read of 0 or more than
125 registers is exception 3, ILLEGAL DATA VALUE (Modbus Application Protocol V1.1b3, 6.4,
function 04: "Quantity of Input Registers 0x0001 to 0x007D", else exception code 03). So each
whole frame of a segment is answered, in order, and the quantity is checked first.

Unit ids: a device addressed by its IP address does not need the unit identifier (the
Implementation Guide, 4.4.2: "the MODBUS Unit Identifier is useless", 0xFF recommended); what a
CPA panel does with a unit id other than 1 is UNVERIFIED (FIDELITY.md): the emulator answers
any unit id as unit 1, echoing the id it was asked with, never a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

log = logging.getLogger("firmware_host.cpa")
MBAP = 7  # transaction (2), protocol (2), length (2), unit (1)
MAX_READ = 125  # registers one read may ask for (Modbus Application Protocol 6.3/6.4)


def quantity_refusal(frame: bytes) -> bytes | None:
    """The exception answer to a read of 0 or more than 125 registers (function 3 or 4), else None."""
    if len(frame) < MBAP + 5 or frame[MBAP] not in (3, 4):
        return None
    count = int.from_bytes(frame[MBAP + 3 : MBAP + 5], "big")
    if 1 <= count <= MAX_READ:
        return None
    return frame[:4] + struct.pack(">HBBB", 3, frame[6], frame[MBAP] | 0x80, int(ExcCodes.ILLEGAL_VALUE))


class PanelHandler(ServerRequestHandler):
    """One connection: every whole frame answered, in the order it came."""

    def __init__(self, *args: Any, unit: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.unit = unit
        self._todo: collections.deque[tuple[Any, Any]] = collections.deque()
        self._order = asyncio.Lock()

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        used = 0
        while len(data) - used >= MBAP:
            length = int.from_bytes(data[used + 4 : used + 6], "big")
            end = used + 6 + length
            if length < 2 or end > len(data):
                if length < 2 or length > 253:  # not a frame: as pymodbus does with it
                    return used + super().callback_data(data[used:], addr)
                break  # the rest of the frame is still on its way
            frame = data[used:end]
            refusal = quantity_refusal(frame)
            if refusal is not None:
                self._todo.append((refusal, addr))
                self.loop.call_soon(self.handle_later)
                used = end
                continue
            n = super().callback_data(frame, addr)  # decodes; calls handle_later for a request
            if self.last_pdu is not None:
                self._todo.append((self.last_pdu, addr))
            used = end if n else used
            if not n:
                break
        return used

    def handle_later(self) -> None:
        asyncio.run_coroutine_threadsafe(self._answer_next(), self.loop)

    async def _answer_next(self) -> None:
        async with self._order:  # a lock's waiters run first come, first served: answers in order
            if not self._todo:
                return
            item, addr = self._todo.popleft()
            if isinstance(item, bytes):
                packet = self.trace_packet(True, item)
                if packet:
                    self.low_level_send(packet, addr=addr)
                return
            try:
                response = await item.datastore_update(self.server.context, self.unit)
            except Exception as exc:  # the device's own failure: exception 4, logged in one line
                log.warning("request %r failed: %s", item, exc)
                response = ExceptionResponse(item.function_code, ExcCodes.DEVICE_FAILURE)
            response.transaction_id = item.transaction_id
            response.dev_id = item.dev_id  # the unit id it was asked with
            self.server_send(response, addr)


class PanelServer(ModbusTcpServer):
    """pymodbus' TCP server with ``PanelHandler`` for each connection."""

    def __init__(self, *args: Any, unit: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.unit = unit

    def callback_new_connection(self) -> PanelHandler:
        return PanelHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect, unit=self.unit)
