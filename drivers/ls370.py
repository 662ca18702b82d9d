"""Lake Shore Model 370 AC resistance bridge (the 372's predecessor): typed methods over any Transport.

The 370 is reached over RS-232 (9600 baud, 7 data bits, odd parity, no handshake: 370 manual
6.2.3-6.2.4) or IEEE-488 (GPIB, through pyvisa); it has no Ethernet port. It reads 16 channels
through a 3716 (16) or 3708 (8) scanner and has no dedicated control input (socs' 370 driver:
"unlike 372, 370 does not have dedicated control input channel"). Its heater is one sample
heater, set up with ``CMODE``/``CSET``/``HTRRNG`` rather than the 372's ``OUTMODE``/``HTRSET``/``RANGE``.

Two rules of the older serial firmware shape the exchanges: one query per message (a query may
follow commands: the manual's ``HTRRNG 1;HTRRNG?`` example), and no new message for 50 ms after a
command or a reply, at most 20 messages a second (socs: "manual says 50ms"). So a reading is three
exchanges (``RDGK?``, ``RDGR?``, ``RDGST?``), where the 372 takes one; a setting is still sent as
``CMD;*ESR?`` (a command with one query behind it) so a refused command raises at the call.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

from .base import Pacing, check_channel
from .commands import Query, record
from .curve_commands import CurveAccess, CurveCommands
from .errors import BadReply
from .esr import EsrCommands
from .ls372 import PID, ScanState
from .parse import parse_float, parse_int, split_fields
from .readings import LS370_STATUS_BITS, Reading, decode_status
from .scanner import ScannedInputs
from .transport import SerialFraming, SerialTransport, Transport, VisaTransport, visa_serial_settings

SERIAL_FRAMING = SerialFraming(baudrate=9600, bytesize=7, parity="O", stopbits=1)  # 370 manual 6.2.4
PACING = Pacing(after_command=0.05, min_interval=0.05, after_query=0.05)  # 50 ms quiet, 20 messages/s

CHANNELS = {str(i) for i in range(1, 17)}
MEASUREMENT_CHANNELS = [str(i) for i in range(1, 17)]
HEATER_RANGES_A = {0: 0.0, 1: 31.6e-6, 2: 100e-6, 3: 316e-6, 4: 1e-3, 5: 3.16e-3, 6: 10e-3, 7: 31.6e-3, 8: 100e-3}


class ControlMode(enum.IntEnum):
    """``CMODE``: the sample heater's control mode (socs ``output_modes``; 370 manual p.6-24)."""

    CLOSED_LOOP = 1
    ZONE = 2
    OPEN_LOOP = 3
    OFF = 4


@dataclass(frozen=True)
class ReadingRange:
    """``RDGRNG``: mode 0 voltage / 1 current, excitation index, range index 1-22, autorange, cs off (1 shunted)."""

    mode: int
    excitation: int
    range: int
    autorange: int
    cs_off: int


@dataclass(frozen=True)
class ControlSetup:
    """``CSET``: control channel, filtered, setpoint units (1 K / 2 ohm), setpoint change pause (s),
    heater display (1 current / 2 power), heater range limit (0-8), heater resistance (ohm)."""

    channel: str
    filtered: int
    units: int
    delay: int
    display: int
    limit: int
    resistance: float


def _channel_field(field: str, query: str) -> str:
    return str(parse_int(field, query))


