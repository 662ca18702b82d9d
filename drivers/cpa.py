"""Cryomech CPA-series compressor (digital panel) over Modbus TCP.

The register map is the one socs' ``cryomech_cpa`` driver and Cryomech's own sample code read
(firmware_host/FIDELITY.md cites each): one read of 53 input registers from address 1; registers
1-2 are 16-bit integers, 3-28 are 32-bit IEEE floats with the *low word first* (register n holds
the low half, n+1 the high half, each word big-endian), 29-33 are 16-bit words again. The warning
and alarm words are floats holding a negative sum of bit values (-1 coolant in high, -2 coolant in
low, ... ; -0.0 when clear): decoded here into named bits, as a Lake Shore reading's status is.

Starting and stopping is holding register 1: 0x0001 starts, 0x00FF stops (socs ``power``).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Identity
from .cpa_registers import FIELDS as FIELDS  # the register block's data: its own module, no sockets
from .cpa_registers import QUANTITIES as QUANTITIES
from .cpa_registers import Quantity as Quantity
from .errors import BadReply, WrongInstrument

if TYPE_CHECKING:  # pymodbus is imported when a compressor is reached, not when the config names its fields
    from .modbus import ModbusTcpLink

FIRST_REGISTER = 1  # socs drivers.py:68 reads from register 1 ...
REGISTER_COUNT = 53  # ... 0x35 registers (drivers.py:69)
ENABLE_REGISTER = 1  # holding register 1 (socs drivers.py:86)
RUNNING_REGISTER = 2  # input register 2, "Compressor_State" (socs drivers.py keyloc), 1 when running
START, STOP = 0x0001, 0x00FF  # socs drivers.py:89/91

OPERATING_STATES: dict[int, str] = {
    0: "idling",  # ready to start
    2: "starting",
    3: "running",
    5: "stopping",
    6: "error lockout",
    7: "error",
    8: "helium cool down",
    9: "power related error",
    15: "recovered from error",
}

# The bit values of the warning and alarm words (Cryomech SampleCode CPA_2xxx_ModbusTCP.py
# buildMessage; a word is minus the sum of its set bits). One table for both words: the
# panel uses the same codes in each.
CPA_BITS: dict[int, str] = {
    1 << 0: "COOLANT_IN_HIGH",
    1 << 1: "COOLANT_IN_LOW",
    1 << 2: "COOLANT_OUT_HIGH",
    1 << 3: "COOLANT_OUT_LOW",
    1 << 4: "OIL_HIGH",
    1 << 5: "OIL_LOW",
    1 << 6: "HELIUM_HIGH",
    1 << 7: "HELIUM_LOW",
    1 << 8: "LOW_PRESSURE_HIGH",
    1 << 9: "LOW_PRESSURE_LOW",
    1 << 10: "HIGH_PRESSURE_HIGH",
    1 << 11: "HIGH_PRESSURE_LOW",
    1 << 12: "DELTA_PRESSURE_HIGH",
    1 << 13: "DELTA_PRESSURE_LOW",
    1 << 14: "MOTOR_CURRENT_LOW",
    1 << 15: "THREE_PHASE_ERROR",
    1 << 16: "POWER_SUPPLY_ERROR",
    1 << 17: "STATIC_PRESSURE_HIGH",
    1 << 18: "STATIC_PRESSURE_LOW",
    1 << 19: "MOTOR_STALL",
    1 << 20: "COOLANT_IN_SENSOR",
    1 << 21: "COOLANT_OUT_SENSOR",
    1 << 22: "HELIUM_SENSOR",
    1 << 23: "OIL_SENSOR",
    1 << 24: "HIGH_PRESSURE_SENSOR",
    1 << 25: "LOW_PRESSURE_SENSOR",
    1 << 26: "MOTOR_CURRENT_SENSOR",
    1 << 27: "MOTOR_CURRENT_HIGH",
    1 << 28: "INVERTER_ERROR",
    1 << 29: "DRIVER_COMM_LOSS",
    1 << 30: "INVERTER_COMM_LOSS",
}
PRESSURE_UNITS = {0: "psi", 1: "bar", 2: "kPa"}
TEMPERATURE_UNITS = {0: "F", 1: "C", 2: "K"}

# Model byte tables (Cryomech SampleCode buildModel): high byte, low byte -> "CPA" + both.
MODEL_MAJOR = {1: "08", 2: "09", 3: "10", 4: "11", 5: "28"}
MODEL_MINOR = {
    1: "A1", 2: "01", 3: "02", 4: "03", 5: "H3", 6: "I3", 7: "04", 8: "H4", 9: "05", 10: "H5", 11: "I6", 12: "06",
    13: "07", 14: "H7", 15: "I7", 16: "08", 17: "09", 18: "9C", 19: "10", 20: "1I", 21: "11", 22: "12", 23: "13",
    24: "14",
}  # fmt: skip

# registers 1-30 (the values polled): QUANTITIES, in drivers.cpa_registers; then the panel's identity
SERIAL_REGISTER, MODEL_REGISTER, SOFTWARE_REGISTER = 31, 32, 33


def word_bits(value: float, what: str, raw: list[int]) -> int:
    """The set bits of a warning/alarm word: the panel sends minus their sum as a float (-0.0 when clear)."""
    if not math.isfinite(value) or value > 0 or value != int(value) or -value >= 1 << 31:
        raise BadReply(f"{what} word {value!r} is not minus a sum of bits", _raw(raw), "read input registers")
    return int(-value)


def decode_bits(bits: int) -> tuple[str, ...]:
    """Names of the set bits of a warning/alarm word; an unknown set bit is ``BIT<value>``, never dropped."""
    return tuple(CPA_BITS.get(1 << n, f"BIT{1 << n}") for n in range(32) if bits & (1 << n))


def _raw(regs: list[int]) -> bytes:
    return b"".join(r.to_bytes(2, "big") for r in regs)


def f32(regs: list[int], register: int) -> float:
    """The float at ``register`` (low word first, as socs drivers.py:118 reads bytes [n+1, n])."""
    from pymodbus.client import ModbusTcpClient

    i = register - FIRST_REGISTER
    value = ModbusTcpClient.convert_from_registers(
        regs[i : i + 2], ModbusTcpClient.DATATYPE.FLOAT32, word_order="little"
    )
    assert isinstance(value, float)
    return value


@dataclass(frozen=True)
class CpaReading:
    """One read of the whole register block, decoded; ``values`` by field (``cpatempwi`` ...)."""

    t: float
    values: dict[str, float]
    operating_state: int
    running: bool
    warning_bits: int
    alarm_bits: int
    pressure_unit: str
    temperature_unit: str

    @property
    def warnings(self) -> tuple[str, ...]:
        return decode_bits(self.warning_bits)

    @property
    def alarms(self) -> tuple[str, ...]:
        return decode_bits(self.alarm_bits)

    @property
    def state_name(self) -> str:
        return OPERATING_STATES.get(self.operating_state, f"unknown state {self.operating_state}")

    @property
    def unknown_state(self) -> bool:
        """An operating state no document names (1, 4, ...): the reading is kept, flagged, as
        Cryomech's SampleCode shows such a state ("Unknown State") rather than refusing it."""
        return self.operating_state not in OPERATING_STATES


