"""Exchange discipline shared by both instrument models.

One exchange at a time per instrument (a lock), the instrument's pacing rules
enforced here rather than by callers, and stale input flushed on (re)connect so
a late reply is never taken as the answer to the next query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import BadReply, ConnectionLost, DriverError, InstrumentTimeout, WrongInstrument
from .parse import decode
from .transport import Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    manufacturer: str
    model: str
    serial: str
    firmware: str

    @classmethod
    def parse(cls, raw: bytes) -> Identity:
        parts = decode(raw, "*IDN?").split(",")
        if len(parts) != 4 or not all(p.strip() for p in parts):
            raise BadReply("*IDN? reply is not 4 comma-separated fields", raw, "*IDN?")
        manufacturer, model, serial, firmware = (p.strip() for p in parts)
        return cls(manufacturer, model, serial.split("/")[0], firmware)


@dataclass(frozen=True)
class Pacing:
    """The instrument's timing rules.

    ``after_command``: quiet time after a write-only command (372: 50 ms; 240: 10 ms).
    ``min_interval``: least time between the starts of two messages (372 on USB: 1/20 s).
    ``after_query``: quiet time after a complete reply (372 on USB: 50 ms).
    """

    after_command: float = 0.05
    min_interval: float = 0.0
    after_query: float = 0.0


class Instrument:
    """A line-oriented Lake Shore instrument over any Transport."""

    expected_model_prefix = ""

    def __init__(
        self,
        transport: Transport,
        timeout: float = 2.0,
        pacing: Pacing | None = None,
        expected_serial: str | None = None,
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self.pacing = pacing or Pacing()
        self.expected_serial = expected_serial
        self.identity: Identity | None = None
        self._lock = threading.RLock()
        self._quiet_until = 0.0
        self._last_start = 0.0
        self._stale = False  # a timed-out exchange may still be answered: reset before the next one
        self.connected = False
        # told of every completed query (message, reply), on the exchanging thread: the share keeps
        # the poller's readings of a cycle to answer its clients' same questions (appliance.share)
        self.observer: Callable[[str, bytes], None] | None = None

    # -- connection ---------------------------------------------------------
    def connect(self) -> Identity:
        """Open the link, clear stale input, and check ``*IDN?``."""
        with self._lock:
            self.connected = False
            self.transport.open()
            try:
                if self._stale and getattr(self.transport, "open_discards_input", False):
                    # a new TCP connection carries no late reply; resetting it too would open a
                    # second one at once, and the 372 (two clients at most) refuses it while it
                    # has not yet seen the first close (a CI run met exactly that)
                    self._stale = False
                elif self._stale:  # a reply to an exchange that timed out may still come
                    self._reset_link()
                # A bare terminator ends any half-sent line left by a previous session.
                self.transport.write(b"\n")
                time.sleep(0.1)
                self.transport.flush_input()
                self.identity = self.identify()
                self.check_identity(self.identity)
            except InstrumentTimeout:
                # Keep a serial port open (the next connect first waits for a quiet line): on a
                # pty a 7O1 port cannot be opened twice. A TCP socket is already closed.
                raise
            except BaseException:
                self.transport.close()
                raise
            self.connected = True
            log.debug("connected to %s: %s", self.transport.description, self.identity)
            return self.identity

    def close(self) -> None:
        with self._lock:
            self.connected = False
            self.transport.close()

    def identify(self) -> Identity:
        return Identity.parse(self.query_raw("*IDN?"))

    def check_identity(self, ident: Identity) -> None:
        if ident.manufacturer != "LSCI" or not ident.model.startswith(self.expected_model_prefix):
            raise WrongInstrument(
                f"{self.transport.description}: expected a Lake Shore {self.expected_model_prefix}, "
                f"*IDN? says {ident.manufacturer},{ident.model},{ident.serial}"
            )
        if self.expected_serial and ident.serial != self.expected_serial:
            raise WrongInstrument(
                f"{self.transport.description}: expected serial {self.expected_serial}, "
                f"*IDN? says {ident.model} serial {ident.serial}"
            )

    # -- exchanges ----------------------------------------------------------
    def _wait_turn(self) -> None:
        if self._stale:
            self._reset_link()
        now = time.monotonic()
        start = max(self._quiet_until, self._last_start + self.pacing.min_interval)
        if start > now:
            time.sleep(start - now)
        self._last_start = time.monotonic()

    @staticmethod
    def _one_line(message: str) -> str:
        """A message is one line: a line feed or carriage return inside it would run a second command."""
        if "\n" in message or "\r" in message:
            raise ValueError(f"refused to send {message!r}: a message must not hold a line feed or carriage return")
        return message

    def query_raw(self, message: str) -> bytes:
        """Send a query, return the reply line (without terminator) as bytes."""
        self._one_line(message)
        with self._lock:
            self._wait_turn()
            try:
                self.transport.write(message.encode("ascii") + b"\n")
                reply = self.transport.read_line(self.timeout)
            except InstrumentTimeout:
                # The reply may still arrive later: the link is reset before the next exchange
                # (a new TCP connection; on serial, a wait for a quiet line), so a late reply can
                # never be read as the answer to a later query.
                self._stale = True
                self.transport.abandon()
                raise
            except ConnectionLost:
                self.connected = False
                raise
            finally:
                self._quiet_until = time.monotonic() + self.pacing.after_query
            log.debug("%s %r -> %r", self.transport.description, message, reply)
            if self.observer is not None:
                self.observer(message, reply)
            return reply

    def query(self, message: str) -> str:
        return decode(self.query_raw(message), message)

    def write(self, message: str) -> None:
        """Send a command that has no reply."""
        self._one_line(message)
        with self._lock:
            self._wait_turn()
            try:
                self.transport.write(message.encode("ascii") + b"\n")
            except InstrumentTimeout:
                self._stale = True
                self.transport.abandon()
                raise
            except ConnectionLost:
                self.connected = False
                raise
            finally:
                self._quiet_until = time.monotonic() + self.pacing.after_command
            log.debug("%s %r", self.transport.description, message)

    def _reset_link(self) -> None:
        """Reset a link that timed out: nothing sent before now can be read after it."""
        try:
            self.transport.reset(quiet=min(self.timeout, 2.0))
        except DriverError:
            self.connected = False
            raise
        self._stale = False
        log.info("%s: link reset after a timeout", self.transport.description)


def check_channel(channel: str | int, allowed: set[str]) -> str:
    ch = str(channel).upper().lstrip("0") or "0"
    if ch not in allowed:
        raise ValueError(f"channel {channel!r} is not one of {sorted(allowed, key=_chan_key)}")
    return ch


def _chan_key(c: str) -> tuple[int, str]:
    return (0, c) if not c.isdigit() else (1, f"{int(c):03d}")


FORBIDDEN_IN_TEXT = ',;"'  # the instrument's own: they would break its reply framing


def text_problem(value: str, limit: int) -> str | None:
    """Why ``value`` cannot be sent as an instrument string, or None when it can.

    Only printable ASCII (0x20-0x7E) without ``,`` ``;`` ``"`` is sent: a line feed or carriage
    return would end the message and run the rest as a second command (issue 22's red team set a
    300 K setpoint through a name), and a control character or DEL has no place on the wire.
    """
    if len(value) > limit:
        return f"is {len(value)} characters, at most {limit}"
    for c in value:
        if not 0x20 <= ord(c) <= 0x7E:
            return f"holds the character {c!r} (only printable ASCII, 0x20-0x7E, is sent)"
        if c in FORBIDDEN_IN_TEXT:
            return f'holds the character {c!r} (the instrument forbids , ; and ")'
    return None


def quote_name(name: str, limit: int) -> str:
    """Quote an instrument string; refuse what could break the message (the last line of defence)."""
    problem = text_problem(name, limit) if isinstance(name, str) else "is not text"
    if problem:
        raise ValueError(
            f'name {name!r} {problem}: an instrument string is printable ASCII, at most {limit} characters, without , ; or "'
        )
    return f'"{name}"'
