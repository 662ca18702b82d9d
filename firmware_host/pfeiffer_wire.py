"""The Pfeiffer wire: mnemonic lines answered ACK/NAK, a bare ENQ byte answered by the data line.

Unlike the Lake Shore dialect, the answer is not sent when the line ends: the controller sends
``<ACK><CR><LF>`` (or ``<NAK><CR><LF>``) and waits for ``<ENQ>`` (0x05, without a line end)
before sending the answer. ``<ETX>`` (0x03) resets the interface. A mnemonic ends with CR, LF or
CR LF (256 A manual p.82). Faults (mute, garbage, partial, slow) act on every reply, the
acknowledgements included, exactly as ``wire.LineSession`` applies them; ``PfeifferTcp`` and
``PfeifferPty`` are the shared TCP listener and pty with this session in place of the line one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .pfeiffer_device import PfeifferProtocol, Reading
from .pfeiffer_ledger import PfeifferLedger
from .wire import Faults, PtyInterface, TcpInterface

ACK, NAK, ENQ, ETX, CR, LF = 0x06, 0x15, 0x05, 0x03, 0x0D, 0x0A
MAX_MNEMONIC = 256  # a longer "line" is junk: dropped like an overflowing input buffer


class EnqSession:
    """One connection: frames mnemonics, answers ENQ, applies faults, notes readings in the ledger."""

    def __init__(
        self,
        protocol: PfeifferProtocol,
        lock: threading.RLock,
        faults: Faults,
        send: Callable[[bytes], bool],
        ledger: PfeifferLedger | None = None,
    ) -> None:
        self.protocol, self.lock, self.faults, self.send, self.ledger = protocol, lock, faults, send, ledger
        self.buf = bytearray()
        self.last = ""  # the mnemonic the ENQ answers (for ``slow MNEMONIC``)

    def feed(self, data: bytes) -> None:
        for b in data:
            if b == ENQ:
                self._enquiry()
            elif b == ETX:
                self.buf.clear()
                with self.lock:
                    self.protocol.reset()
            elif b in (CR, LF):
                if self.buf:
                    line = bytes(self.buf).decode("ascii", errors="replace")
                    self.buf.clear()
                    self._mnemonic(line)
            else:
                self.buf.append(b)
                if len(self.buf) > MAX_MNEMONIC:
                    self.buf.clear()

    def _mnemonic(self, line: str) -> None:
        if self.ledger is not None:
            self.ledger.hear(line)
        with self.lock:
            ok = self.protocol.mnemonic(line)
        self.last = line
        self._reply(bytes([ACK if ok else NAK]), line, [])

    def _enquiry(self) -> None:
        if self.ledger is not None:
            self.ledger.hear("<ENQ>")
        with self.lock:
            answer = self.protocol.enquiry()
        if answer is None:
            return
        text, readings = answer
        self._reply(text.encode("ascii"), self.last, readings)

    def _reply(self, body: bytes, line: str, readings: list[Reading]) -> None:
        whole = body + b"\r\n"
        out = self.faults.shape(whole)
        if out is None:
            if self.ledger is not None:
                self.ledger.note(readings, delivered=False, late=False)
            return
        delay = self.faults.delay_for(line)
        if delay > 0:
            time.sleep(delay)
        sent = self.send(out)
        if self.ledger is not None:
            self.ledger.note(readings, delivered=sent and out == whole, late=delay > 0)


class PfeifferTcp(TcpInterface):
    """The TPG 366's Ethernet port (TCP 8000)."""

    session_class = EnqSession  # type: ignore[assignment]


class PfeifferPty(PtyInterface):
    """The TPG 256 A's RS-232 port as a pty (8N1)."""

    session_class = EnqSession  # type: ignore[assignment]
