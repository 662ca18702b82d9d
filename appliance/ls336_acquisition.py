"""How a Lake Shore 336 or 350 is polled (its ``ModelSpec`` lines in ``appliance.models.REGISTRY``).

The controller measures its inputs continuously (10 readings a second each), so a cycle reads
every enabled input, ``KRDG?;SRDG?;RDGST?`` in one exchange each, and with ``read_heater`` the
two heater outputs (``HTR? 1``, ``HTR? 2``). Which inputs exist (A-D, or D2-D5 too with the 3062
scanner) the driver learns at connect from ``KRDG? 0``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from drivers.ls336 import SENSOR_UNITS, Model336, Model350, SensorType
from drivers.transport import TcpTransport

from .acquisition import ChannelPlan, Input, configured_channels, required, samples_of
from .config import InstrumentConfig
from .health import InstrumentHealth
from .naming import SeriesKey
from .samples import Sample

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

DRIVERS: dict[str, type[Model336]] = {"336": Model336, "350": Model350}
HEATERS = (1, 2)


class Ls336Acquisition:
    """Lake Shore 336 / 350: inputs A-D (D2-D5 with the 3062) read every cycle, over TCP, serial or VISA."""

    def __init__(self, cfg: InstrumentConfig, health: InstrumentHealth) -> None:
        self.cfg, self.health = cfg, health
        cls = DRIVERS[cfg.model]
        expected = cfg.expect_serial or cfg.serial_number
        if cfg.transport == "tcp":
            self.instrument = cls(
                TcpTransport(required(cfg, "host"), cfg.port), timeout=cfg.timeout, expected_serial=expected
            )
        elif cfg.transport == "serial":
            self.instrument = cls.serial(cfg.serial_device(), timeout=cfg.timeout, expected_serial=expected)
        else:
            self.instrument = cls.visa(required(cfg, "resource"), timeout=cfg.timeout, expected_serial=expected)
        self.heater_keys: dict[int, SeriesKey] = {}
        self.store: Store | None = None  # the appliance's store, for the missing-inputs event (attach_store)
        self._missing_recorded: tuple[str, ...] = ()

    def attach_store(self, store: Store) -> None:
        self.store = store

    def _note_missing(self, configured: dict) -> None:
        """Inputs the configuration lists that this instrument lacks (D2-D5 without the 3062): never read,
        so say so, in the health (while it lasts) and once as an event, naming them."""
        inst = self.instrument
        missing = tuple(ch for ch, c in configured.items() if c.enabled and ch not in inst.inputs)
        word = "input" if len(missing) == 1 else "inputs"
        detail = (
            f"configured {word} {', '.join(missing)} not on this Model {self.cfg.model} (it has "
            f"{', '.join(inst.inputs)}; D2-D5 need the 3062 scanner option): not read"
        )
        self.health.warnings = [w for w in self.health.warnings if not w.startswith("configured input")]
        if missing:
            self.health.warnings.append(detail)
            log.warning("%s: %s", self.cfg.name, detail)
            if missing != self._missing_recorded and self.store is not None:
                self.store.event("missing_inputs", self.cfg.name, detail)
        self._missing_recorded = missing

    def discover_inputs(self) -> dict[str, Input]:
        inst, cfg = self.instrument, self.cfg
        configured = configured_channels(cfg)
        found: dict[str, Input] = {}
        self._note_missing(configured)
        for ch in inst.inputs:
            c = configured.get(ch)
            if (c is not None and not c.enabled) or (configured and c is None):
                continue
            sensor = SensorType(inst.input_type(ch).sensor_type)
            if c is None and sensor == SensorType.DISABLED:
                continue
            name = (c.name if c is not None and c.name else None) or inst.input_name(ch) or f"Input {ch}"
            found[ch] = Input(name, SENSOR_UNITS.get(sensor, "V"), c)
        self.heater_keys = {}
        if cfg.read_heater:
            for n in HEATERS:
                field = f"heater_{n}"
                self.heater_keys[n] = SeriesKey(
                    cfg.name, field, "%", field, f"heater output {n}", ocs=inst.ocs_heater_name(n)
                )
        return found

    def poll_interval(self) -> tuple[float, str | None]:
        return self.cfg.interval, None

    def configuration(self, channels: list[str]) -> dict:
        return self.instrument.configuration(channels)

    def connected(self) -> None:
        pass

    def cycle(self, plans: dict[str, ChannelPlan], flags: int, out: list[Sample]) -> None:
        inst = self.instrument
        for plan in plans.values():
            out.extend(samples_of(plan, inst.read(plan.number, plan.sensor.units if plan.sensor else "V"), flags))
        for n, key in self.heater_keys.items():
            v, t = inst.heater_output_at(n)  # stamped at the reply
            out.append(Sample(key, t, v, flags))
