"""The instrument models the appliance knows, by the name ``[[instrument]] model`` gives: declared once.

A model is one ``ModelSpec`` line in ``REGISTRY``. What a model *is* (its status bits, its OCS agent
class, feed and field names) lives on its driver class (``drivers.ls372.Model372`` ...); how it is
reached and polled (the transports it has, its TCP port, the channel numbers it takes, its
acquisition strategy) lives in its spec. The config's ``model`` choices and their documentation,
the poller's strategy, ``kelvinpi probe --model``, the web's status names, the alarms' limit bits,
the OCS feeds and the series names all read these, so a new model is a driver module, an
acquisition class and one line here.

A spec names its driver class and its acquisition class as "module:Class" text, imported when first
needed (``ModelSpec.driver_class()``, ``MODELS[name]``), not when this module is: the config check at
every boot and the service then import only the drivers of the instruments configured (importing
every driver was ~3 s of an 11 s ``import appliance.config`` under emulation, a Pi's first boot).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from drivers.cpa_registers import FIELDS

if TYPE_CHECKING:
    from .acquisition import Acquisition
    from .config import InstrumentConfig
    from .health import InstrumentHealth


class ModelFacts(Protocol):
    """The class attributes a driver class declares for the appliance."""

    STATUS_BITS: dict[int, str]
    OCS_AGENT_CLASS: str

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]: ...


TRANSPORTS = ("tcp", "serial", "visa", "folder")


@dataclass(frozen=True)
class ModelSpec:
    """One instrument model, as the appliance reaches and polls it."""

    driver: str  # "module:Class" of its driver class (a ``ModelFacts``: status bits, OCS names, feed)
    acquisition: str  # "module:Class" of its acquisition strategy, imported when an instrument is polled
    title: str  # what the config's documentation calls it
    vendor: str = "Lake Shore"  # the default description: "<vendor> <model> <name>"
    transports: tuple[str, ...] = ("tcp", "serial", "visa")  # the links it has
    transport_hint: str = ""  # why another transport is refused ("the Model 240 has no Ethernet port")
    port: int = 7777  # its TCP port when the config sets none
    channels: tuple[str, ...] = ()  # the numbers [[instrument.channel]] may give (as text); () = any the schema takes
    channel_noun: str = "inputs"  # "a Model 240 has inputs 1-8"
    channel_field: str | None = None  # a fixed field per channel ("p{n}"), else the channel's name decides
    fields: tuple[str, ...] = ()  # fields fixed by the model (a compressor's): no [[instrument.channel]] to list

    def driver_class(self) -> Any:
        """The driver class (a ``ModelFacts``), its module imported now if it was not yet."""
        return _resolve(self.driver)

    def acquisition_class(self) -> Callable[[InstrumentConfig, InstrumentHealth], Acquisition]:
        return _resolve(self.acquisition)

    def refuses(self, transport: str) -> str | None:
        """Why this model cannot be reached over ``transport``; None when it can."""
        if transport in self.transports:
            return None
        other = " or ".join(repr(t) for t in self.transports)
        return f"{self.transport_hint or f'a {self.title} has no {transport!r} link'}: use transport {other}"


@functools.cache
def _resolve(target: str) -> Any:
    """The object a "module:Class" names, remembered: ``MODELS`` is read per row of an export and per
    field of each alarm cycle, where an import lookup each time made a row ~25% slower (red team)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


_ACQ = "appliance.acquisition:"
_INPUTS_372 = ("A", *(str(n) for n in range(1, 17)))
_INPUTS_336 = ("A", "B", "C", "D", "D2", "D3", "D4", "D5")  # D2-D5: the 3062 scanner option

