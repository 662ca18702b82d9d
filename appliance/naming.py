"""How a series is named, in one place, so config checks, the poller and every reader agree.

The words, as the code uses them:

* *node*: an instrument's data node name (``[[instrument]] name``, e.g. ``LSA23JD``);
* *field*: a series' short name inside its node, from the channel name (``mxc_t``, ``mxc_r``);
  sisock's ``get_fields`` / ``get_data`` speak of these;
* *series name*: ``node::field`` (``LSA23JD::mxc_t``), how a user meets a series everywhere
  outside sisock: ``SeriesKey.name``.

Some public names (config keys, JSON and CSV columns, metric labels) say ``field`` for the whole
series name: an alarm rule's ``field``, ``kelvinpi export --field``, the ``field`` of the JSON API
and of ``/metrics``. They stay as users know them; in code, ``field`` is only ever the short part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dc_field

from .models import facts


@dataclass(frozen=True)
class SeriesKey:
    """One series: its ``node``, its ``field`` in the node, and ``name`` = ``node::field``."""

    node: str
    field: str
    units: str
    timeline: str
    description: str = ""
    ocs: str = dc_field(default="", compare=False)  # the field name socs's agents use (OCS feeds, InfluxDB)
    name: str = dc_field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.node}::{self.field}")  # hot path: computed once


def slug(name: str) -> str:
    """Channel name to field stem: lower case, spaces to '_' (``Channel 05`` -> ``channel_05``).

    Names that differ only in case, spaces or punctuation ("4K plate", "4k Plate") give the same
    stem, so they would write into one series: config checks refuse them, the poller renames.
    """
    s = re.sub(r"\s+", "_", name.strip().lower())
    s = re.sub(r"[^a-z0-9_]", "", s)
    return s or "channel"


def unique_names(names: dict[str, str]) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Make channel names' stems unique: ``{channel: name}`` -> (renamed, [(channel, old, new)]).

    The first channel (in the given order) keeps its name; each later one whose stem is taken
    gets its channel number appended (``4k Plate`` on channel 3 -> ``4k Plate ch3``).
    """
    taken: set[str] = set()
    out: dict[str, str] = {}
    renamed: list[tuple[str, str, str]] = []
    for ch, name in names.items():
        new = name
        if slug(new) in taken:
            new = f"{name} ch{ch}"
            k = 2
            while slug(new) in taken:
                new, k = f"{name} ch{ch} {k}", k + 1
            renamed.append((ch, name, new))
        taken.add(slug(new))
        out[ch] = new
    return out, renamed


def ocs_names(model: str, channel: str, name: str) -> tuple[str, str]:
    """The field names socs's Lake Shore agents write, so OCS/InfluxDB dashboards keep working:
    each driver class says its own (``Model372.ocs_names``, ``Model240.ocs_names``)."""
    return facts(model).ocs_names(channel, name)


@dataclass(frozen=True)
class UnitsMetric:
    """The Prometheus metric a series of some units is exposed under (``/metrics``) and sent as
    (remote write): the name is the same on both paths, written here once."""

    name: str
    help: str


UNITS_METRICS: dict[str, UnitsMetric] = {
    "K": UnitsMetric("kelvinpi_temperature_kelvin", "Latest temperature"),
    "Ohm": UnitsMetric("kelvinpi_resistance_ohms", "Latest sensor resistance"),
    "V": UnitsMetric("kelvinpi_sensor_volts", "Latest diode sensor voltage"),
}
# any other units: one metric with a ``units`` label
OTHER_UNITS_METRIC = UnitsMetric("kelvinpi_value", "Latest value of other series")
