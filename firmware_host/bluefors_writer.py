"""An emulated Bluefors control software log writer: today's ``YY-MM-DD`` folder, in simulated time.

It writes what the Bluefors software writes (``appliance.bluefors.formats`` names the formats; the
evidence is in FIDELITY.md, "Bluefors log folder"): one folder per day of the PC's local calendar,
one file per log, one line per reading, times in the PC's local time without a zone. Time is
simulated: ``advance(seconds)`` writes every line due until then, so a day, a midnight or the end
of daylight saving takes milliseconds. Every line written whole goes into the ``ledger``: what a
follower must end up with, once each.

Faults (the log writer's own, as the thermometry emulators have theirs)::

    stall SECONDS     write nothing for SECONDS of simulated time (the readings are never made)
    rotate LOG        move LOG's file aside (``<name>.1``) and go on in a new file under its name
    replace LOG       rewrite LOG's file through a new file renamed over it (same lines, new inode)
    half LOG          write LOG's next line in two parts: the first half now, the rest with the one after
    set NAME VALUE    from now on write VALUE for NAME (``compressor 0``: the compressor trips)

LOG is a file's kind as it starts its name: ``CH6 T``, ``Flowmeter``, ``maxigauge``, ``Channels``,
``Status``, ``Heaters``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

DAY_FOLDER = "%y-%m-%d"
LINE_TIME = "%d-%m-%y,%H:%M:%S"

CHANNELS = [
    "v11", "v2", "v1", "turbo1", "v12", "v3", "v10", "v14", "v4", "v13", "compressor", "v15", "v5",
    "hs-still", "v21", "v16", "v6", "scroll1", "v17", "v7", "scroll2", "v18", "v8", "pulsetube", "v19",
    "v20", "v9", "hs-mc", "ext",
]  # fmt: skip  # socs LogParser.patterns['channels'], in its order
STATUS = [
    "tc400errorcode", "tc400ovtempelec", "tc400ovtemppump", "tc400setspdatt", "tc400pumpaccel",
    "tc400commerr", "nxdsf", "nxdsct", "nxdst", "nxdsbs", "nxdstrs", "ctrl_pres", "cpastate", "cparun",
    "cpawarn", "cpaerr", "cpatempwi", "cpatempwo", "cpatempo", "cpatemph", "cpalp", "cpalpa", "cpahp",
    "cpahpa", "cpadp", "cpacurrent", "cpahours", "cpapscale", "cpascale", "cpatscale", "cpasn",
    "cpamodel", "ctrl_pres_ok",
]  # fmt: skip  # socs LogParser.patterns['status'] (one TC400)
HEATERS = ["a1_u", "a1_r_lead", "a1_r_htr", "a2_u", "a2_r_lead", "a2_r_htr", "htr", "htr_range"]
THERMOMETERS = {1: 45.0, 2: 3.2, 5: 0.9, 6: 0.011}  # channel -> base temperature (K)


def bf_number(v: float) -> str:
    """A number as the Bluefors logs write it: C's ``%e`` (``1.859667e+01``), as the lines of a
    2024 log folder quoted in public notes show (FIDELITY.md, Bluefors rows 4-5)."""
    return f"{v:.6e}"


def published(values: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    """Values under the names socs publishes them (``hs-still`` -> ``hs_still``, as its parser does)."""
    return tuple((n.replace("-", "_"), v) for n, v in values)


@dataclass
class Log:
    """One log: its name stem (``CH6 T``), how often it is written, and what its line holds."""

    stem: str
    period: float
    next_t: float = 0.0
    since: float | None = None  # not written before this UNIX time (a Status log that starts late)
    half: bytes | None = None  # the rest of a line written in two parts


@dataclass(frozen=True)
class Written:
    """A ledger entry: one line written whole, its file, its UNIX time and its values by socs name."""

    path: str
    t: float
    values: tuple[tuple[str, float], ...]


@dataclass
class BlueforsWriter:
    root: Path
    tz: ZoneInfo
    start: float  # UNIX time the writer starts at
    seed: int = 0
    status_from: float | None = None  # the Status log appears only at this UNIX time (None: from the start)
    periods: dict[str, float] = field(default_factory=dict)  # seconds between lines, by log (tests: fewer lines)
    now: float = field(init=False)
    ledger: list[Written] = field(default_factory=list)
    logs: dict[str, Log] = field(default_factory=dict)
    overrides: dict[str, float] = field(default_factory=dict)
    stalled_until: float = 0.0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.now = self.start
        self.rng = random.Random(self.seed)
        for ch in THERMOMETERS:
            for q in "TR":
                self._add(f"CH{ch} {q}", 60.0)
        self._add("Flowmeter", 10.0)
        self._add("maxigauge", 10.0)
        self._add("Channels", 30.0)
        self._add("Status", 60.0, since=self.status_from)
        self._add("Heaters", 60.0)

    def _add(self, stem: str, period: float, since: float | None = None) -> None:
        period = self.periods.get("CH" if stem[:2] == "CH" and stem[2:3].isdigit() else stem, period)
        first = self.start if since is None else max(self.start, since)
        self.logs[stem] = Log(stem, period, next_t=math.ceil(first / period) * period, since=since)

    # -- time ------------------------------------------------------------------------
    def local(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, self.tz).replace(tzinfo=None)

    def path_of(self, stem: str, t: float) -> Path:
        day = self.local(t).date()
        return self.root / day.strftime(DAY_FOLDER) / f"{stem} {day.strftime(DAY_FOLDER)}.log"

    def advance(self, seconds: float) -> int:
        """Write every line due in the next ``seconds`` of simulated time, in time order; returns how many."""
        end = self.now + seconds
        written = 0
        while True:
            log = min(self.logs.values(), key=lambda lg: (lg.next_t, lg.stem))
            if log.next_t > end:
                break
            t = log.next_t
            log.next_t += log.period
            if t < self.stalled_until:
                continue
            written += self._write(log, t)
        self.now = end
        return written

    # -- faults -------------------------------------------------------------------------
    def stall(self, seconds: float) -> None:
        self.stalled_until = self.now + seconds

    def rotate(self, stem: str) -> Path:
        path = self.path_of(stem, self.now)
        aside = path.with_name(path.name + ".1")
        os.replace(path, aside)
        return aside

    def replace(self, stem: str) -> None:
        path = self.path_of(stem, self.now)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(path.read_bytes())
        os.replace(tmp, path)

    def half_line(self, stem: str) -> None:
        self.logs[stem].half = b""  # armed: the next line is split

    def set(self, name: str, value: float) -> None:
        self.overrides[name] = value

    def control(self, words: str) -> str:
        """One fault word line (the module docstring's list)."""
        w = words.split()
        try:
            if w[0] == "stall":
                self.stall(float(w[1]))
            elif w[0] in ("rotate", "replace", "half"):
                stem = " ".join(w[1:])
                if stem not in self.logs:
                    return f"error: no log {stem!r} (one of {', '.join(self.logs)})"
                {"rotate": self.rotate, "replace": self.replace, "half": self.half_line}[w[0]](stem)
            elif w[0] == "set":
                self.set(w[1], float(w[2]))
            elif w[0] == "advance":
                self.advance(float(w[1]))
            else:
                return f"error: unknown fault {w[0]!r}"
        except (IndexError, ValueError, OSError) as exc:
            return f"error: {words!r}: {exc}"
        return "ok"

    # -- lines -------------------------------------------------------------------------------
    def _write(self, log: Log, t: float) -> int:
        values = self._values(log.stem, t)
        text = f"{self.local(t).strftime(LINE_TIME)},{self._body(log.stem, values)}"
        if log.stem.startswith("CH"):
            text = " " + text  # a space before the day (QCoDeS' BlueFors driver parses ' %d-%m-%y')
        data = (text + "\r\n").encode()
        path = self.path_of(log.stem, t)
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            if log.half is not None and log.half == b"":  # armed: write half of this line now
                cut = len(data) // 2
                f.write(data[:cut])
                log.half = data[cut:]
                self._pending_half = (log.stem, path.relative_to(self.root).as_posix(), t, values)
                return 0
            done = 0
            if log.half:
                f.write(log.half)  # the rest of the half-written line first
                log.half = None
                stem, rel, t0, v0 = self._pending_half
                self.ledger.append(Written(rel, t0, published(v0)))
                done += 1
            f.write(data)
        self.ledger.append(Written(path.relative_to(self.root).as_posix(), t, published(values)))
        return done + 1

    def _values(self, stem: str, t: float) -> list[tuple[str, float]]:
        """(socs name, value) of one line; the values are those the written text reads back as."""
        r = self.rng.random
        out: list[tuple[str, float]]
        if stem.startswith("CH"):
            ch, q = int(stem[2:].split()[0]), stem.split()[1]
            base = THERMOMETERS[ch] * (1 + 0.01 * math.sin(t / 600) + 0.001 * r())
            v = base if q == "T" else 1000.0 / base
            out = [(f"lakeshore_ch{ch}_{q.lower()}", v)]
        elif stem == "Flowmeter":
            out = [("flowmeter", 0.6 + 0.01 * r())]
        elif stem == "maxigauge":
            gauges = [1.2e-2, 4.0e-1, 2.5e-1, 3.0e-1, 8.0e2, 1.0e3]
            out = []
            for n, p in enumerate(gauges, 1):
                out.append((f"pressure_ch{n}_state", 1.0))
                out.append((f"pressure_ch{n}", p * (1 + 0.01 * r())))
        elif stem == "Channels":
            out = [
                (c, 1.0 if c in ("compressor", "pulsetube", "scroll1", "turbo1", "v1", "v4") else 0.0) for c in CHANNELS
            ]
        elif stem == "Status":
            out = [
                (s, float(round(20 + 5 * r(), 3)) if s.startswith("cpatemp") else float(round(r(), 3))) for s in STATUS
            ]
        else:
            out = [(h, float(round(r(), 4))) for h in HEATERS]
        out = [(n, self.overrides.get(n, self.overrides.get(n.replace("-", "_"), v))) for n, v in out]
        return [(n, float(self._text(stem, n, v))) for n, v in out]

    @staticmethod
    def _text(stem: str, name: str, v: float) -> str:
        if stem == "Channels" or name.endswith("_state"):
            return str(int(v))
        if stem == "Flowmeter":
            return f"{v:.6f}"  # plain decimals (the quoted 2024 line: 0.242708)
        return bf_number(v)

    def _body(self, stem: str, values: list[tuple[str, float]]) -> str:
        if stem.startswith("CH") or stem == "Flowmeter":
            return self._text(stem, values[0][0], values[0][1])
        if stem == "maxigauge":
            parts = []
            for i in range(0, len(values), 2):
                (_, state), (pname, p) = values[i], values[i + 1]
                n = pname.removeprefix("pressure_ch")
                parts.append(f"CH{n},       ,{int(state)},{bf_number(p)},0,1")
            return ",".join(parts) + ","
        if stem == "Channels":
            return "0," + ",".join(f"{n},{int(v)}" for n, v in values)
        return ",".join(f"{n},{self._text(stem, n, v)}" for n, v in values)
