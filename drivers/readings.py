"""Typed readings and decoded reading-status registers."""

from __future__ import annotations

from dataclasses import dataclass, field

# Model 372 RDGST? bits (manual p.174).
LS372_STATUS_BITS: dict[int, str] = {
    1: "CS_OVL",
    2: "VCM_OVL",
    4: "VMIX_OVL",
    8: "VDIF_OVL",
    16: "R_OVER",
    32: "R_UNDER",
    64: "T_OVER",
    128: "T_UNDER",
}

# Model 370 RDGST? bits: the same eight, named alike (370 manual p.6-34, RDGST?).
LS370_STATUS_BITS: dict[int, str] = LS372_STATUS_BITS

# Model 240 RDGST? bits (240 manual p.49; the official driver swaps 64/128, the manual wins).
LS240_STATUS_BITS: dict[int, str] = {
    1: "INVALID",
    16: "T_UNDER",
    32: "T_OVER",
    64: "S_UNDER",
    128: "S_OVER",
}


def decode_status(status: int, table: dict[int, str]) -> tuple[str, ...]:
    """Names of the set bits; an unknown set bit is named ``BIT<n>`` rather than dropped."""
    names = []
    for bit in range(16):
        value = 1 << bit
        if status & value:
            names.append(table.get(value, f"BIT{value}"))
    return tuple(names)


@dataclass(frozen=True)
class Reading:
    """One channel's reading as the instrument reported it.

    ``kelvin`` and ``sensor`` are None when the instrument flagged them as not
    valid (so a flagged reading never looks like a good number), but ``raw_kelvin``
    and ``raw_sensor`` keep what was on the wire for diagnosis.
    """

    channel: str
    raw_kelvin: float
    raw_sensor: float
    sensor_units: str
    status: int
    status_bits: tuple[str, ...]
    t: float
    kelvin_valid: bool = True
    sensor_valid: bool = True
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def kelvin(self) -> float | None:
        return self.raw_kelvin if self.kelvin_valid else None

    @property
    def sensor(self) -> float | None:
        return self.raw_sensor if self.sensor_valid else None

    @property
    def valid(self) -> bool:
        return self.status == 0