def decode_block(regs: list[int], t: float) -> CpaReading:
    """Decode registers 1..53 (``regs[0]`` is register 1); a value no panel sends is a ``BadReply``."""
    if len(regs) < SOFTWARE_REGISTER:
        raise BadReply(f"{len(regs)} registers, need {SOFTWARE_REGISTER}", _raw(regs), "read input registers")
    values: dict[str, float] = {}
    for q in QUANTITIES:
        if q.kind == "u16":
            values[q.field] = float(regs[q.register - FIRST_REGISTER])
        elif q.kind == "word":
            values[q.field] = -float(word_bits(f32(regs, q.register), q.description, regs))
        else:
            v = f32(regs, q.register)
            if not math.isfinite(v):
                raise BadReply(f"{q.description} is {v!r}", _raw(regs), "read input registers")
            values[q.field] = v
    # An operating state or running value the documents do not name is kept (the reading carries
    # UNKNOWN_STATE; running is any value above 0), as Cryomech's SampleCode CPA_2xxx_ModbusTCP.py
    # (lines 349-370) prints "Unknown State" and tests 0 < running. Units it cannot name leave every
    # temperature and pressure unreadable: refused.
    state, run = int(values["cpastate"]), int(values["cparun"])
    pu, tu = int(values["cpapscale"]), int(values["cpatscale"])
    if pu not in PRESSURE_UNITS or tu not in TEMPERATURE_UNITS:
        raise BadReply(
            f"units {pu}/{tu}: not units a CPA panel sends",
            _raw(regs),
            "read input registers",
        )
    return CpaReading(
        t=t,
        values=values,
        operating_state=state,
        running=run > 0,
        warning_bits=int(-values["cpawarn"]),
        alarm_bits=int(-values["cpaerr"]),
        pressure_unit=PRESSURE_UNITS[pu],
        temperature_unit=TEMPERATURE_UNITS[tu],
    )


def model_name(word: int) -> str:
    """Register 32 (high byte major, low byte minor) as Cryomech names it (``0x0418`` -> ``CPA1114``)."""
    major, minor = word >> 8, word & 0xFF
    if major in MODEL_MAJOR and minor in MODEL_MINOR:
        return f"CPA{MODEL_MAJOR[major]}{MODEL_MINOR[minor]}"
    return f"CPA?{major}_{minor}"  # socs' own form (drivers.py:178) for a code the table lacks


