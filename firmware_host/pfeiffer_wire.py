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
ANNOUNCE_EVERY = 1.0  # seconds between unasked readings after power-up (TPG 261 manual p.65)
ANNOUNCE_MAX = 30
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
        self.own = ledger.connection() if ledger is not None else None  # this connection's ledger
        self._heard = threading.Event()
        self.buf = bytearray()
        self.last = ""  # the mnemonic the ENQ answers (for ``slow MNEMONIC``)
        self.announced = 0  # unasked lines this connection carried (after power-up, before a character)
        self.announce()

    def announce(self) -> None:
        """After power-up, until a character arrives: an unasked reading now, then every second.

        The first is sent before this connection reads a byte, so a client always meets one. At
        most ``ANNOUNCE_MAX`` per connection, so an unread pty (4 KiB of buffer) never blocks us.
        Not noted in the ledger: they answer no request, and a host swallows them."""
        if not self._announce_once():
            return
        threading.Thread(target=self._announce_loop, name="pfeiffer-announce", daemon=True).start()

    def _announce_once(self) -> bool:
        line = self.protocol.device.announcement()
        if line is None or self.announced >= ANNOUNCE_MAX or not self.send(line.encode("ascii") + b"\r\n"):
            return False
        self.announced += 1
        return True

    def _announce_loop(self) -> None:
        while not self._heard.wait(ANNOUNCE_EVERY) and self._announce_once():
            pass

    def feed(self, data: bytes) -> None:
        if data and not self._heard.is_set():
            self._heard.set()
            self.protocol.device.heard()
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
        for ledger in (self.ledger, self.own):
            if ledger is not None:
                ledger.hear(line)
        with self.lock:
            ok = self.protocol.mnemonic(line)
        self.last = line
        self._reply(bytes([ACK if ok else NAK]), line, [])

    def _enquiry(self) -> None:
        for ledger in (self.ledger, self.own):
            if ledger is not None:
                ledger.hear("<ENQ>")
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
            self._note(readings, delivered=False, late=False)
            return
        delay = self.faults.delay_for(line)
        if delay > 0:
            time.sleep(delay)
        sent = self.send(out)
        self._note(readings, delivered=sent and out == whole, late=delay > 0)

    def _note(self, readings: list[Reading], delivered: bool, late: bool) -> None:
        for ledger in (self.ledger, self.own):
            if ledger is not None:
                ledger.note(readings, delivered=delivered, late=late)


class PfeifferTcp(TcpInterface):
    """The TPG 366's Ethernet port (TCP 8000)."""

    session_class = EnqSession  # type: ignore[assignment]


class PfeifferPty(PtyInterface):
    """The TPG 256 A's RS-232 port as a pty (8N1)."""

    session_class = EnqSession  # type: ignore[assignment]
