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
from typing import Any

from .base import Pacing, check_channel, quote_name
from .commands import Query, fields, flag, record, text
from .curve_commands import CurveCommands
from .curve_commands import CurveHeader as CurveHeader  # part of this module's API
from .errors import BadReply
from .esr import ESR_ERRORS as ESR_ERRORS  # part of this module's API (now declared in drivers.esr)
from .esr import EsrCommands
from .parse import parse_float, parse_int, split_fields
from .readings import LS372_STATUS_BITS, Reading, decode_status
from .scanner import InputSetup as InputSetup  # part of this module's API (INSET)
from .scanner import ScannedInputs
from .transport import SerialFraming, SerialTransport, TcpTransport, Transport, VisaTransport, visa_serial_settings

SERIAL_FRAMING = SerialFraming(baudrate=57600, bytesize=7, parity="O", stopbits=1)  # USB: 57600 7O1, no handshake

CHANNELS = {"A"} | {str(i) for i in range(1, 17)}
MEASUREMENT_CHANNELS = [str(i) for i in range(1, 17)]


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


def _output_mode(field: str, query: str) -> OutputMode:
    return OutputMode(parse_int(field, query))


def _input_channel(field: str, query: str) -> str:
    """The OUTMODE input field: ``A`` or a channel number (``06`` -> ``"6"``)."""
    inp = field.strip().upper()
    return inp if inp == "A" else str(parse_int(inp, query))


