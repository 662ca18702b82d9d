"""Lake Shore Model 240 input module (2P / 8P) over USB serial (or any Transport).

The 240 has no status register (no ``*ESR?``); a command it ignores is silent.
So every setter here reads the setting back and raises ``InstrumentError`` on a
mismatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .base import Identity, Instrument, Pacing, quote_name
from .commands import Query, fields, record, text
from .curve_commands import CurveAccess, CurveCommands
from .curve_commands import CurveHeader as CurveHeader  # part of this module's API
from .errors import BadReply, InstrumentError
from .parse import decode, parse_float, parse_int, split_fields
from .readings import LS240_STATUS_BITS, Reading, decode_status
from .transport import SerialFraming, SerialTransport, Transport, VisaTransport, visa_serial_settings

PACING = Pacing(after_command=0.010, min_interval=0.010)
SENSOR_UNITS = {1: "V", 2: "ohm", 3: "ohm"}


def same_to_six_digits(a: float, b: float) -> bool:
    """Equal as the 240 keeps curve values: six digits, integer digits included (``+0.14590``)."""
    digits = len(str(int(abs(a)))) if abs(a) >= 1 else 1
    return abs(a - b) <= 0.5 * 10.0 ** (digits - 6) * 1.001


SERIAL_FRAMING = SerialFraming(baudrate=115200, bytesize=8, parity="N", stopbits=1)  # 240 manual p.38


@dataclass(frozen=True)
class InputType:
    """INTYPE: sensor 1 diode / 2 PT / 3 NTC, autorange, range, current reversal, units 1 K 2 C 3 sensor 4 F, enabled."""

    sensor: int
    autorange: int
    range: int
    current_reversal: int
    units: int
    enabled: int


T = TypeVar("T")

# RDGST? bits that void a reading, on the 240 and on the 336/350 alike (240 manual p.49; 350 manual p.154)
SENSOR_BAD = 1 | 64 | 128  # invalid reading, sensor units zero (240: under range), sensor units over range
KELVIN_BAD = SENSOR_BAD | 16 | 32  # and past either end of the curve


def read_input(inst: Instrument, ch: str, sensor_units: str, bits_table: dict[int, str]) -> Reading:
    """``KRDG?;SRDG?;RDGST?`` of one input in one exchange, timed at the reply (a 240, 336 or 350)."""
    q = f"KRDG? {ch};SRDG? {ch};RDGST? {ch}"
    raw = inst.query_raw(q)
    t = time.time()
    k, s, st = split_fields(raw, 3, q, sep=";")
    kelvin, sensor, status = parse_float(k, q), parse_float(s, q), parse_int(st, q)
    if not 0 <= status <= 255:
        raise BadReply("reading status out of range 0-255", raw, q)
    sensor_bad = bool(status & SENSOR_BAD)
    kelvin_bad = bool(status & KELVIN_BAD) or kelvin <= 0.0
    bits = decode_status(status, bits_table)
    return Reading(ch, kelvin, sensor, sensor_units, status, bits, t, not kelvin_bad, not sensor_bad)


def _profibus_status(raw: bytes, query: str) -> int:
    """``PROFISTAT?`` answers ``0,``: one integer and a trailing comma."""
    return parse_int(decode(raw, query).rstrip(","), query)


class Model240(CurveCommands, Instrument):
    expected_model_prefix = "MODEL240"

    def __init__(
        self,
        transport: Transport,
        timeout: float = 1.0,
        pacing: Pacing | None = None,
        expected_serial: str | None = None,
    ) -> None:
        super().__init__(transport, timeout, pacing or PACING, expected_serial)
        self.channel_count = 8

    @classmethod
    def serial(cls, device: str, **kw: Any) -> Model240:
        return cls(SerialTransport(device, **SERIAL_FRAMING), **kw)

    @classmethod
    def visa(cls, resource: str, **kw: Any) -> Model240:
        """Any VISA resource; an ``ASRL`` one is opened 115200 8N1 like the USB port it is."""
        return cls(VisaTransport(resource, serial_settings=visa_serial_settings(**SERIAL_FRAMING)), **kw)

    def check_identity(self, ident: Identity) -> None:
        super().check_identity(ident)
        self.channel_count = 2 if ident.model.endswith("-2P") else 8

    # -- argument specs: the signatures of the declared queries below -----------
    def _ch(self, channel: int) -> int:
        """An input 1-2 (2P) or 1-8 (8P); the count is known once ``*IDN?`` was read."""
        ch = int(channel)
        if not 1 <= ch <= self.channel_count:
            raise ValueError(f"input {channel!r} is not 1-{self.channel_count}")
        return ch

    def _slot(self, slot: int) -> int:
        """A PROFIBUS slot."""
        return slot

    # -- readings ------------------------------------------------------------
    kelvin = Query("KRDG? {}", parse_float, "Measure an input's temperature in kelvin.", _ch)
    celsius = Query("CRDG? {}", parse_float, "Measure an input's temperature in degrees Celsius.", _ch)
    fahrenheit = Query("FRDG? {}", parse_float, "Measure an input's temperature in degrees Fahrenheit.", _ch)
    sensor = Query("SRDG? {}", parse_float, "Measure an input's sensor reading (volts or ohms).", _ch)
    reading_status = Query("RDGST? {}", parse_int, "Get an input's reading status bits (LS240_STATUS_BITS).", _ch)

    def read(self, channel: int, sensor_units: str = "V") -> Reading:
        """Kelvin, sensor units and status of one input in one exchange, timed at the reply."""
        return read_input(self, str(self._ch(channel)), sensor_units, LS240_STATUS_BITS)

    # -- settings: the 240 is silent when it ignores one, so each is read back ------
    def _write_checked(
        self, message: str, read_back: Callable[[], T], expected: T, refused: Callable[[T], str] | None = None
    ) -> None:
        """Write a setting, read it back, raise ``InstrumentError`` unless it reads ``expected``."""
        self.write(message)
        got = read_back()
        if got != expected:
            raise InstrumentError(refused(got) if refused else f"240 ignored {message}")

    # -- inputs --------------------------------------------------------------
    input_type = Query(
        "INTYPE? {}",
        record(InputType, *[parse_int] * 6),
        "Get an input's INTYPE: sensor, autorange, range, reversal, units, enabled.",
        _ch,
    )

    def set_input_type(self, channel: int, s: InputType) -> None:
        ch = self._ch(channel)
        self.write(f"INTYPE {ch},{s.sensor},{s.autorange},{s.range},{s.current_reversal},{s.units},{s.enabled}")
        got = self.input_type(ch)
        # With autorange on, the range read back is the one in use; compare the rest.
        if (got.sensor, got.autorange, got.current_reversal, got.units, got.enabled) != (
            s.sensor,
            s.autorange,
            s.current_reversal,
            s.units,
            s.enabled,
        ) or (not s.autorange and got.range != s.range):
            raise InstrumentError(f"240 ignored INTYPE {ch}: set {s}, read back {got}")

    input_name = Query("INNAME? {}", text, "Get an input's name.", _ch)

    def set_input_name(self, channel: int, name: str) -> None:
        ch = self._ch(channel)
        self._write_checked(
            f"INNAME {ch},{quote_name(name, 15)}",
            lambda: self.input_name(ch),
            name,
            lambda got: f"240 ignored INNAME {ch}: set {name!r}, read back {got!r}",
        )

    module_name = Query("MODNAME?", text, "Get the module's name.")

    def set_module_name(self, name: str) -> None:
        self._write_checked(
            f"MODNAME {quote_name(name, 32)}", self.module_name, name, lambda got: f"240 ignored MODNAME {name!r}"
        )

    filter = Query("FILTER? {}", parse_int, "Get an input's filter length in points (1 off).", _ch)

    def set_filter(self, channel: int, points: int) -> None:
        ch = self._ch(channel)
        if not 1 <= points <= 100:
            raise ValueError(f"filter points {points} not 1-100")
        self._write_checked(
            f"FILTER {ch},{points}",
            lambda: self.filter(ch),
            points,
            lambda got: f"240 ignored FILTER {ch},{points} (read back {got}; 8P and reversal-on refuse it)",
        )

    brightness = Query("BRIGT?", parse_int, "Get the display brightness index.")

    def set_brightness(self, level: int) -> None:
        self._write_checked(f"BRIGT {level}", self.brightness, level)

    profibus_address = Query("ADDR?", parse_int, "Get the PROFIBUS address.")
    profibus_slots = Query("PROFINUM?", parse_int, "Get the number of PROFIBUS slots.")
    profibus_slot = Query("PROFISLOT? {}", fields(parse_int, parse_int), "Get a PROFIBUS slot's (input, units).", _slot)
    profibus_status = Query("PROFISTAT?", _profibus_status, "Get the PROFIBUS status.")

    def set_profibus_address(self, address: int) -> None:
        if not 1 <= address <= 126:
            raise ValueError("PROFIBUS address is 1-126")
        self._write_checked(f"ADDR {address}", self.profibus_address, address)

    def set_profibus_slots(self, count: int) -> None:
        self._write_checked(f"PROFINUM {count}", self.profibus_slots, count)

    def set_profibus_slot(self, slot: int, channel: int, units: int) -> None:
        self._write_checked(f"PROFISLOT {slot},{channel},{units}", lambda: self.profibus_slot(slot), (channel, units))

    def factory_reset(self) -> None:
        self.write("DFLT 99")

    # -- curves (commands in CurveCommands; a 240 curve belongs to its input) -------
    def _curve_number(self, number: int, access: CurveAccess) -> int:
        return self._ch(number)

    curve_formats = (2, 3, 4)  # V/K, ohm/K, log ohm/K (240 manual, CRVHDR)
    heater_outputs = ()  # an input module: nothing for control to set

    @property
    def curve_slots(self) -> range:
        """One curve per input: the curve number is the input number."""
        return range(1, self.channel_count + 1)

    @property
    def user_curve_slots(self) -> range:
        return self.curve_slots

    def _send_setting(self, message: str) -> None:
        self.write(message)

    @staticmethod
    def _same_curve_value(a: float, b: float) -> bool:
        return same_to_six_digits(a, b)

    def configuration(self, channels: list[int]) -> dict:
        snap: dict = {"identity": vars(self.identity) if self.identity else None, "channels": {}}
        for ch in channels:
            it = self.input_type(ch)
            snap["channels"][str(ch)] = {
                "name": self.input_name(ch),
                "intype": vars(it),
                "curve": vars(self.curve_header(ch)),
            }
        snap["module"] = self.module_name()
        return snap

    # -- what the appliance reads about this model (appliance.models): a new model brings its own --
    STATUS_BITS = LS240_STATUS_BITS  # RDGST? bit -> name (status_bits, T_OVER/T_UNDER for the alarms)
    OCS_AGENT_CLASS = "Lakeshore240Agent"  # the socs agent whose OCS feeds the ocs uplink imitates

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]:
        """The field names socs's Lakeshore240Agent writes: ``Channel_<n>_T`` / ``Channel_<n>_V``."""
        return f"Channel_{channel}_T", f"Channel_{channel}_V"