# The registry: one line per model.
REGISTRY: dict[str, ModelSpec] = {
    "372": ModelSpec(
        "drivers.ls372:Model372", _ACQ + "Ls372Acquisition", "Lake Shore 372 AC resistance bridge", channels=_INPUTS_372
    ),
    "240": ModelSpec(
        "drivers.ls240:Model240",
        _ACQ + "Ls240Acquisition",
        "Lake Shore 240 input module",
        transports=("serial", "visa"),
        transport_hint="the Model 240 has no Ethernet port",
        channels=tuple(str(n) for n in range(1, 9)),
    ),
    "336": ModelSpec(
        "drivers.ls336:Model336",
        "appliance.ls336_acquisition:Ls336Acquisition",
        "Lake Shore 336 temperature controller",
        channels=_INPUTS_336,
    ),
    "350": ModelSpec(
        "drivers.ls336:Model350",
        "appliance.ls336_acquisition:Ls336Acquisition",
        "Lake Shore 350 temperature controller",
        channels=_INPUTS_336,
    ),
    "370": ModelSpec(
        "drivers.ls370:Model370",
        _ACQ + "Ls370Acquisition",
        "Lake Shore 370 AC resistance bridge (the 372's predecessor)",
        transports=("serial", "visa"),
        transport_hint="the Model 370 has no Ethernet port (RS-232 or GPIB)",
        channels=tuple(str(n) for n in range(1, 17)),
        channel_noun="channels",
    ),
    "cpa": ModelSpec(
        "drivers.cpa:CryomechCPA",
        "appliance.cpa_acquisition:CpaAcquisition",
        "Cryomech CPA compressor (Modbus TCP)",
        vendor="Cryomech",
        transports=("tcp",),
        transport_hint="a CPA compressor is read over Modbus TCP",
        port=502,  # socs agent.py:192
        fields=FIELDS,
    ),
    "bluefors-logs": ModelSpec(
        "appliance.bluefors.facts:BlueforsLogs",
        "appliance.bluefors.acquisition:BlueforsAcquisition",
        "Bluefors control software's log folder (a mount of its PC's share)",
        vendor="Bluefors",
        transports=("folder",),
        transport_hint="a Bluefors log folder is read from a folder (needs log_dir and timezone)",
    ),
    "tpg366": ModelSpec(
        "drivers.pfeiffer:TPG366",
        _ACQ + "PfeifferAcquisition",
        "Pfeiffer TPG 366 gauge controller (Ethernet)",
        vendor="Pfeiffer",
        transports=("tcp", "visa"),
        transport_hint="the TPG 366 is read over Ethernet",
        port=8000,  # drivers.pfeiffer.TPG366.DEFAULT_PORT (tests/test_models.py checks they agree)
        channels=tuple(str(n) for n in range(1, 7)),
        channel_noun="gauges",
        channel_field="p{n}",
    ),
    "maxigauge": ModelSpec(
        "drivers.pfeiffer:TPG256A",
        _ACQ + "PfeifferAcquisition",
        "Pfeiffer MaxiGauge TPG 256 A (RS-232)",
        vendor="Pfeiffer",
        transports=("serial", "visa"),
        transport_hint="the MaxiGauge TPG 256 A has no Ethernet port",
        channels=tuple(str(n) for n in range(1, 7)),
        channel_noun="gauges",
        channel_field="p{n}",
    ),
}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


class _Drivers(Mapping[str, "ModelFacts"]):
    """Model name -> driver class, read-only; a driver's module is imported when its model is first looked up."""

    def __getitem__(self, name: str) -> ModelFacts:
        return REGISTRY[name].driver_class()

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


MODELS: Mapping[str, ModelFacts] = _Drivers()  # model -> driver class
DEFAULT_MODEL = "372"  # what an unknown model's readings are decoded as (as before: the 372's bits)


def spec(model: str) -> ModelSpec:
    return REGISTRY[model]


def acquisition_for(cfg: InstrumentConfig, health: InstrumentHealth) -> Acquisition:
    """The polling strategy of ``cfg.model`` (what differs between models), built for one instrument."""
    return REGISTRY[cfg.model].acquisition_class()(cfg, health)


def facts(model: str | None) -> ModelFacts:
    """The driver class of ``model``; the 372's for a model this build does not know."""
    return MODELS.get(model or DEFAULT_MODEL) or MODELS[DEFAULT_MODEL]


@dataclass(frozen=True)
class LimitBits:
    """A model's "past the end of the sensor curve" reading-status bits."""

    over: int  # T_OVER: warmer than the curve reaches
    under: int  # T_UNDER: colder than the curve reaches
    units: str | None = "K"  # the series they speak of (a 372's T_OVER is not about its ohms); None: all

    def beyond(self, units: str, status: int) -> str | None:
        """``"above"`` / ``"below"`` when the status says the value is past the sensor's range."""
        if self.units is not None and units != self.units:
            return None
        return "above" if status & self.over else "below" if status & self.under else None


def bit_named(table: dict[int, str], name: str) -> int:
    """The bit a status table calls ``name`` (each model's table is the one place its bits are written)."""
    for bit, n in table.items():
        if n == name:
            return bit
    raise KeyError(f"no status bit named {name}")


def limit_bits(model: str | None) -> LimitBits:
    """A gauge's OVERRANGE / UNDERRANGE speak of every series it writes (its pressures)."""
    table = facts(model).STATUS_BITS
    if not table:  # a model whose readings carry no status word (a log folder)
        return LimitBits(0, 0)
    if "OVERRANGE" in table.values():
        return LimitBits(bit_named(table, "OVERRANGE"), bit_named(table, "UNDERRANGE"), None)
    if "T_OVER" not in table.values():  # a plant model (a compressor) has no sensor curve to run past
        return LimitBits(0, 0)
    return LimitBits(bit_named(table, "T_OVER"), bit_named(table, "T_UNDER"))


def ocs_feed(model: str | None) -> str:
    """The OCS feed a model's readings go to, as its socs agent names it (a driver's ``OCS_FEED``)."""
    return getattr(MODELS.get(model or ""), "OCS_FEED", "temperatures")