class CryomechCPA:
    """A CPA digital panel over Modbus TCP: identity, one block read per poll, start/stop."""

    # What the appliance reads off a model (appliance/models.py): the sample status bits a CPA
    # reading carries, the OCS agent class and feed socs' agent registers (agent.py:45, :204).
    STATUS_BITS: ClassVar[dict[int, str]] = {1: "WARNING", 2: "ALARM", 4: "STOPPED", 8: "UNKNOWN_STATE"}
    OCS_AGENT_CLASS: ClassVar[str] = "CryomechCPAAgent"
    OCS_FEED: ClassVar[str] = "ptc_status"
    # The front panel's one card for the whole compressor (appliance/web/panel.py ships it, panel.js
    # draws it): its state, the values a person checks first, and the tables that name the state
    # and the bits of the warning and alarm words (a word is minus the sum of its bits).
    PANEL: ClassVar[dict] = {
        "title": "compressor",
        "state": "cpastate",
        "running": "cparun",
        "warnings": "cpawarn",
        "alarms": "cpaerr",
        "show": [["in", "cpatempwi"], ["out", "cpatempwo"], ["He", "cpatemph"], ["HP", "cpahp"], ["LP", "cpalp"]],
        "states": {str(k): v for k, v in OPERATING_STATES.items()},
        "bits": {str(k): v for k, v in CPA_BITS.items()},
    }

    def __init__(self, transport: ModbusTcpLink, expected_serial: str | None = None) -> None:
        self.transport = transport
        self.expected_serial = expected_serial
        self.identity: Identity | None = None
        self.last: CpaReading | None = None  # the latest reading, the one connect took included
        self.connect_reading: CpaReading | None = None  # connect's reading, until a caller takes it
        self.connected = False
        self._lock = threading.RLock()

    @classmethod
    def tcp(cls, host: str, port: int = 502, timeout: float = 2.0, **kw: Any) -> CryomechCPA:
        from .modbus import ModbusTcpLink

        return cls(ModbusTcpLink(host, port, timeout=timeout), **kw)

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]:
        """The socs key of a field (``cpatempwi`` -> ``Coolant_In_Temp``), twice: the CPA has no sensor half."""
        ocs = next((q.ocs for q in QUANTITIES if q.field == channel), channel)
        return ocs, ocs

    def connect(self) -> Identity:
        with self._lock:
            self.connected = False
            self.transport.open()
            try:
                regs = self.transport.read_input_registers(FIRST_REGISTER, REGISTER_COUNT)
                self.last = self.connect_reading = decode_block(regs, time.time())  # garbled: refused here
                self.identity = self._identity(regs)
                if self.expected_serial and self.identity.serial != self.expected_serial:
                    raise WrongInstrument(
                        f"{self.transport.description}: expected CPA serial {self.expected_serial}, "
                        f"the panel says {self.identity.serial}"
                    )
            except BaseException:
                self.transport.close()
                raise
            self.connected = True
            return self.identity

    @staticmethod
    def _identity(regs: list[int]) -> Identity:
        sw = regs[SOFTWARE_REGISTER - FIRST_REGISTER]
        return Identity(
            "Cryomech",
            model_name(regs[MODEL_REGISTER - FIRST_REGISTER]),
            str(regs[SERIAL_REGISTER - FIRST_REGISTER]),
            f"{sw >> 8}.{sw & 0xFF}",
        )

    def close(self) -> None:
        with self._lock:
            self.connected = False
            self.transport.close()

    def read(self) -> CpaReading:
        """One read of the register block (socs' exchange), decoded; typed errors otherwise."""
        with self._lock:
            regs = self.transport.read_input_registers(FIRST_REGISTER, REGISTER_COUNT)
            t = time.time()
            try:
                self.last = decode_block(regs, t)
            except BadReply:
                self.transport.close()  # what else it sent on this connection is suspect too
                raise
            return self.last

    def running(self) -> bool:
        """Is the compressor running: input register 2 alone (a settings read-back). Not the block
        read: a block the panel delivers is a reading, and one read here would never be stored."""
        with self._lock:
            (run,) = self.transport.read_input_registers(RUNNING_REGISTER, 1)
            return run > 0

    def take_connect_reading(self) -> CpaReading | None:
        """The reading ``connect`` took (a real reading: it is stored, not thrown away), once."""
        r, self.connect_reading = self.connect_reading, None
        return r

    def power(self, on: bool) -> None:
        """Start (``True``) or stop the compressor: holding register 1, as socs' ``power_ptc`` writes it."""
        if not isinstance(on, bool):
            raise ValueError(f"compressor power must be true or false, not {on!r}")
        with self._lock:
            self.transport.write_register(ENABLE_REGISTER, START if on else STOP)

    def configuration(self) -> dict:
        """What the snapshot records: identity and units (the panel has no other settings on Modbus).
        From the latest reading: a read here would be a reading delivered and never stored."""
        r = self.last or self.read()
        ident = self.identity
        return {
            "model": ident.model if ident else None,
            "serial": ident.serial if ident else None,
            "software": ident.firmware if ident else None,
            "pressure_unit": r.pressure_unit,
            "temperature_unit": r.temperature_unit,
        }
