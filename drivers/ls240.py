"""Lake Shore Model 240 input module (2P / 8P) over USB serial (or any Transport).

The 240 has no status register (no ``*ESR?``); a command it ignores is silent.
So every setter here reads the setting back and raises ``InstrumentError`` on a
mismatch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .base import Identity, Instrument, Pacing, quote_name
from .curves import Curve
from .errors import BadReply, InstrumentError
from .parse import decode, parse_float, parse_int, split_fields
from .readings import LS240_STATUS_BITS, Reading, decode_status
from .transport import SerialTransport, Transport, VisaTransport, visa_serial_settings

PACING = Pacing(after_command=0.010, min_interval=0.010)
SENSOR_UNITS = {1: "V", 2: "ohm", 3: "ohm"}


def same_to_six_digits(a: float, b: float) -> bool:
    """Equal as the 240 keeps curve values: six digits, integer digits included (``+0.14590``)."""
    digits = len(str(int(abs(a)))) if abs(a) >= 1 else 1
    return abs(a - b) <= 0.5 * 10.0 ** (digits - 6) * 1.001


SERIAL_FRAMING = dict(baudrate=115200, bytesize=8, parity="N", stopbits=1)  # 240 manual p.38


@dataclass(frozen=True)
class InputType:
    """INTYPE: sensor 1 diode / 2 PT / 3 NTC, autorange, range, current reversal, units 1 K 2 C 3 sensor 4 F, enabled."""

    sensor: int
    autorange: int
    range: int
    current_reversal: int
    units: int
    enabled: int


@dataclass(frozen=True)
class CurveHeader:
    name: str
    serial: str
    data_format: int
    limit: float
    coefficient: int


class Model240(Instrument):
    expected_model_prefix = "MODEL240"

    def __init__(self, transport: Transport, timeout: float = 1.0, pacing: Pacing | None = None,
                 expected_serial: str | None = None) -> None:
        super().__init__(transport, timeout, pacing or PACING, expected_serial)
        self.channel_count = 8

    @classmethod
    def serial(cls, device: str, **kw) -> "Model240":
        return cls(SerialTransport(device, **SERIAL_FRAMING), **kw)

    @classmethod
    def visa(cls, resource: str, **kw) -> "Model240":
        """Any VISA resource; an ``ASRL`` one is opened 115200 8N1 like the USB port it is."""
        return cls(VisaTransport(resource, serial_settings=visa_serial_settings(**SERIAL_FRAMING)), **kw)

    def check_identity(self, ident: Identity) -> None:
        super().check_identity(ident)
        self.channel_count = 2 if ident.model.endswith("-2P") else 8

    def _ch(self, channel: int | str) -> int:
        ch = int(channel)
        if not 1 <= ch <= self.channel_count:
            raise ValueError(f"input {channel!r} is not 1-{self.channel_count}")
        return ch

    # -- readings ------------------------------------------------------------
    def _float(self, q: str) -> float:
        return parse_float(self.query_raw(q), q)

    def kelvin(self, channel: int) -> float:
        return self._float(f"KRDG? {self._ch(channel)}")

    def celsius(self, channel: int) -> float:
        return self._float(f"CRDG? {self._ch(channel)}")

    def fahrenheit(self, channel: int) -> float:
        return self._float(f"FRDG? {self._ch(channel)}")

    def sensor(self, channel: int) -> float:
        return self._float(f"SRDG? {self._ch(channel)}")

    def reading_status(self, channel: int) -> int:
        q = f"RDGST? {self._ch(channel)}"
        return parse_int(self.query_raw(q), q)

    def read(self, channel: int, sensor_units: str = "V") -> Reading:
        """Kelvin, sensor units and status of one input in one exchange, timed at the reply."""
        ch = self._ch(channel)
        q = f"KRDG? {ch};SRDG? {ch};RDGST? {ch}"
        raw = self.query_raw(q)
        t = time.time()
        k, s, st = split_fields(raw, 3, q, sep=";")
        kelvin, sensor, status = parse_float(k, q), parse_float(s, q), parse_int(st, q)
        if not 0 <= status <= 255:
            raise BadReply("reading status out of range 0-255", raw, q)
        bits = decode_status(status, LS240_STATUS_BITS)
        sensor_bad = bool(status & (1 | 64 | 128))
        kelvin_bad = sensor_bad or bool(status & (16 | 32)) or kelvin <= 0.0
        return Reading(str(ch), kelvin, sensor, sensor_units, status, bits, t, not kelvin_bad, not sensor_bad)

    # -- inputs --------------------------------------------------------------
    def input_type(self, channel: int) -> InputType:
        q = f"INTYPE? {self._ch(channel)}"
        return InputType(*[parse_int(x, q) for x in split_fields(self.query_raw(q), 6, q)])

    def set_input_type(self, channel: int, s: InputType) -> None:
        ch = self._ch(channel)
        self.write(f"INTYPE {ch},{s.sensor},{s.autorange},{s.range},{s.current_reversal},{s.units},{s.enabled}")
        got = self.input_type(ch)
        # With autorange on, the range read back is the one in use; compare the rest.
        if (got.sensor, got.autorange, got.current_reversal, got.units, got.enabled) != (
            s.sensor, s.autorange, s.current_reversal, s.units, s.enabled
        ) or (not s.autorange and got.range != s.range):
            raise InstrumentError(f"240 ignored INTYPE {ch}: set {s}, read back {got}")

    def input_name(self, channel: int) -> str:
        return self.query(f"INNAME? {self._ch(channel)}").strip()

    def set_input_name(self, channel: int, name: str) -> None:
        ch = self._ch(channel)
        self.write(f"INNAME {ch},{quote_name(name, 15)}")
        got = self.input_name(ch)
        if got != name:
            raise InstrumentError(f"240 ignored INNAME {ch}: set {name!r}, read back {got!r}")

    def module_name(self) -> str:
        return self.query("MODNAME?").strip()

    def set_module_name(self, name: str) -> None:
        self.write(f"MODNAME {quote_name(name, 32)}")
        if self.module_name() != name:
            raise InstrumentError(f"240 ignored MODNAME {name!r}")

    def filter(self, channel: int) -> int:
        q = f"FILTER? {self._ch(channel)}"
        return parse_int(self.query_raw(q), q)

    def set_filter(self, channel: int, points: int) -> None:
        ch = self._ch(channel)
        if not 1 <= points <= 100:
            raise ValueError(f"filter points {points} not 1-100")
        self.write(f"FILTER {ch},{points}")
        got = self.filter(ch)
        if got != points:
            raise InstrumentError(f"240 ignored FILTER {ch},{points} (read back {got}; 8P and reversal-on refuse it)")

    def brightness(self) -> int:
        return parse_int(self.query_raw("BRIGT?"), "BRIGT?")

    def set_brightness(self, level: int) -> None:
        self.write(f"BRIGT {level}")
        if self.brightness() != level:
            raise InstrumentError(f"240 ignored BRIGT {level}")

    def profibus_address(self) -> int:
        return parse_int(self.query_raw("ADDR?"), "ADDR?")

    def profibus_slots(self) -> int:
        return parse_int(self.query_raw("PROFINUM?"), "PROFINUM?")

    def profibus_slot(self, slot: int) -> tuple[int, int]:
        q = f"PROFISLOT? {slot}"
        a, b = split_fields(self.query_raw(q), 2, q)
        return parse_int(a, q), parse_int(b, q)

    def profibus_status(self) -> int:
        raw = self.query_raw("PROFISTAT?")
        return parse_int(decode(raw, "PROFISTAT?").rstrip(","), "PROFISTAT?")

    def set_profibus_address(self, address: int) -> None:
        if not 1 <= address <= 126:
            raise ValueError("PROFIBUS address is 1-126")
        self.write(f"ADDR {address}")
        if self.profibus_address() != address:
            raise InstrumentError(f"240 ignored ADDR {address}")

    def set_profibus_slots(self, count: int) -> None:
        self.write(f"PROFINUM {count}")
        if self.profibus_slots() != count:
            raise InstrumentError(f"240 ignored PROFINUM {count}")

    def set_profibus_slot(self, slot: int, channel: int, units: int) -> None:
        self.write(f"PROFISLOT {slot},{channel},{units}")
        if self.profibus_slot(slot) != (channel, units):
            raise InstrumentError(f"240 ignored PROFISLOT {slot},{channel},{units}")

    def factory_reset(self) -> None:
        self.write("DFLT 99")

    # -- curves --------------------------------------------------------------
    def curve_header(self, channel: int) -> CurveHeader:
        q = f"CRVHDR? {self._ch(channel)}"
        f = split_fields(self.query_raw(q), 5, q)
        return CurveHeader(f[0].strip(), f[1].strip(), parse_int(f[2], q), parse_float(f[3], q), parse_int(f[4], q))

    def set_curve_header(self, channel: int, h: CurveHeader) -> None:
        ch = self._ch(channel)
        self.write(f"CRVHDR {ch},{quote_name(h.name, 15)},{quote_name(h.serial, 10)},{h.data_format},"
                   f"{h.limit:g},{h.coefficient}")

    def curve_point(self, channel: int, index: int) -> tuple[float, float]:
        q = f"CRVPT? {self._ch(channel)},{index}"
        raw = self.query_raw(q)
        f = decode(raw, q).split(",")
        if len(f) not in (2, 3):
            raise BadReply("expected units,temperature", raw, q)
        return parse_float(f[0], q), parse_float(f[1], q)

    def set_curve_point(self, channel: int, index: int, units: float, kelvin: float) -> None:
        self.write(f"CRVPT {self._ch(channel)},{index},{units:.6g},{kelvin:.6g}")

    def delete_curve(self, channel: int) -> None:
        self.write(f"CRVDEL {self._ch(channel)}")

    def upload_curve(self, channel: int, curve: Curve, verify: bool = True) -> None:
        self.delete_curve(channel)
        self.set_curve_header(channel, CurveHeader(curve.name[:15], curve.serial[:10], curve.data_format,
                                                   curve.limit, curve.coefficient))
        for i, (u, t) in enumerate(curve.points, 1):
            self.set_curve_point(channel, i, u, t)
        if verify:
            for i, (u, t) in enumerate(curve.points, 1):
                got = self.curve_point(channel, i)
                if not (same_to_six_digits(got[0], u) and same_to_six_digits(got[1], t)):
                    raise InstrumentError(f"curve {channel} point {i}: wrote ({u:.6g}, {t:.6g}), read back {got}")

    def download_curve(self, channel: int) -> Curve:
        h = self.curve_header(channel)
        points = []
        for i in range(1, 201):
            u, t = self.curve_point(channel, i)
            if u == 0 and t == 0:
                break
            points.append((u, t))
        return Curve(h.name, h.serial, h.data_format, h.limit, h.coefficient, points)

    def configuration(self, channels: list[int]) -> dict:
        snap: dict = {"identity": vars(self.identity) if self.identity else None, "channels": {}}
        for ch in channels:
            it = self.input_type(ch)
            snap["channels"][str(ch)] = {"name": self.input_name(ch), "intype": vars(it),
                                         "curve": vars(self.curve_header(ch))}
        snap["module"] = self.module_name()
        return snap