class Model372(EsrCommands, CurveCommands, ScannedInputs):
    model_label = "372"
    expected_model_prefix = "MODEL372"
    curve_point_shape = "expected units,temperature[,curvature]"
    curve_formats = (3, 4, 7)  # ohm/K, log ohm/K, ohm/K cubic spline (372 manual, CRVHDR)
    user_curves_label = "user curves"
    curve_slots = range(1, 60)  # 1-20 standard, read-only
    user_curve_slots = range(21, 60)
    heater_outputs = (0, 1)  # sample and warm-up heater: what control may set
    has_control_input = True  # input A, read apart from the scanner
    max_curve = 59  # INSET's curve field: 0 none, 1-59

    def __init__(
        self,
        transport: Transport,
        timeout: float = 2.0,
        pacing: Pacing | None = None,
        expected_serial: str | None = None,
    ) -> None:
        if pacing is None:
            pacing = USB_PACING if isinstance(transport, SerialTransport) else TCP_PACING
        super().__init__(transport, timeout, pacing, expected_serial)

    @classmethod
    def tcp(cls, host: str, port: int = 7777, **kw: Any) -> Model372:
        return cls(TcpTransport(host, port), **kw)

    @classmethod
    def serial(cls, device: str, **kw: Any) -> Model372:
        return cls(SerialTransport(device, **SERIAL_FRAMING), **kw)

    @classmethod
    def visa(cls, resource: str, **kw: Any) -> Model372:
        """Any VISA resource; an ``ASRL`` one is opened 57600 7O1 like the USB port it is."""
        transport = VisaTransport(resource, serial_settings=visa_serial_settings(**SERIAL_FRAMING))
        if resource.upper().startswith("ASRL"):
            kw.setdefault("pacing", USB_PACING)
        return cls(transport, **kw)

    # -- argument specs: the signatures of the declared queries below -----------
    def _ch(self, channel: str | int) -> str:
        """A measurement channel 1-16 or the control input ``A`` (``"05"`` and ``5`` are ``"5"``)."""
        return check_channel(channel, CHANNELS)

    def _measurement_channel(self, channel: str | int) -> str:
        ch = self._ch(channel)
        if ch == "A":
            raise ValueError("quadrature is measured on channels 1-16 only")
        return ch

    def _output(self, output: int) -> int:
        """A heater output: 0 sample, 1 warm-up, 2 still/analog."""
        return output

    def _frequency_of(self, which: str = "0") -> str:
        """``0`` the measurement inputs, ``A`` the control input."""
        return which

    # -- readings -------------------------------------------------------------
    kelvin = Query("KRDG? {}", parse_float, "Measure a channel's temperature in kelvin (0 without a curve).", _ch)
    resistance = Query("RDGR? {}", parse_float, "Measure a channel's resistance in ohms.", _ch)
    sensor = Query("SRDG? {}", parse_float, "Measure a channel's sensor reading (ohms for a resistor).", _ch)
    excitation_power = Query("RDGPWR? {}", parse_float, "Measure a channel's excitation power in watts.", _ch)
    quadrature = Query(
        "QRDG? {}", parse_float, "Measure the quadrature part of a reading (channels 1-16).", _measurement_channel
    )
    reading_status = Query("RDGST? {}", parse_int, "Get a channel's reading status bits (LS372_STATUS_BITS).", _ch)

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

    input_type = Query(
        "INTYPE? {}",
        record(InputType, *[parse_int] * 6),
        "Get a channel's INTYPE: mode, excitation, autorange, range, shunt, units.",
        _ch,
    )

    def set_input_type(self, channel: str | int, s: InputType) -> None:
        self.command(
            f"INTYPE {self._ch(channel)},{s.mode},{s.excitation},{s.autorange},{s.range},{s.cs_shunt},{s.units}"
        )

    filter = Query(
        "FILTER? {}",
        record(FilterSetup, flag, parse_int, parse_int),
        "Get a channel's filter: on, settle time, window.",
        _ch,
    )

    def set_filter(self, channel: str | int, s: FilterSetup) -> None:
        ch = "0" if str(channel) == "0" else self._ch(channel)
        self.command(f"FILTER {ch},{int(s.on)},{s.settle},{s.window}")

    input_name = Query("INNAME? {}", text, "Get a channel's name.", _ch)

    def set_input_name(self, channel: str | int, name: str) -> None:
        self.command(f"INNAME {self._ch(channel)},{quote_name(name, 15)}")

    temperature_limit = Query("TLIMIT? {}", parse_float, "Get a channel's temperature limit in kelvin (0 off).", _ch)

    def set_temperature_limit(self, channel: str | int, kelvin: float) -> None:
        self.command(f"TLIMIT {self._ch(channel)},{kelvin:g}")

    # -- curves (commands in CurveCommands) ------------------------------------------
    def _after_curve_point(self) -> None:
        time.sleep(CURVE_POINT_GAP)

    @staticmethod
    def _same_curve_value(a: float, b: float) -> bool:
        return _close(a, b)

    # -- heaters -----------------------------------------------------------------
    output_mode = Query(
        "OUTMODE? {}",
        record(OutputSetup, _output_mode, _input_channel, *[parse_int] * 4),
        "Get an output's OUTMODE: mode, input, powerup, polarity, filter, delay.",
        _output,
    )

    def set_output_mode(self, output: int, s: OutputSetup) -> None:
        self.command(f"OUTMODE {output},{int(s.mode)},{s.input},{s.powerup},{s.polarity},{s.filter},{s.delay}")

    heater_range = Query("RANGE? {}", parse_int, "Get an output's range index (0 off).", _output)

    def set_heater_range(self, output: int, value: int) -> None:
        self.command(f"RANGE {output},{value}")

    heater_setup = Query(
        "HTRSET? {}",
        record(HeaterSetup, parse_float, parse_int, parse_float, parse_int),
        "Get an output's heater setup: resistance, max current, max user current, display.",
        _output,
    )

    def set_heater_setup(self, output: int, s: HeaterSetup) -> None:
        self.command(f"HTRSET {output},{s.resistance:g},{s.max_current},{s.max_user_current:g},{s.display}")

    pid = Query("PID? {}", record(PID, parse_float, parse_float, parse_float), "Get an output's PID.", _output)

    def set_pid(self, output: int, p: PID) -> None:
        self.command(f"PID {output},{p.p:g},{p.i:g},{p.d:g}")

    setpoint = Query("SETP? {}", parse_float, "Get an output's setpoint (in the control input's units).", _output)

    def set_setpoint(self, output: int, value: float) -> None:
        self.command(f"SETP {output},{value:g}")

    manual_output = Query("MOUT? {}", parse_float, "Get an output's manual output value.", _output)

    def set_manual_output(self, output: int, value: float) -> None:
        self.command(f"MOUT {output},{value:g}")

    sample_heater_output = Query("HTR?", parse_float, "Measure the sample heater output (% of range).")
    still_output = Query("STILL?", parse_float, "Get the still output in percent.")

    def set_still_output(self, percent: float) -> None:
        self.command(f"STILL {percent:g}")

    analog_output = Query("AOUT? {}", parse_float, "Measure an output's analog value in percent.", _output)
    excitation_frequency = Query(
        "FREQ? {}",
        parse_int,
        "Get the excitation frequency index (1-5 = 9.8, 13.7, 16.2, 11.6, 18.2 Hz); ``0`` measurement, ``A`` control.",
        _frequency_of,
    )

    def set_excitation_frequency(self, which: str, index: int) -> None:
        if str(which).upper() not in ("0", "A") or not 1 <= index <= 5:
            raise ValueError("FREQ takes 0 or A and an index 1-5")
        self.command(f"FREQ {str(which).upper()},{index}")

    common_mode_reduction = Query("CMR?", flag, "Get whether common mode reduction is on.")

    def set_common_mode_reduction(self, on: bool) -> None:
        self.command(f"CMR {int(on)}")

    warmup = Query(
        "WARMUP?", fields(parse_int, parse_float), "Get the warm-up heater setup: (auto-control 0/1, current %)."
    )

    def set_warmup(self, auto: int, current: float) -> None:
        self.command(f"WARMUP {auto},{current:g}")

    def ramp(self, output: int) -> tuple[bool, float]:
        """``RAMP? <out>``: whether the setpoint ramps, and the rate in K/min (0 unlimited)."""
        q = f"RAMP? {self._output(output)}"
        on, rate = split_fields(self.query_raw(q), 2, q)
        return parse_int(on, q) == 1, parse_float(rate, q)

    def set_ramp(self, output: int, on: bool, rate: float) -> None:
        self.command(f"RAMP {output},{int(on)},{rate:g}")

    def output_configuration(self, output: int) -> dict:
        """A heater output's setup as set remotely (mode, heater, range, PID, setpoint, manual value, ramp)."""
        mode = self.output_mode(output)
        on, rate = self.ramp(output)
        return {
            "outmode": {**vars(mode), "mode": int(mode.mode)},
            "htrset": vars(self.heater_setup(output)),
            "range": self.heater_range(output),
            "pid": vars(self.pid(output)),
            "setpoint": self.setpoint(output),
            "manual_output": self.manual_output(output),
            "ramp": {"enabled": on, "rate": rate},
        }

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
        snap["outputs"] = {str(out): self.output_configuration(out) for out in self.heater_outputs}
        scan = vars(self.scan())
        if scan["autoscan"]:
            # the channel the scanner is on now is state, not configuration: left out, so a
            # snapshot is stored when the configuration changes, not at every scanner step
            del scan["channel"]
        snap["scan"] = scan
        return snap

    # -- what the appliance reads about this model (appliance.models): a new model brings its own --
    STATUS_BITS = LS372_STATUS_BITS  # RDGST? bit -> name (status_bits, T_OVER/T_UNDER for the alarms)
    OCS_AGENT_CLASS = "Lakeshore372Agent"  # the socs agent whose OCS feeds the ocs uplink imitates

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]:
        """The field names socs's Lakeshore372Agent writes: the channel's name with spaces as '_'
        plus _T / _R (``Channel_05_T``), the control input ``control_T`` / ``control_R``."""
        import re

        if channel == "A":
            return "control_T", "control_R"
        stem = re.sub(r"[^A-Za-z0-9_]", "", re.sub(r"\s+", "_", name.strip())) or f"Channel_{int(channel):02d}"
        if not stem[0].isalpha():
            stem = "Channel_" + stem
        return f"{stem}_T", f"{stem}_R"


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-5 * max(1.0, abs(a), abs(b))
