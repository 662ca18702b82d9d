"""Channel name -> series name, in one place, so config checks and the poller agree on collisions."""
from __future__ import annotations

import re


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
