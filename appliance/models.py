"""The instrument models the appliance knows, by the name ``[[instrument]] model`` gives.

What a model *is* (its status bits, its OCS agent class and field names) lives on its driver
class (``drivers.ls372.Model372``, ``drivers.ls240.Model240``); this table only finds the class
by name, so the web's status names, the alarms' T_OVER/T_UNDER, the OCS feeds and the series
names all read one fact from one place. How a model is polled is ``acquisition.ACQUISITIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from drivers.ls240 import Model240
from drivers.ls372 import Model372
from drivers.pfeiffer import TPG256A, TPG366

from .bluefors.facts import BlueforsLogs


class ModelFacts(Protocol):
    """The class attributes a driver class declares for the appliance."""

    STATUS_BITS: dict[int, str]
    OCS_AGENT_CLASS: str

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]: ...


# The registry: model name -> driver class. A new model is its driver class and one line here
# (and its acquisition in ACQUISITIONS).
MODELS: dict[str, ModelFacts] = {
    "372": Model372,
    "240": Model240,
    "tpg366": TPG366,
    "maxigauge": TPG256A,
    "bluefors-logs": BlueforsLogs,
}
DEFAULT_MODEL = "372"  # what an unknown model's readings are decoded as (as before: the 372's bits)


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
    return LimitBits(bit_named(table, "T_OVER"), bit_named(table, "T_UNDER"))


def ocs_feed(model: str | None) -> str:
    """The OCS feed a model's readings go to, as its socs agent names it (a driver's ``OCS_FEED``)."""
    return getattr(MODELS.get(model or ""), "OCS_FEED", "temperatures")
