"""Polling a Cryomech CPA compressor: one block read per cycle, one sample per quantity.

The CPA has no Lake Shore inputs to discover: its series are fixed, named as the Bluefors Status
log names them (``cpatempwi`` ...) with socs' agent keys as their OCS names (``Coolant_In_Temp``
...), both from ``drivers.cpa.QUANTITIES``. Each sample carries the compressor's state as status
bits (``CryomechCPA.STATUS_BITS``: WARNING, ALARM, STOPPED, UNKNOWN_STATE), so the panel and the API say why a
value is what it is; the warning and alarm words themselves are series (``cpawarn``, ``cpaerr``)
whose named bits the driver decodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.cpa import QUANTITIES, CpaReading, CryomechCPA

from .config import InstrumentConfig
from .health import InstrumentHealth
from .naming import SeriesKey
from .samples import Sample

if TYPE_CHECKING:
    from .acquisition import ChannelPlan, Input

WARNING, ALARM, STOPPED, UNKNOWN_STATE = 1, 2, 4, 8  # CryomechCPA.STATUS_BITS


def status_of(r: CpaReading) -> int:
    """The sample status bits of one reading."""
    return (
        (WARNING if r.warning_bits else 0)
        | (ALARM if r.alarm_bits else 0)
        | (0 if r.running else STOPPED)
        | (UNKNOWN_STATE if r.unknown_state else 0)
    )


class CpaAcquisition:
    def __init__(self, cfg: InstrumentConfig, health: InstrumentHealth) -> None:
        if not cfg.host:
            raise ValueError(f"instrument {cfg.name}: a cpa needs host")
        self.cfg, self.health = cfg, health
        self.instrument = CryomechCPA.tcp(cfg.host, cfg.port, timeout=cfg.timeout, expected_serial=cfg.expect_serial)
        self.keys: dict[str, SeriesKey] = {}

    def discover_inputs(self) -> dict[str, Input]:
        """No inputs to plan: the series are the panel's quantities, in the units its registers say."""
        r = self.instrument.last or self.instrument.read()
        units = {"T": r.temperature_unit, "P": r.pressure_unit}
        node = self.cfg.name
        self.keys = {
            q.field: SeriesKey(node, q.field, units.get(q.units, q.units), q.field, f"cpa {q.description}", ocs=q.ocs)
            for q in QUANTITIES
        }
        return {}

    def poll_interval(self) -> tuple[float, str | None]:
        return self.cfg.interval, None

    def configuration(self, channels: list[str]) -> dict:
        snap = self.instrument.configuration()
        snap["series"] = sorted(k.name for k in self.keys.values())
        return snap

    def connected(self) -> None:
        pass

    def cycle(self, plans: dict[str, ChannelPlan], flags: int, out: list[Sample]) -> None:
        # The first cycle after a connect keeps the reading connect took (the panel delivered it: it is
        # stored like any other) rather than reading again a millisecond later: two readings of one
        # series within a millisecond would be two rows the HTTP readers serve as one.
        r = self.instrument.take_connect_reading() or self.instrument.read()
        self._samples(r, flags, out)

    def _samples(self, r: CpaReading, flags: int, out: list[Sample]) -> None:
        status = status_of(r) | flags
        out.extend(Sample(self.keys[f], r.t, v, status) for f, v in r.values.items() if f in self.keys)