class Model370(EsrCommands, CurveCommands, ScannedInputs):
    expected_model_prefix = "MODEL370"
    model_label = "370"  # a refused setting: "370 refused 'HTRRNG 9': execution error (ESR=16)"
    has_control_input = False  # no input A: every reading comes through the scanner
    curve_point_shape = "expected units,temperature"
    curve_formats = (3, 4)  # ohm/K, log ohm/K (socs' 370 format_key)
    user_curves_label = "user curves"
    curve_slots = range(1, 21)  # 1-20, all user curves (the 372 manual, 5.8: "in 370 emulation ... 1 to 20")
    user_curve_slots = range(1, 21)
    heater_outputs = (0,)  # the sample heater
    max_curve = 20  # INSET's curve field: 0 none, 1-20

    def __init__(
        self,
        transport: Transport,
        timeout: float = 2.0,
        pacing: Pacing | None = None,
        expected_serial: str | None = None,
    ) -> None:
        super().__init__(transport, timeout, pacing or PACING, expected_serial)

    @classmethod
    def serial(cls, device: str, **kw: Any) -> Model370:
        """The RS-232 port (a USB adapter, or an emulator's pty), 9600 7O1."""
        return cls(SerialTransport(device, **SERIAL_FRAMING), **kw)

    @classmethod
    def visa(cls, resource: str, **kw: Any) -> Model370:
        """A VISA resource: ``GPIB0::12::INSTR``, or ``ASRL...`` opened 9600 7O1."""
        return cls(VisaTransport(resource, serial_settings=visa_serial_settings(**SERIAL_FRAMING)), **kw)

    # -- argument specs -------------------------------------------------------
    def _ch(self, channel: str | int) -> str:
        """A scanner channel 1-16 (``"05"`` and ``5`` are ``"5"``)."""
        return check_channel(channel, CHANNELS)

    # -- readings ---------------------------------------------------------------
    kelvin = Query("RDGK? {}", parse_float, "Measure a channel's temperature in kelvin (0 without a curve).", _ch)
    resistance = Query("RDGR? {}", parse_float, "Measure a channel's resistance in ohms.", _ch)
    excitation_power = Query("RDGPWR? {}", parse_float, "Measure a channel's excitation power in watts.", _ch)
    reading_status = Query("RDGST? {}", parse_int, "Get a channel's reading status bits (LS370_STATUS_BITS).", _ch)

    def read(self, channel: str | int) -> Reading:
        """Kelvin, ohms and status of one channel: three exchanges (one query per message), timed at the last."""
        ch = self._ch(channel)
        kelvin, ohms = self.kelvin(ch), self.resistance(ch)
        q = f"RDGST? {ch}"
        raw = self.query_raw(q)
        t = time.time()
        status = parse_int(raw, q)
        if status < 0 or status > 255:
            raise BadReply("reading status out of range 0-255", raw, q)
        sensor_bad = bool(status & (1 | 2 | 4 | 8 | 16 | 32))
        kelvin_bad = sensor_bad or bool(status & (64 | 128)) or kelvin <= 0.0
        bits = decode_status(status, LS370_STATUS_BITS)
        return Reading(ch, kelvin, ohms, "ohm", status, bits, t, not kelvin_bad, not sensor_bad)

    # -- scanner -------------------------------------------------------------------
    def scan(self) -> ScanState:
        raw = self.query_raw("SCAN?")
        ch, auto = split_fields(raw, 2, "SCAN?")
        channel = str(parse_int(ch, "SCAN?"))
        if channel not in CHANNELS:
            raise BadReply("SCAN? names no channel 1-16", raw, "SCAN?")
        return ScanState(channel, parse_int(auto, "SCAN?") == 1)

    def set_scan(self, channel: str | int, autoscan: bool) -> None:
        self.command(f"SCAN {self._ch(channel)},{int(autoscan)}")

    reading_range = Query(
        "RDGRNG? {}",
        record(ReadingRange, *[parse_int] * 5),
        "Get a channel's RDGRNG: mode, excitation, range, autorange, cs off.",
        _ch,
    )

    def set_reading_range(self, channel: str | int, s: ReadingRange) -> None:
        self.command(f"RDGRNG {self._ch(channel)},{s.mode},{s.excitation},{s.range},{s.autorange},{s.cs_off}")

    def input_name(self, channel: str | int) -> str:
        """The 370 keeps no channel names (socs' 370 driver has ``INNAME`` commented out): ``Channel N``,
        the name socs' agent gives every channel."""
        return f"Channel {int(self._ch(channel))}"

    # -- curves (commands in CurveCommands) ------------------------------------------
    def _curve_number(self, number: int, access: CurveAccess) -> int:
        if number not in self.curve_slots:
            raise ValueError(f"curve number {number} is not 1-20")
        return number

    def _after_curve_point(self) -> None:
        pass  # the serial pacing already spaces every message

    @staticmethod
    def _same_curve_value(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-5 * max(1.0, abs(a), abs(b))

    # -- the sample heater -------------------------------------------------------------
    def _output(self, output: int = 0) -> tuple[()]:
        """The sample heater (its commands take no output number; 0 is accepted for symmetry with the 372)."""
        if output != 0:
            raise ValueError(f"the 370 has one heater output, 0, not {output}")
        return ()

    control_mode = Query("CMODE?", lambda raw, q: ControlMode(parse_int(raw, q)), "Get the control mode (CMODE).")

    def set_control_mode(self, mode: ControlMode | int) -> None:
        self.command(f"CMODE {int(ControlMode(mode))}")

    control_polarity = Query("CPOL?", parse_int, "Get the control polarity (0 unipolar, 1 bipolar).")

    control_setup = Query(
        "CSET?",
        record(ControlSetup, _channel_field, *[parse_int] * 5, parse_float),
        "Get CSET: channel, filtered, units, delay, display, heater limit, resistance.",
    )

    def set_control_setup(self, s: ControlSetup) -> None:
        self.command(
            f"CSET {self._ch(s.channel)},{s.filtered},{s.units},{s.delay},{s.display},{s.limit},{s.resistance:g}"
        )

    heater_range_index = Query("HTRRNG?", parse_int, "Get the heater range index (0 off, 1-8 31.6 uA-100 mA).")

    def heater_range(self, output: int = 0) -> int:
        self._output(output)
        return self.heater_range_index()

    def set_heater_range(self, output: int, value: int) -> None:
        self._output(output)
        self.command(f"HTRRNG {value}")

    pid_values = Query("PID?", record(PID, parse_float, parse_float, parse_float), "Get the P, I, D.")

    def pid(self, output: int = 0) -> PID:
        self._output(output)
        return self.pid_values()

    def set_pid(self, output: int, p: PID) -> None:
        self._output(output)
        self.command(f"PID {p.p:g},{p.i:g},{p.d:g}")

    setpoint_value = Query("SETP?", parse_float, "Get the setpoint (in CSET's units).")

    def setpoint(self, output: int = 0) -> float:
        self._output(output)
        return self.setpoint_value()

    def set_setpoint(self, output: int, value: float) -> None:
        self._output(output)
        self.command(f"SETP {value:g}")

    manual_output_value = Query("MOUT?", parse_float, "Get the manual (open loop) output.")

    def manual_output(self, output: int = 0) -> float:
        self._output(output)
        return self.manual_output_value()

    def set_manual_output(self, output: int, value: float) -> None:
        self._output(output)
        self.command(f"MOUT {value:g}")

    sample_heater_output = Query("HTR?", parse_float, "Measure the sample heater output (% of range).")

    def setpoint_units(self, output: int = 0) -> int:
        """The units ``SETP`` takes: CSET's setpoint units (1 kelvin, 2 ohms)."""
        self._output(output)
        return self.control_setup().units

    def output_configuration(self, output: int = 0) -> dict:
        """The sample heater as set remotely (mode, control setup, range, PID, setpoint, manual value)."""
        self._output(output)
        return {
            "cmode": int(self.control_mode()),
            "cset": vars(self.control_setup()),
            "range": self.heater_range_index(),
            "pid": vars(self.pid_values()),
            "setpoint": self.setpoint_value(),
            "manual_output": self.manual_output_value(),
        }

    # -- snapshot ------------------------------------------------------------------
    def configuration(self, channels: list[str]) -> dict:
        """Everything about the listed channels that decides what a reading means."""
        snap: dict = {"identity": vars(self.identity) if self.identity else None, "channels": {}}
        curves: dict[int, dict] = {}
        for ch in channels:
            inset = self.input_setup(ch)
            snap["channels"][ch] = {"inset": vars(inset), "rdgrng": vars(self.reading_range(ch))}
            if inset.curve and inset.curve not in curves:
                curves[inset.curve] = vars(self.curve_header(inset.curve))
        snap["curves"] = {str(k): v for k, v in curves.items()}
        snap["outputs"] = {"0": self.output_configuration(0)}
        scan = vars(self.scan())
        if scan["autoscan"]:
            del scan["channel"]  # state, not configuration (as on the 372)
        snap["scan"] = scan
        return snap

    # -- what the appliance reads about this model (appliance.models) --
    STATUS_BITS = LS370_STATUS_BITS
    OCS_AGENT_CLASS = "LS370_Agent"  # socs/agents/lakeshore370/agent.py

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]:
        """socs' LS370_Agent publishes ``Channel_<n>_T`` / ``_R`` (its channels are all named
        ``Channel <n>``, unpadded, whatever the instrument holds: agent.py, ``channel_str``)."""
        return f"Channel_{int(channel)}_T", f"Channel_{int(channel)}_R"
