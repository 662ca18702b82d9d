"""Lake Shore Model 336 temperature controller (and the Model 350, its sibling): typed methods over any Transport.

Four inputs A-D (D1-D5 in place of D with the 3062 scanner option: D1 is D), two current heater
outputs (1, 2) and two voltage outputs (3, 4). Every setting goes through ``CMD;*ESR?``
(``drivers.esr``), as on the 372: the controller never answers a bad command, it only sets an ESR bit.

Reply grammar and field order: the 336 manual, chapter 6 (pages cited in firmware_host/FIDELITY.md),
Lake Shore's ``lakeshore`` package (``model_336.py``) and socs' ``Lakeshore336.py``.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass
from typing import Any

from .base import Identity, Instrument, Pacing, quote_name
from .commands import Query, flag, record, text
from .curve_commands import CurveCommands
from .curve_commands import CurveHeader as CurveHeader  # part of this module's API
from .errors import BadReply
from .esr import EsrCommands
from .ls240 import read_input
from .ls372 import PID as PID  # the same PID record (part of this module's API)
from .ls372 import TCP_PACING
from .ls372 import USB_PACING as LS372_USB_PACING
from .ls372 import _close as same_to_six_significant_digits
from .parse import decode, parse_float, parse_int, split_fields
from .readings import Reading
from .transport import SerialFraming, SerialTransport, TcpTransport, Transport, VisaTransport, visa_serial_settings

SERIAL_FRAMING = SerialFraming(baudrate=57600, bytesize=7, parity="O", stopbits=1)  # USB: 57600 7O1, as the 372
TCP_PORT = 7777  # the 336 and 350 fix their Ethernet port at 7777 (lakeshore package, socs)
# the 372's pacing, which the 336 shares: 50 ms after a command (socs waits 100 ms, "manual says 50ms",
# Lakeshore336.py:183); on USB also 50 ms between messages and after a reply
PACING, USB_PACING = TCP_PACING, LS372_USB_PACING

INPUTS = ("A", "B", "C", "D")
SCANNER_INPUTS = ("D2", "D3", "D4", "D5")  # with the 3062 option; D1 is another name for D
# OUTMODE's and ZONE's <input> field: 0 none, 1-4 A-D, 5-8 D2-D5 (manual; lakeshore InputChannel; socs channel_key)
INPUT_NUMBER = {name: i for i, name in enumerate(("", *INPUTS, *SCANNER_INPUTS))}

# RDGST? bits (336 manual p.154 and 350 manual p.154: "invalid reading", "temp underrange",
# "temp overrange", "sensor units zero", "sensor units overrange"); lakeshore Model336InputReadingStatus agrees.
LS336_STATUS_BITS: dict[int, str] = {
    1: "INVALID",  # invalid reading
    16: "T_UNDER",  # temp underrange
    32: "T_OVER",  # temp overrange
    64: "S_ZERO",  # sensor units zero
    128: "S_OVER",  # sensor units overrange
}


class SensorType(enum.IntEnum):
    """INTYPE's sensor type (manual; lakeshore InputSensorType; socs sensor_key)."""

    DISABLED = 0
    DIODE = 1
    PTC_RTD = 2  # platinum
    NTC_RTD = 3
    THERMOCOUPLE = 4  # 3060 option
    CAPACITANCE = 5  # 3061 option


# the sensor reading's units by sensor type (SRDG?): volts for a diode, ohms for an RTD, mV for a thermocouple
SENSOR_UNITS = {
    SensorType.DIODE: "V",
    SensorType.PTC_RTD: "ohm",
    SensorType.NTC_RTD: "ohm",
    SensorType.THERMOCOUPLE: "mV",
    SensorType.CAPACITANCE: "nF",
}


class OutputMode(enum.IntEnum):
    """OUTMODE's mode (manual; lakeshore HeaterOutputMode; socs output_modes_key)."""

    OFF = 0
    CLOSED_LOOP = 1
    ZONE = 2
    OPEN_LOOP = 3
    MONITOR_OUT = 4
    WARMUP_SUPPLY = 5


