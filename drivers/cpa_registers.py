"""The CPA's register block as data: which value is where, how it is coded, and its names.

Apart from ``drivers.cpa`` (the driver: sockets, Modbus) so that ``appliance.models`` can name a
compressor's fields (``FIELDS``) without importing a driver: the config check at every boot reads
them. ``drivers.cpa`` re-exports all of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    """One value of the register block: where it is, how it is coded, and its names.

    ``field`` is the Bluefors Status-log name (socs bluefors agent.py:190-193), the appliance's
    field; ``ocs`` is the key socs' CPA agent publishes it under (socs drivers.py:114-133), so an
    OCS/InfluxDB dashboard built for socs reads ours. ``units``: "T"/"P" follow the panel's unit
    registers.
    """

    register: int
    kind: str  # "u16" | "f32" | "word" (a warning/alarm word: a float holding minus a bit sum)
    field: str
    ocs: str
    units: str
    description: str


QUANTITIES: tuple[Quantity, ...] = (
    Quantity(1, "u16", "cpastate", "Operating_State", "", "operating state"),
    Quantity(2, "u16", "cparun", "Compressor_State", "", "compressor running (energized)"),
    Quantity(3, "word", "cpawarn", "Warning_State", "", "warning state word"),
    Quantity(5, "word", "cpaerr", "Alarm_State", "", "alarm state word"),
    Quantity(7, "f32", "cpatempwi", "Coolant_In_Temp", "T", "coolant in temperature"),
    Quantity(9, "f32", "cpatempwo", "Coolant_Out_Temp", "T", "coolant out temperature"),
    Quantity(11, "f32", "cpatempo", "Oil_Temp", "T", "oil temperature"),
    Quantity(13, "f32", "cpatemph", "Helium_Temp", "T", "helium temperature"),
    Quantity(15, "f32", "cpalp", "Low_Pressure", "P", "low pressure"),
    Quantity(17, "f32", "cpalpa", "Low_Pressure_Average", "P", "low pressure average"),
    Quantity(19, "f32", "cpahp", "High_Pressure", "P", "high pressure"),
    Quantity(21, "f32", "cpahpa", "High_Pressure_Average", "P", "high pressure average"),
    Quantity(23, "f32", "cpadp", "Delta_Pressure_Average", "P", "delta pressure average"),
    Quantity(25, "f32", "cpacurrent", "Motor_Current", "A", "motor current"),
    Quantity(27, "f32", "cpahours", "Hours_of_Operation", "h", "hours of operation"),
    Quantity(29, "u16", "cpapscale", "Pressure_Unit", "", "pressure unit (0 psi, 1 bar, 2 kPa)"),
    Quantity(30, "u16", "cpatscale", "Temperature_Unit", "", "temperature unit (0 F, 1 C, 2 K)"),
)
FIELDS: tuple[str, ...] = tuple(q.field for q in QUANTITIES)
