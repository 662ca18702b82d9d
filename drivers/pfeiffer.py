"""Pfeiffer Vacuum gauge controllers: the TPG 366 (Ethernet, TCP port 8000) and the MaxiGauge
TPG 256 A (RS-232, 9600 8N1), over any Transport.

Both speak the Pfeiffer mnemonic protocol (TPG 256 A manual BG 5186 BEN ch. 8; TPG 366
protocol BG 5511 BEN): the host sends a mnemonic ended by CR LF, the controller answers
``<ACK><CR><LF>`` (0x06) when it took it or ``<NAK><CR><LF>`` (0x15) when it did not; the host
then sends ``<ENQ>`` (0x05, alone, no terminator) and the controller sends the answer line.
A NAK is an ``InstrumentError`` carrying the controller's error word (read with ``ERR``); an
answer that is neither ACK nor NAK, or an answer line that does not parse, is a ``BadReply``.

Each gauge reading carries a status code (0 ok, 1 underrange, 2 overrange, 3 sensor error,
4 sensor off, 5 no sensor, 6 identification error). Only status 0 is a measurement: every other
reading has ``pressure`` None (its wire number kept as ``raw_pressure``) and its status as a
named bit (``STATUS_BITS``), so a gauge that is off is never stored as a pressure.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .base import Identity, Instrument, Pacing
from .errors import BadReply, ConnectionLost, DriverError, InstrumentError, InstrumentTimeout, WrongInstrument
from .parse import decode, parse_float
from .readings import decode_status
from .transport import SerialFraming, SerialTransport, Transport, VisaTransport, visa_serial_settings

log = logging.getLogger(__name__)

ACK, NAK, ENQ, ETX = b"\x06", b"\x15", b"\x05", b"\x03"
EOL = b"\r\n"  # the controller takes CR, LF or CR LF after a mnemonic (256 A manual p.82); we send CR LF
CHANNELS = 6
DRAIN_WAIT, DRAIN_LINES = 1.0, 20  # at connect: lines dropped up to the error word (bounded)
_ERROR_WORD = re.compile(rb"\s*(?:[01]{4}|\d+,\d+)\s*")  # the TPG 36x word, or the 256 A's "system,gauge"

# Status code of a gauge reading (TPG 256 A manual p.87; TPG 261 manual p.71; TPG 366 protocol p.11).
STATUS_NAMES = {
    0: "OK",
    1: "UNDERRANGE",
    2: "OVERRANGE",
    3: "SENSOR_ERROR",
    4: "SENSOR_OFF",
    5: "NO_SENSOR",
    6: "ID_ERROR",
    7: "BAD_FIELD",  # not the controller's: its field for this gauge did not parse (status outside 0-6, no number)
}
BAD_FIELD = 7
UNDERRANGE, OVERRANGE = 1, 2
# The status code as a bit, so it sits in the store's status word like a Lake Shore RDGST bit:
# code n > 0 is bit 1 << (n - 1); code 0 (a good measurement) sets none.
PFEIFFER_STATUS_BITS: dict[int, str] = {1 << (code - 1): name for code, name in STATUS_NAMES.items() if code}

# The error status after a NAK, read with ERR. TPG 366 (TPG 26x/300/36x family): a four-flag word.
ERROR_WORD = {
    "1000": "controller error",
    "0100": "no hardware",
    "0010": "inadmissible parameter",
    "0001": "syntax error",
    "0000": "no error",
}
# TPG 256 A (manual p.97): "system,gauge", each a sum of bits; the system bits that a refusal sets.
SYSTEM_ERRORS = {4096: "syntax error", 8192: "inadmissible parameter", 16384: "no hardware", 32768: "fatal error"}


def describe_error(word: str) -> str:
    """What an ERR answer says, in words (either model's form); an unknown form is said as unknown.

    The TPG 36x word is four flags that may be set together (``0011``: syntax error and
    inadmissible parameter), so each set flag is named."""
    if word in ERROR_WORD:
        return ERROR_WORD[word]
    if len(word) == 4 and set(word) <= {"0", "1"}:
        return ", ".join(text for flag, text in ERROR_WORD.items() if int(flag, 2) & int(word, 2) and flag != "0000")
    system, sep, gauge = word.partition(",")
    if sep and system.strip().isdigit() and gauge.strip().isdigit():
        bits = int(system)
        said = [text for bit, text in SYSTEM_ERRORS.items() if bits & bit]
        if bits & ~sum(SYSTEM_ERRORS) & 0xFFFF:
            said.append(f"system error bits {bits & ~sum(SYSTEM_ERRORS) & 0xFFFF}")
        if int(gauge):
            said.append(f"gauge error bits {int(gauge)}")
        return ", ".join(said) or "no error"
    return "unknown"


UNITS = {"0": "mbar", "1": "Torr", "2": "Pa", "3": "micron", "4": "hPa", "5": "V"}  # UNI (TPG 366: 0-5; 256 A: 0-2)
# One pressure unit in mbar. "V" (the TPG 366's measurement voltage) is not a pressure: no factor.
MBAR_PER = {"mbar": 1.0, "Torr": 1.0 / 0.750062, "Pa": 0.01, "micron": 1e-3 / 0.750062, "hPa": 1.0}
STORED_UNIT = "mbar"  # the one unit the appliance stores pressures in, whatever the controller's UNI


def to_mbar(value: float, units: str) -> float | None:
    """``value`` in ``units`` as mbar; None when ``units`` is not a pressure unit (V)."""
    factor = MBAR_PER.get(units)
    return None if factor is None else value * factor


SERIAL_FRAMING = SerialFraming(baudrate=9600, bytesize=8, parity="N", stopbits=1)  # 256 A factory setting
_STATUS = re.compile(r"[0-9]")


class UnitChanged(BadReply):
    """The controller's pressure unit (UNI) changed while readings were taken: their unit is unknown."""

    def __init__(self, message: str) -> None:
        DriverError.__init__(self, message)
        self.raw, self.query = b"", "UNI"


def status_bit(code: int) -> int:
    """The status word bit of a Pfeiffer status code (0 for a good measurement)."""
    return 0 if code == 0 else 1 << (code - 1)


@dataclass(frozen=True)
class PressureReading:
    """One gauge's reading as the controller reported it.

    ``pressure`` is None unless the status is 0 (a measurement): underrange and overrange carry a
    limit, a gauge that is off or missing a placeholder, and none of them is a pressure.
    ``raw_pressure`` keeps the number on the wire for diagnosis.
    """

    channel: int
    raw_pressure: float
    code: int  # 0-6, STATUS_NAMES
    t: float
    units: str = "mbar"

    @property
    def status(self) -> int:
        return status_bit(self.code)

    @property
    def status_bits(self) -> tuple[str, ...]:
        return decode_status(self.status, PFEIFFER_STATUS_BITS)

    @property
    def pressure(self) -> float | None:
        return self.raw_pressure if self.code == 0 else None

    @property
    def valid(self) -> bool:
        return self.code == 0

    @property
    def mbar(self) -> float | None:
        """The measurement converted to mbar (the appliance's one stored unit), or None."""
        p = self.pressure
        return None if p is None else to_mbar(p, self.units)


def parse_gauge(text: str, channel: int, query: str, raw: bytes, t: float, units: str = "mbar") -> PressureReading:
    """``s,sx.xxxxEsxx``: a status digit and a signed number (TPG 261 manual p.71; an offset-corrected
    gauge can read below zero). A status other than 0 is not a measurement, so its number is not
    needed; a field that does not parse (a status outside 0-6, a measurement without a number) is
    this gauge's ``BAD_FIELD`` reading, and never blinds the other gauges of a PRX answer."""
    status, sep, value = text.partition(",")
    status = status.strip()
    if not sep:
        raise BadReply(f"gauge {channel}: expected 'status,pressure'", raw, query)
    code = int(status) if _STATUS.fullmatch(status) else BAD_FIELD
    if code not in STATUS_NAMES or code == BAD_FIELD:
        log.warning("gauge %d: status %r is not 0-6 in %r (reply to %s)", channel, status, raw, query)
        return PressureReading(channel, math.nan, BAD_FIELD, t, units)
    try:
        pressure = parse_float(value, query)
    except BadReply:
        if code == 0:
            log.warning("gauge %d: a measurement without a number in %r (reply to %s)", channel, raw, query)
            return PressureReading(channel, math.nan, BAD_FIELD, t, units)
        pressure = math.nan  # a flagged gauge's number is not a pressure: it may be anything
    return PressureReading(channel, pressure, code, t, units)


class PfeifferGauge(Instrument):
    """A six-gauge Pfeiffer controller; subclasses name the model and how it identifies itself."""

    MODEL = "Pfeiffer"
    DEFAULT_PORT = 8000

    def __init__(self, transport: Transport, timeout: float = 2.0, pacing: Pacing | None = None, **_: object) -> None:
        super().__init__(transport, timeout, pacing or Pacing(after_command=0.0))
        self.gauge_ids: tuple[str, ...] = ()
        self.units = "mbar"  # the controller's pressure unit (UNI), read at each connect

    @classmethod
    def serial(cls, device: str, **kw: Any) -> PfeifferGauge:
        return cls(SerialTransport(device, **SERIAL_FRAMING), **kw)

    @classmethod
    def visa(cls, resource: str, **kw: Any) -> PfeifferGauge:
        """Any VISA resource; an ``ASRL`` one is opened 9600 8N1 like the controller's RS-232 port."""
        return cls(VisaTransport(resource, serial_settings=visa_serial_settings(**SERIAL_FRAMING)), **kw)

    # -- connection -------------------------------------------------------------
    def connect(self) -> Identity:
        """Open the link, reset the controller's interface (ETX), drop what it had queued, identify."""
        with self._lock:
            self.connected = False
            self.transport.open()
            try:
                if self._stale and not getattr(self.transport, "open_discards_input", False):
                    self._reset_link()
                self._stale = False
                # ETX resets the interface (256 A manual p.81): a half-sent mnemonic is forgotten, and
                # an ENQ stops a continuous output a TPG 366 may start in (socs drivers.py:37-38).
                # A controller fresh from power-up sends a reading every second until it hears a
                # character (TPG 261 manual p.65); the ENQ is answered by the error word (p.67), which
                # comes after any reading already on its way: read lines up to it, so a reading still
                # arriving (90 bytes take 94 ms at 9600 baud) is not taken for the next ACK. A
                # controller that answers a bare ENQ with nothing costs one DRAIN_WAIT here.
                self.transport.write(ETX + ENQ)
                for _ in range(DRAIN_LINES):
                    try:
                        line = self.transport.read_line(min(self.timeout, DRAIN_WAIT))
                    except InstrumentTimeout:
                        break
                    if _ERROR_WORD.fullmatch(line):
                        break
                self.transport.flush_input()
                self.identity = self.identify()
            except InstrumentTimeout:
                raise
            except BaseException:
                self.transport.close()
                raise
            self.connected = True
            return self.identity

    def identify(self) -> Identity:
        """The gauges' identifiers (``TID``) and the pressure unit (``UNI``), then the model's own
        identification (``_firmware``): a Pfeiffer controller is whatever answers them."""
        ids = [p.strip() for p in self.ask("TID").split(",")]
        if len(ids) != CHANNELS or not all(ids):
            raise BadReply(f"TID: expected {CHANNELS} gauge identifiers", ",".join(ids).encode(), "TID")
        self.gauge_ids = tuple(ids)
        self.read_unit()
        serial, firmware = self._firmware()
        return Identity("Pfeiffer Vacuum", self.MODEL, serial, firmware)

    def _firmware(self) -> tuple[str, str]:
        """(serial, firmware) as this model tells them."""
        return "", ""

    # -- the mnemonic exchange ---------------------------------------------------
    def _send_read(self, data: bytes, what: str) -> bytes:
        """Write ``data`` and read one line, with the link discipline of ``Instrument.query_raw``."""
        if data:
            self._wait_turn()
        try:
            if data:
                self.transport.write(data)
            return self.transport.read_line(self.timeout)
        except InstrumentTimeout:
            self._stale = True
            self.transport.abandon()
            raise
        except ConnectionLost:
            self.connected = False
            raise

    def ask(self, mnemonic: str) -> str:
        """Send ``mnemonic``, expect ACK, send ENQ, return the answer line as text."""
        if not mnemonic or any(not 0x20 <= ord(c) <= 0x7E for c in mnemonic):
            # a CR/LF would end it early, an ENQ (0x05) or ETX (0x03) inside would act on the controller
            raise ValueError(f"refused to send {mnemonic!r}: a mnemonic is printable ASCII (0x20-0x7E)")
        with self._lock:
            try:
                return self._exchange(mnemonic)
            except BadReply:
                # The bytes are out of step with the exchange (a stray line, a garbled ACK): the
                # next exchange starts on a fresh link, so one stray line costs one reading, not all.
                self._stale = True
                raise

    def _exchange(self, mnemonic: str) -> str:
        ack = self._send_read(mnemonic.encode("ascii") + EOL, mnemonic)
        for _ in range(3):  # a stray CR LF (an empty line) before the ACK is not the ACK
            if ack:
                break
            ack = self._send_read(b"", mnemonic)
        if ack == NAK:
            word = self._error_word()
            raise InstrumentError(f"{self.transport.description}: {mnemonic} refused (NAK): {word}")
        if ack != ACK:
            raise BadReply("expected ACK (0x06) or NAK (0x15)", ack, mnemonic)
        raw = self._send_read(ENQ, mnemonic)
        log.debug("%s %r -> %r", self.transport.description, mnemonic, raw)
        if raw in (ACK, NAK):
            raise BadReply("expected an answer line after ENQ", raw, mnemonic)
        return decode(raw, mnemonic)

    def _error_word(self) -> str:
        """After a NAK: the controller's ERR word, described (reading it clears it)."""
        try:
            ack = self._send_read(b"ERR" + EOL, "ERR")
            if ack != ACK:
                return f"ERR not acknowledged ({ack!r})"
            word = decode(self._send_read(ENQ, "ERR"), "ERR").strip()
        except BadReply as exc:
            return f"ERR unreadable ({exc})"
        return f"error word {word} ({describe_error(word)})"

    # -- readings ------------------------------------------------------------------
    def read(self, channel: int) -> PressureReading:
        """One gauge (``PRn``), timed at the answer."""
        if not 1 <= int(channel) <= CHANNELS:
            raise ValueError(f"gauge {channel!r} is not 1-{CHANNELS}")
        q = f"PR{int(channel)}"
        text = self.ask(q)
        return parse_gauge(text, int(channel), q, text.encode(), time.time(), self.units)

    def read_all(self) -> list[PressureReading]:
        """All six gauges in one exchange (``PRX``), timed at the answer."""
        text = self.ask("PRX")
        t = time.time()
        parts = text.split(",")
        if len(parts) != 2 * CHANNELS:
            raise BadReply(f"PRX: expected {2 * CHANNELS} fields", text.encode(), "PRX")
        return [
            parse_gauge(f"{parts[2 * i]},{parts[2 * i + 1]}", i + 1, "PRX", text.encode(), t, self.units)
            for i in range(CHANNELS)
        ]

    def read_gauges(self) -> list[PressureReading]:
        """The six gauges, in as few exchanges as the model allows."""
        return list(self.iter_gauges())

    def iter_gauges(self) -> Iterator[PressureReading]:
        """The six gauges, each as soon as it is read: a failure later in the cycle keeps the earlier."""
        raise NotImplementedError

    def read_unit(self) -> str:
        """``UNI``: the controller's pressure unit now (another client or the front panel may change it)."""
        unit = self.ask("UNI").strip()
        if unit not in UNITS:
            raise BadReply(f"UNI: expected one of {sorted(UNITS)}", unit.encode(), "UNI")
        self.units = UNITS[unit]
        return self.units

    def sensor_states(self) -> tuple[int, ...]:
        """``SEN``: each gauge 0 (cannot be switched), 1 off, 2 on."""
        text = self.ask("SEN")
        try:
            states = tuple(int(p) for p in text.split(","))
        except ValueError:
            raise BadReply("SEN: expected integers", text.encode(), "SEN") from None
        if len(states) != CHANNELS or any(s not in (0, 1, 2) for s in states):
            raise BadReply(f"SEN: expected {CHANNELS} states 0-2", text.encode(), "SEN")
        return states

    def configuration(self, channels: list[str]) -> dict:
        return {
            "identity": vars(self.identity) if self.identity else None,
            "gauges": dict(zip((str(i) for i in range(1, CHANNELS + 1)), self.gauge_ids, strict=True)),
            "sensor_states": list(self.sensor_states()),
        }

    # -- what the appliance reads about this model (appliance.models) --------------
    STATUS_BITS = PFEIFFER_STATUS_BITS
    OCS_AGENT_CLASS = "PfeifferAgent"  # socs agents/pfeiffer_tpg366/agent.py:135
    OCS_FEED = "pressures"  # socs agents/pfeiffer_tpg366/agent.py:28

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]:
        """socs' PfeifferAgent writes ``pressure_ch<n>`` (agent.py:92); a gauge has no kelvin series."""
        return "", f"pressure_ch{channel}"