@dataclass(frozen=True)
class InputType:
    """INTYPE: sensor type, autorange 0/1, range index, compensation 0/1, units 1 K / 2 C / 3 sensor."""

    sensor_type: int
    autorange: int
    range: int
    compensation: int
    units: int


@dataclass(frozen=True)
class OutputSetup:
    """OUTMODE: mode, control input (``A``-``D``, ``D2``-``D5`` or ``""`` for none), powerup enable."""

    mode: OutputMode
    input: str
    powerup: int


@dataclass(frozen=True)
class HeaterSetup:
    """HTRSET (outputs 1, 2): resistance 1 = 25 ohm / 2 = 50 ohm, max current code, max user current (A), display."""

    resistance: int
    max_current: int
    max_user_current: float
    display: int  # 1 current, 2 power


def input_name_of(number: int) -> str:
    """OUTMODE's input number as an input name (``0`` -> ``""``, none)."""
    for name, n in INPUT_NUMBER.items():
        if n == number:
            return name
    raise ValueError(f"input number {number} is not 0-8")


def _output_mode(field: str, query: str) -> OutputMode:
    try:
        return OutputMode(parse_int(field, query))
    except ValueError:
        raise BadReply("output mode is not 0-5", field.encode(), query) from None


def _control_input(field: str, query: str) -> str:
    try:
        return input_name_of(parse_int(field, query))
    except ValueError:
        raise BadReply("control input is not 0-8", field.encode(), query) from None


def _floats(raw: bytes, query: str) -> list[float]:
    """``KRDG? 0``: every input's reading, comma-separated (four, or eight with the 3062)."""
    return [parse_float(f, query) for f in decode(raw, query).split(",")]


