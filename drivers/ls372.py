"""Lake Shore Model 372 AC resistance bridge: typed methods over any Transport.

Every configuration command is sent as ``CMD ...;*ESR?`` and the Standard Event
Status Register is decoded, so a command the bridge ignored raises
``InstrumentError`` at the call instead of passing silently (the 372 never
answers a bad command; it only sets an ESR bit).
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from .base import Instrument, Pacing, check_channel, quote_name
from .curves import Curve
from .errors import BadReply, InstrumentError
from .parse import decode, parse_float, parse_int, split_fields
from .readings import LS372_STATUS_BITS, Reading, decode_status
from .transport import SerialTransport, TcpTransport, Transport, VisaTransport, visa_serial_settings

SERIAL_FRAMING = dict(baudrate=57600, bytesize=7, parity="O", stopbits=1)  # USB: 57600 7O1, no handshake

CHANNELS = {"A"} | {str(i) for i in range(1, 17)}
MEASUREMENT_CHANNELS = [str(i) for i in range(1, 17)]

# *ESR? bits (IEEE 488.2; lakeshore StandardEventRegister).
ESR_OPC, ESR_QUERY_ERROR, ESR_EXECUTION_ERROR, ESR_COMMAND_ERROR, ESR_POWER_ON = 1, 4, 16, 32, 128
ESR_ERRORS = {ESR_QUERY_ERROR: "query error", ESR_EXECUTION_ERROR: "execution error",
              ESR_COMMAND_ERROR: "command error (invalid command or query)"}

TCP_PACING = Pacing(after_command=0.05)
USB_PACING = Pacing(after_command=0.05, min_interval=0.05, after_query=0.05)
CURVE_POINT_GAP = 0.065  # socs found 50 ms lost points over TCP; 61-65 ms worked


class OutputMode(enum.IntEnum):
    OFF = 0
    MONITOR_OUT = 1
    OPEN_LOOP = 2
    ZONE = 3
    STILL = 4
    CLOSED_LOOP = 5
    WARM_UP = 6


@dataclass(frozen=True)
class ScanState:
    channel: str
    autoscan: bool


@dataclass(frozen=True)
class InputSetup:
    """INSET: enable, dwell 1-200 s, pause 3-200 s, curve 0-59, tempco 1 neg / 2 pos."""

    enabled: bool
    dwell: int
    pause: int
    curve: int
    tempco: int


@dataclass(frozen=True)
class InputType:
    """INTYPE: mode 0 voltage / 1 current, excitation index, autorange 0/1/2, range index, cs shunt, units 1 K / 2 ohm."""

    mode: int
    excitation: int
    autorange: int
    range: int
    cs_shunt: int
    units: int


@dataclass(frozen=True)
class FilterSetup:
    on: bool
    settle: int
    window: int


@dataclass(frozen=True)
class CurveHeader:
    name: str
    serial: str
    data_format: int
    limit: float
    coefficient: int


@dataclass(frozen=True)
class OutputSetup:
    """OUTMODE: mode, input (channel or A), powerup enable, polarity, filter, delay 1-255 s."""

    mode: OutputMode
    input: str
    powerup: int
    polarity: int
    filter: int
    delay: int


@dataclass(frozen=True)
class HeaterSetup:
    resistance: float
    max_current: int
    max_user_current: float
    display: int  # 1 current, 2 power


@dataclass(frozen=True)
class PID:
    p: float
    i: float
    d: float


class Model372(Instrument):
    expected_model_prefix = "MODEL372"

    def __init__(self, transport: Transport, timeout: float = 2.0, pacing: Pacing | None = None,
                 expected_serial: str | None = None) -> None:
        if pacing is None:
            pacing = USB_PACING if isinstance(transport, SerialTransport) else TCP_PACING
        super().__init__(transport, timeout, pacing, expected_serial)

    @classmethod
    def tcp(cls, host: str, port: int = 7777, **kw) -> "Model372":
        return cls(TcpTransport(host, port), **kw)

    @classmethod
    def serial(cls, device: str, **kw) -> "Model372":
        return cls(SerialTransport(device, **SERIAL_FRAMING), **kw)

    @classmethod
    def visa(cls, resource: str, **kw) -> "Model372":
        """Any VISA resource; an ``ASRL`` one is opened 57600 7O1 like the USB port it is."""
        transport = VisaTransport(resource, serial_settings=visa_serial_settings(**SERIAL_FRAMING))
        if resource.upper().startswith("ASRL"):
            kw.setdefault("pacing", USB_PACING)
        return cls(transport, **kw)

    # -- status register ----------------------------------------------------
    def esr(self) -> int:
        """Get (and clear) the Standard Event Status Register."""
        return parse_int(self.query_raw("*ESR?"), "*ESR?")

    @staticmethod
    def _raise_for_esr(esr: int, message: str) -> None:
        errors = [name for bit, name in ESR_ERRORS.items() if esr & bit]
        if errors:
            raise InstrumentError(f"372 refused {message!r}: {', '.join(errors)} (ESR={esr})", esr)

    def command(self, message: str) -> None:
        """Send a configuration command and raise if the bridge flags it in ESR."""
        q = f"{message};*ESR?"
        esr = parse_int(self.query_raw(q), q)
        self._raise_for_esr(esr, message)
        time.sleep(self.pacing.after_command)

    def clear_status(self) -> None:
        self.write("*CLS")

    def reset(self) -> None:
        self.write("*RST")

    def operation_complete(self) -> bool:
        return parse_int(self.query_raw("*OPC?"), "*OPC?") == 1

    # -- readings -------------------------------------------------------------
    def _ch(self, channel: str | int) -> str:
        return check_channel(channel, CHANNELS)

    def kelvin(self, channel: str | int) -> float:
        q = f"KRDG? {self._ch(channel)}"
        return parse_float(self.query_raw(q), q)

    def resistance(self, channel: str | int) -> float:
        q = f"RDGR? {self._ch(channel)}"
        return parse_float(self.query_raw(q), q)

    def sensor(self, channel: str | int) -> float:
        q = f"SRDG? {self._ch(channel)}"
        return parse_float(self.query_raw(q), q)

    def excitation_power(self, channel: str | int) -> float:
        q = f"RDGPWR? {self._ch(channel)}"
        return parse_float(self.query_raw(q), q)

    def quadrature(self, channel: str | int) -> float:
        ch = self._ch(channel)
        if ch == "A":
            raise ValueError("quadrature is measured on channels 1-16 only")
        q = f"QRDG? {ch}"
        return parse_float(self.query_raw(q), q)

    def reading_status(self, channel: str | int) -> int:
        q = f"RDGST? {self._ch(channel)}"
        return parse_int(self.query_raw(q), q)

    def read(self, channel: str | int) -> Reading:
        """Kelvin, ohms and status of one channel in a single exchange, timed at the reply."""
        ch = self._ch(channel)
        q = f"KRDG? {ch};RDGR? {ch};RDGST? {ch}"
        raw = self.query_raw(q)
        t = time.time()
        k, r, st = split_fields(raw, 3, q, sep=";")
        kelvin, ohms, status = parse_float(k, q), parse_float(r, q), parse_int(st, q)
        if status < 0 or status > 255:
            raise BadReply("reading status out of range 0-255", raw, q)
        bits = decode_status(status, LS372_STATUS_BITS)
        sensor_bad = bool(status & (1 | 2 | 4 | 8 | 16 | 32))
        kelvin_bad = sensor_bad or bool(status & (64 | 128)) or kelvin <= 0.0
        return Reading(ch, kelvin, ohms, "ohm", status, bits, t, not kelvin_bad, not sensor_bad)

    # -- scanner ---------------------------------------------------------------
    def scan(self) -> ScanState:
        raw = self.query_raw("SCAN?")
        ch, auto = split_fields(raw, 2, "SCAN?")
        channel = ch.strip().upper()
        if channel != "A":
            channel = str(parse_int(channel, "SCAN?"))
        if channel not in CHANNELS:
            raise BadReply("SCAN? names no channel", raw, "SCAN?")
        return ScanState(channel, parse_int(auto, "SCAN?") == 1)

    def set_scan(self, channel: str | int, autoscan: bool) -> None:
        ch = check_channel(channel, set(MEASUREMENT_CHANNELS))
        self.command(f"SCAN {ch},{int(autoscan)}")

    def input_setup(self, channel: str | int) -> InputSetup:
        q = f"INSET? {self._ch(channel)}"
        f = split_fields(self.query_raw(q), 5, q)
        return InputSetup(parse_int(f[0], q) == 1, parse_int(f[1], q), parse_int(f[2], q),
                          parse_int(f[3], q), parse_int(f[4], q))

    def set_input_setup(self, channel: str | int, s: InputSetup) -> None:
        if not (1 <= s.dwell <= 200 and 3 <= s.pause <= 200 and 0 <= s.curve <= 59 and s.tempco in (1, 2)):
            raise ValueError(f"INSET values out of range: {s}")
        self.command(f"INSET {self._ch(channel)},{int(s.enabled)},{s.dwell},{s.pause},{s.curve},{s.tempco}")

    def input_type(self, channel: str | int) -> InputType:
        q = f"INTYPE? {self._ch(channel)}"
        f = [parse_int(x, q) for x in split_fields(self.query_raw(q), 6, q)]
        return InputType(*f)

    def set_input_type(self, channel: str | int, s: InputType) -> None:
        self.command(f"INTYPE {self._ch(channel)},{s.mode},{s.excitation},{s.autorange},{s.range},"
                     f"{s.cs_shunt},{s.units}")

    def filter(self, channel: str | int) -> FilterSetup:
        q = f"FILTER? {self._ch(channel)}"
        f = [parse_int(x, q) for x in split_fields(self.query_raw(q), 3, q)]
        return FilterSetup(f[0] == 1, f[1], f[2])

    def set_filter(self, channel: str | int, s: FilterSetup) -> None:
        ch = "0" if str(channel) == "0" else self._ch(channel)
        self.command(f"FILTER {ch},{int(s.on)},{s.settle},{s.window}")

    def input_name(self, channel: str | int) -> str:
        return self.query(f"INNAME? {self._ch(channel)}").strip()

    def set_input_name(self, channel: str | int, name: str) -> None:
        self.command(f"INNAME {self._ch(channel)},{quote_name(name, 15)}")

    def temperature_limit(self, channel: str | int) -> float:
        q = f"TLIMIT? {self._ch(channel)}"
        return parse_float(self.query_raw(q), q)

    def set_temperature_limit(self, channel: str | int, kelvin: float) -> None:
        self.command(f"TLIMIT {self._ch(channel)},{kelvin:g}")

    # -- curves ----------------------------------------------------------------
    def curve_header(self, number: int) -> CurveHeader:
        if not 1 <= number <= 59:
            raise ValueError(f"curve number {number} is not 1-59")
        q = f"CRVHDR? {number}"
        f = split_fields(self.query_raw(q), 5, q)
        return CurveHeader(f[0].strip(), f[1].strip(), parse_int(f[2], q), parse_float(f[3], q), parse_int(f[4], q))

    def set_curve_header(self, number: int, h: CurveHeader) -> None:
        if not 21 <= number <= 59:
            raise ValueError(f"user curves are 21-59, not {number}")
        self.command(f"CRVHDR {number},{quote_name(h.name, 15)},{quote_name(h.serial, 10)},"
                     f"{h.data_format},{h.limit:g},{h.coefficient}")

    def curve_point(self, number: int, index: int) -> tuple[float, float]:
        q = f"CRVPT? {number},{index}"
        raw = self.query_raw(q)
        f = decode(raw, q).split(",")
        if len(f) not in (2, 3):
            raise BadReply("expected units,temperature[,curvature]", raw, q)
        return parse_float(f[0], q), parse_float(f[1], q)

    def set_curve_point(self, number: int, index: int, units: float, kelvin: float) -> None:
        self.command(f"CRVPT {number},{index},{units:.6g},{kelvin:.6g}")

    def delete_curve(self, number: int) -> None:
        if not 21 <= number <= 59:
            raise ValueError(f"user curves are 21-59, not {number}")
        self.command(f"CRVDEL {number}")

    def upload_curve(self, number: int, curve: Curve, verify: bool = True) -> None:
        """Write a whole curve with the pacing socs found necessary, then read every point back."""
        self.delete_curve(number)
        self.set_curve_header(number, CurveHeader(curve.name[:15], curve.serial[:10], curve.data_format,
                                                  curve.limit, curve.coefficient))
        for i, (u, t) in enumerate(curve.points, 1):
            self.set_curve_point(number, i, u, t)
            time.sleep(CURVE_POINT_GAP)
        if verify:
            for i, (u, t) in enumerate(curve.points, 1):
                got = self.curve_point(number, i)
                if not (_close(got[0], u) and _close(got[1], t)):
                    raise InstrumentError(f"curve {number} point {i}: wrote ({u:.6g}, {t:.6g}), read back {got}")

    def download_curve(self, number: int) -> Curve:
        h = self.curve_header(number)
        points = []
        for i in range(1, 201):
            u, t = self.curve_point(number, i)
            if u == 0 and t == 0:
                break
            points.append((u, t))
        return Curve(h.name, h.serial, h.data_format, h.limit, h.coefficient, points)

    # -- heaters -----------------------------------------------------------------
    def output_mode(self, output: int) -> OutputSetup:
        q = f"OUTMODE? {output}"
        f = split_fields(self.query_raw(q), 6, q)
        inp = f[1].strip().upper()
        inp = inp if inp == "A" else str(parse_int(inp, q))
        return OutputSetup(OutputMode(parse_int(f[0], q)), inp, parse_int(f[2], q), parse_int(f[3], q),
                           parse_int(f[4], q), parse_int(f[5], q))

    def set_output_mode(self, output: int, s: OutputSetup) -> None:
        self.command(f"OUTMODE {output},{int(s.mode)},{s.input},{s.powerup},{s.polarity},{s.filter},{s.delay}")

    def heater_range(self, output: int) -> int:
        q = f"RANGE? {output}"
        return parse_int(self.query_raw(q), q)

    def set_heater_range(self, output: int, value: int) -> None:
        self.command(f"RANGE {output},{value}")

    def heater_setup(self, output: int) -> HeaterSetup:
        q = f"HTRSET? {output}"
        f = split_fields(self.query_raw(q), 4, q)
        return HeaterSetup(parse_float(f[0], q), parse_int(f[1], q), parse_float(f[2], q), parse_int(f[3], q))

    def set_heater_setup(self, output: int, s: HeaterSetup) -> None:
        self.command(f"HTRSET {output},{s.resistance:g},{s.max_current},{s.max_user_current:g},{s.display}")

    def pid(self, output: int) -> PID:
        q = f"PID? {output}"
        f = [parse_float(x, q) for x in split_fields(self.query_raw(q), 3, q)]
        return PID(*f)

    def set_pid(self, output: int, p: PID) -> None:
        self.command(f"PID {output},{p.p:g},{p.i:g},{p.d:g}")

    def setpoint(self, output: int) -> float:
        q = f"SETP? {output}"
        return parse_float(self.query_raw(q), q)

    def set_setpoint(self, output: int, value: float) -> None:
        self.command(f"SETP {output},{value:g}")

    def manual_output(self, output: int) -> float:
        q = f"MOUT? {output}"
        return parse_float(self.query_raw(q), q)

    def set_manual_output(self, output: int, value: float) -> None:
        self.command(f"MOUT {output},{value:g}")

    def sample_heater_output(self) -> float:
        return parse_float(self.query_raw("HTR?"), "HTR?")

    def still_output(self) -> float:
        return parse_float(self.query_raw("STILL?"), "STILL?")

    def set_still_output(self, percent: float) -> None:
        self.command(f"STILL {percent:g}")

    def analog_output(self, output: int) -> float:
        q = f"AOUT? {output}"
        return parse_float(self.query_raw(q), q)

    def excitation_frequency(self, which: str = "0") -> int:
        """Get the excitation frequency index (1-5 = 9.8, 13.7, 16.2, 11.6, 18.2 Hz); ``0`` measurement, ``A`` control."""
        q = f"FREQ? {which}"
        return parse_int(self.query_raw(q), q)

    def set_excitation_frequency(self, which: str, index: int) -> None:
        if str(which).upper() not in ("0", "A") or not 1 <= index <= 5:
            raise ValueError("FREQ takes 0 or A and an index 1-5")
        self.command(f"FREQ {str(which).upper()},{index}")

    def common_mode_reduction(self) -> bool:
        return parse_int(self.query_raw("CMR?"), "CMR?") == 1

    def set_common_mode_reduction(self, on: bool) -> None:
        self.command(f"CMR {int(on)}")

    def warmup(self) -> tuple[int, float]:
        """Get the warm-up heater setup: (auto-control 0/1, current %)."""
        a, b = split_fields(self.query_raw("WARMUP?"), 2, "WARMUP?")
        return parse_int(a, "WARMUP?"), parse_float(b, "WARMUP?")

    def set_warmup(self, auto: int, current: float) -> None:
        self.command(f"WARMUP {auto},{current:g}")

    # -- snapshot ------------------------------------------------------------------
    def configuration(self, channels: list[str]) -> dict:
        """Everything about the listed channels that decides what a reading means."""
        snap: dict = {"identity": vars(self.identity) if self.identity else None, "channels": {}}
        curves: dict[int, dict] = {}
        for ch in channels:
            inset = self.input_setup(ch)
            entry = {"name": self.input_name(ch), "inset": vars(inset), "intype": vars(self.input_type(ch))}
            if inset.curve and inset.curve not in curves:
                curves[inset.curve] = vars(self.curve_header(inset.curve))
            snap["channels"][ch] = entry
        snap["curves"] = {str(k): v for k, v in curves.items()}
        scan = vars(self.scan())
        if scan["autoscan"]:
            # the channel the scanner is on now is state, not configuration: left out, so a
            # snapshot is stored when the configuration changes, not at every scanner step
            del scan["channel"]
        snap["scan"] = scan
        return snap


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-5 * max(1.0, abs(a), abs(b))