class TPG366(PfeifferGauge):
    """TPG 366 MaxiGauge (Ethernet): six gauges on TCP port 8000."""

    MODEL = "TPG 366"

    def _firmware(self) -> tuple[str, str]:
        """``AYT``: type, part number, serial, firmware, hardware (TPG 36x protocol BG 5511)."""
        parts = [p.strip() for p in self.ask("AYT").split(",")]
        if len(parts) != 5 or not parts[0].startswith("TPG36"):
            raise WrongInstrument(f"{self.transport.description}: AYT says {','.join(parts)!r}, not a TPG 36x")
        return parts[2], parts[3]

    def iter_gauges(self) -> Iterator[PressureReading]:
        """The six gauges: one ``PRX`` exchange."""
        yield from self.read_all()


class TPG256A(PfeifferGauge):
    """MaxiGauge TPG 256 A (RS-232, 9600 8N1), the controller in Bluefors systems."""

    MODEL = "TPG 256 A"

    def _firmware(self) -> tuple[str, str]:
        """``PNR``: the firmware's program number (256 A manual ch. 8.2.5)."""
        return "", self.ask("PNR").strip()

    def iter_gauges(self) -> Iterator[PressureReading]:
        """The six gauges, one ``PRn`` exchange each (PR1-PR6 are the 256 A's measurement mnemonics)."""
        for n in range(1, CHANNELS + 1):
            yield self.read(n)
