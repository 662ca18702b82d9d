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
from drivers.ls370 import Model370
from drivers.ls372 import Model372


class ModelFacts(Protocol):
    """The class attributes a driver class declares for the appliance."""

    STATUS_BITS: dict[int, str]
    OCS_AGENT_CLASS: str

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]: ...


# The registry: model name -> driver class. A new model is its driver class and one line here
# (and its acquisition in ACQUISITIONS).
MODELS: dict[str, ModelFacts] = {"372": Model372, "240": Model240, "370": Model370}
DEFAULT_MODEL = "372"  # what an unknown model's readings are decoded as (as before: the 372's bits)


def facts(model: str | None) -> ModelFacts:
    """The driver class of ``model``; the 372's for a model this build does not know."""
    return MODELS.get(model or DEFAULT_MODEL) or MODELS[DEFAULT_MODEL]


@dataclass(frozen=True)
class LimitBits:
    """A model's "past the end of the sensor curve" reading-status bits."""

    over: int  # T_OVER: warmer than the curve reaches
    under: int  # T_UNDER: colder than the curve reaches


def bit_named(table: dict[int, str], name: str) -> int:
    """The bit a status table calls ``name`` (each model's table is the one place its bits are written)."""
    for bit, n in table.items():
        if n == name:
            return bit
    raise KeyError(f"no status bit named {name}")


def limit_bits(model: str | None) -> LimitBits:
    table = facts(model).STATUS_BITS
    return LimitBits(bit_named(table, "T_OVER"), bit_named(table, "T_UNDER"))