class Model336(EsrCommands, CurveCommands, Instrument):
    expected_model_prefix = "MODEL336"
    model_label = "336"
    usb_product_id = 0x0301  # USB 1FB9:0301 (lakeshore Model336.vid_pid): the image's udev rule
    curve_point_shape = "expected units,temperature"
    curve_formats = (1, 2, 3, 4)  # mV/K, V/K, ohm/K, log ohm/K (336 manual p.130, CRVHDR)
    user_curves_label = "user curves"
    curve_slots = range(1, 60)  # 1-20 standard, read-only
    user_curve_slots = range(21, 60)
    heater_outputs = (1, 2, 3, 4)  # what control may set
    heater_output_names = {1: "heater 1", 2: "heater 2", 3: "analog 3", 4: "analog 4"}
    input_aliases = {"D1": "D"}  # 336 manual p.130 "A-D (D1-D5 for 3062 option)": D1 is D (socs agrees)
    units_words = {1: "kelvin", 2: "Celsius", 3: "sensor units"}  # INTYPE's units field (socs units_key)
    heater_ranges = {1: range(0, 4), 2: range(0, 4), 3: range(0, 2), 4: range(0, 2)}  # off, low, medium, high

    def __init__(
        self,
        transport: Transport,
        timeout: float = 2.0,
        pacing: Pacing | None = None,
        expected_serial: str | None = None,
    ) -> None:
        if pacing is None:
            pacing = USB_PACING if isinstance(transport, SerialTransport) else PACING
        super().__init__(transport, timeout, pacing, expected_serial)
        self.inputs: tuple[str, ...] = INPUTS  # D2-D5 join once KRDG? 0 shows the 3062 (``find_scanner``)

    @classmethod
    def tcp(cls, host: str, port: int = TCP_PORT, **kw: Any) -> Model336:
        return cls(TcpTransport(host, port), **kw)

    @classmethod
    def serial(cls, device: str, **kw: Any) -> Model336:
        return cls(SerialTransport(device, **SERIAL_FRAMING), **kw)

    @classmethod
    def visa(cls, resource: str, **kw: Any) -> Model336:
        """Any VISA resource; an ``ASRL`` one is opened 57600 7O1 like the USB port it is."""
        return cls(VisaTransport(resource, serial_settings=visa_serial_settings(**SERIAL_FRAMING)), **kw)

    def check_identity(self, ident: Identity) -> None:
        super().check_identity(ident)
        self.find_scanner()
        # Read (and so clear) the event register once: its power-on bit 128 would otherwise ride along
        # in the first refusal's message ("ESR=144") as if it were part of what went wrong.
        self.esr()

    def find_scanner(self) -> tuple[str, ...]:
        """Which inputs exist: ``KRDG? 0`` answers four readings, or eight with the 3062 (as socs tells them apart)."""
        n = len(self.all_kelvin())
        if n not in (4, 8):
            raise BadReply(f"KRDG? 0 gave {n} readings, not 4 or 8", b"", "KRDG? 0")
        self.inputs = INPUTS + (SCANNER_INPUTS if n == 8 else ())
        return self.inputs

    # -- argument specs: the signatures of the declared queries below -----------
    def _input(self, channel: str) -> str:
        """An input ``A``-``D`` (``D1`` is ``D``), or ``D2``-``D5`` with the 3062 option."""
        ch = str(channel).strip().upper()
        ch = "D" if ch == "D1" else ch
        if ch not in self.inputs:
            raise ValueError(f"input {channel!r} is not one of {list(self.inputs)}")
        return ch

    def _output(self, output: int) -> int:
        """An output: 1, 2 (heaters) or 3, 4 (voltage outputs)."""
        if output not in (1, 2, 3, 4):
            raise ValueError(f"output {output!r} is not 1-4")
        return output

    def _heater(self, output: int) -> int:
        """A current heater output, 1 or 2 (HTRSET, HTR?)."""
        if output not in (1, 2):
            raise ValueError(f"heater output {output!r} is not 1 or 2")
        return output

    def _analog(self, output: int) -> int:
        """A voltage output, 3 or 4 (AOUT?)."""
        if output not in (3, 4):
            raise ValueError(f"voltage output {output!r} is not 3 or 4")
        return output

    # -- readings -------------------------------------------------------------
    kelvin = Query("KRDG? {}", parse_float, "Measure an input's temperature in kelvin.", _input)
    celsius = Query("CRDG? {}", parse_float, "Measure an input's temperature in degrees Celsius.", _input)
    sensor = Query("SRDG? {}", parse_float, "Measure an input's sensor reading (V, ohm or mV).", _input)
    reading_status = Query("RDGST? {}", parse_int, "Get an input's reading status bits (LS336_STATUS_BITS).", _input)
    all_kelvin = Query("KRDG? 0", _floats, "Measure every input's temperature in kelvin (4, or 8 with the 3062).")
    all_sensor = Query("SRDG? 0", _floats, "Measure every input's sensor reading.")

    def read(self, channel: str, sensor_units: str = "V") -> Reading:
        """Kelvin, sensor units and status of one input in a single exchange, timed at the reply."""
        return read_input(self, self._input(channel), sensor_units, LS336_STATUS_BITS)

    # -- inputs ---------------------------------------------------------------
    input_type = Query(
        "INTYPE? {}",
        record(InputType, *[parse_int] * 5),
        "Get an input's INTYPE: sensor type, autorange, range, compensation, units.",
        _input,
    )

    def set_input_type(self, channel: str, s: InputType) -> None:
        if s.sensor_type not in range(0, 6) or s.units not in (1, 2, 3):
            raise ValueError(f"INTYPE values out of range: {s}")
        self.command(
            f"INTYPE {self._input(channel)},{s.sensor_type},{s.autorange},{s.range},{s.compensation},{s.units}"
        )

    def sensor_units(self, channel: str) -> str:
        """The units of an input's sensor reading, from its sensor type."""
        return SENSOR_UNITS.get(SensorType(self.input_type(channel).sensor_type), "V")

    input_curve = Query("INCRV? {}", parse_int, "Get the curve an input converts through (0 none).", _input)

    def set_input_curve(self, channel: str, curve: int) -> None:
        if curve not in range(0, 60):
            raise ValueError(f"curve {curve} is not 0-59")
        self.command(f"INCRV {self._input(channel)},{curve}")

    input_name = Query("INNAME? {}", text, "Get an input's name.", _input)

    def set_input_name(self, channel: str, name: str) -> None:
        self.command(f"INNAME {self._input(channel)},{quote_name(name, 15)}")

    temperature_limit = Query("TLIMIT? {}", parse_float, "Get an input's temperature limit in kelvin (0 off).", _input)

    def set_temperature_limit(self, channel: str, kelvin: float) -> None:
        self.command(f"TLIMIT {self._input(channel)},{kelvin:g}")

    # -- curves (commands in CurveCommands) ------------------------------------------
    def _after_curve_point(self) -> None:
        time.sleep(self.pacing.after_command)

    _same_curve_value = staticmethod(same_to_six_significant_digits)

    # -- outputs ----------------------------------------------------------------
    output_mode = Query(
        "OUTMODE? {}",
        record(OutputSetup, _output_mode, _control_input, parse_int),
        "Get an output's OUTMODE: mode, control input, powerup enable.",
        _output,
    )

    def set_output_mode(self, output: int, s: OutputSetup) -> None:
        inp = INPUT_NUMBER.get(s.input.upper())
        if inp is None:
            raise ValueError(f"control input {s.input!r} is not one of {[k for k in INPUT_NUMBER if k]} or ''")
        self.command(f"OUTMODE {self._output(output)},{int(s.mode)},{inp},{int(bool(s.powerup))}")

    heater_range = Query("RANGE? {}", parse_int, "Get an output's range (0 off).", _output)

    def set_heater_range(self, output: int, value: int) -> None:
        if value not in self.heater_ranges[self._output(output)]:
            raise ValueError(f"range {value} is not one of output {output}'s {list(self.heater_ranges[output])}")
        self.command(f"RANGE {output},{value}")

    heater_setup = Query(
        "HTRSET? {}",
        record(HeaterSetup, parse_int, parse_int, parse_float, parse_int),
        "Get a heater's setup: resistance code, max current code, max user current, display.",
        _heater,
    )

    def set_heater_setup(self, output: int, s: HeaterSetup) -> None:
        self.command(f"HTRSET {self._heater(output)},{s.resistance},{s.max_current},{s.max_user_current:g},{s.display}")

    pid = Query("PID? {}", record(PID, parse_float, parse_float, parse_float), "Get an output's PID.", _output)

    def set_pid(self, output: int, p: PID) -> None:
        if not (0.1 <= p.p <= 1000 and 0.1 <= p.i <= 1000 and 0 <= p.d <= 200):
            raise ValueError(f"PID {p} outside P 0.1-1000, I 0.1-1000, D 0-200")
        self.command(f"PID {self._output(output)},{p.p:g},{p.i:g},{p.d:g}")

    setpoint = Query("SETP? {}", parse_float, "Get an output's setpoint (in the control input's units).", _output)

    def set_setpoint(self, output: int, value: float) -> None:
        self.command(f"SETP {self._output(output)},{value:g}")

    manual_output = Query("MOUT? {}", parse_float, "Get an output's manual output in percent.", _output)

    def set_manual_output(self, output: int, value: float) -> None:
        if not 0 <= value <= 100:
            raise ValueError(f"manual output {value:g} % is not 0-100")
        self.command(f"MOUT {self._output(output)},{value:g}")

    heater_output = Query("HTR? {}", parse_float, "Measure a heater's output in percent.", _heater)

    def heater_output_at(self, output: int) -> tuple[float, float]:
        """``HTR? <n>`` and the time its reply came, as ``read`` times an input's reading: a sample is
        stamped when the controller answered, not when the cycle got round to storing it."""
        q = f"HTR? {self._heater(output)}"
        raw = self.query_raw(q)
        t = time.time()
        return parse_float(raw, q), t

    analog_output = Query("AOUT? {}", parse_float, "Measure a voltage output in percent.", _analog)

    def ramp(self, output: int) -> tuple[bool, float]:
        """``RAMP? <out>``: whether the setpoint ramps, and the rate in K/min."""
        q = f"RAMP? {self._output(output)}"
        on, rate = split_fields(self.query_raw(q), 2, q)
        return flag(on, q), parse_float(rate, q)

    def output_configuration(self, output: int) -> dict:
        """An output's setup as set remotely (mode, range, PID, setpoint, manual value, heater setup)."""
        mode = self.output_mode(output)
        conf = {
            "outmode": {**vars(mode), "mode": int(mode.mode)},
            "range": self.heater_range(output),
            "pid": vars(self.pid(output)),
            "setpoint": self.setpoint(output),
            "manual_output": self.manual_output(output),
        }
        if output in (1, 2):
            conf["htrset"] = vars(self.heater_setup(output))
        return conf

    # -- snapshot ------------------------------------------------------------------
    def configuration(self, channels: list[str]) -> dict:
        """Everything about the listed inputs that decides what a reading means, and the outputs' setup."""
        snap: dict = {"identity": vars(self.identity) if self.identity else None, "channels": {}}
        curves: dict[int, dict] = {}
        for ch in channels:
            curve = self.input_curve(ch)
            snap["channels"][ch] = {"name": self.input_name(ch), "intype": vars(self.input_type(ch)), "curve": curve}
            if curve and curve not in curves:
                curves[curve] = vars(self.curve_header(curve))
        snap["curves"] = {str(k): v for k, v in curves.items()}
        snap["outputs"] = {str(out): self.output_configuration(out) for out in self.heater_outputs}
        return snap

    # -- what the appliance reads about this model (appliance.models): a new model brings its own --
    STATUS_BITS = LS336_STATUS_BITS  # RDGST? bit -> name (status_bits, T_OVER/T_UNDER for the alarms)
    OCS_AGENT_CLASS = "LS336_Agent"  # socs/agents/lakeshore336/agent.py

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]:
        """The field names socs's LS336_Agent writes: the input's name with spaces as '_', plus _T / _V
        (socs/agents/lakeshore336/agent.py: ``channel.input_name.replace(' ', '_') + '_T'``), made valid
        for OCS: a name that does not begin with a letter gets ``Input_`` before it."""
        stem = re.sub(r"[^A-Za-z0-9_]", "", name.strip().replace(" ", "_")) or f"Input_{channel}"
        # OCS (Feed.verify_data_field_string) wants a letter first, or underscores then a letter:
        # "50K Plate" would give 50K_Plate_T, which OCS refuses. Same guard as the 372's Channel_ prefix.
        if not stem.lstrip("_")[:1].isalpha():
            stem = "Input_" + stem
        return f"{stem}_T", f"{stem}_V"

    @staticmethod
    def ocs_heater_name(output: int) -> str:
        """socs' heaters block: ``Heater_<n>_Percent`` (``heater.output_name.replace(' ', '_') + '_Percent'``)."""
        return f"Heater_{output}_Percent"


class Model350(Model336):
    """The Model 350: the 336's command set; what differs is stated here.

    * ``*IDN?`` names ``MODEL350``; USB product id 0x0302 (lakeshore Model350.vid_pid).
    * ``RANGE`` on outputs 1 and 2 takes 0 = off and ranges 1-5 (350 manual p.154), not off/low/medium/high.
    """

    expected_model_prefix = "MODEL350"
    model_label = "350"
    usb_product_id = 0x0302
    heater_ranges = {1: range(0, 6), 2: range(0, 6), 3: range(0, 2), 4: range(0, 2)}
