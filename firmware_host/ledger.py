"""The instrument's own record of every reading it delivered, so loss can be counted.

A reading counts once its reply left the wire interface whole (not muted, garbled or cut by
a fault). Replies held back by the ``slow`` fault are counted apart as *late*: the client may
rightly have given up on them. Values are kept per (channel, quantity) as compact arrays, so a
soak of millions of readings stays small.
"""

from __future__ import annotations

import threading
from array import array
from collections import deque

from .protocol import ExecutionError, parse_message

# a reading query -> its quantity; a query without an argument (the 372's bare HTR?) is not counted
QUANTITY = {"KRDG?": "kelvin", "RDGK?": "kelvin", "RDGR?": "sensor", "SRDG?": "sensor", "HTR?": "heater"}


def _channel(arg: str) -> str:
    """A numbered channel without its zeros (``05`` -> ``5``); a lettered input as named (``A``, ``D2``)."""
    a = arg.strip().upper()
    return str(int(a)) if a.isdigit() else a


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[tuple[str, str], array] = {}
        self.late: dict[tuple[str, str], int] = {}
        self.faulted = 0  # reading replies that never left whole (mute, garbage, partial)
        self.heard: deque[str] = deque(maxlen=20000)  # every line received, for "what did it send" tests
        # every answered line and its whole reply: which answer each question got (tests of the share)
        self.exchanges: deque[tuple[str, str]] = deque(maxlen=50000)

    def hear(self, line: str) -> None:
        self.heard.append(line)

    def note(self, line: str, reply: str, delivered: bool, late: bool) -> None:
        """Record the reading queries of one answered line; ``reply`` is the full reply text."""
        self.exchanges.append((line, reply))
        try:
            parts = [parse_message(p) for p in line.split(";")]
        except ExecutionError:  # a malformed part: the firmware refused it, the reply cannot be lined up
            return
        parts = [(n, a) for n, a in parts if n]
        if not any(n in QUANTITY for n, _ in parts):
            return
        answers = reply.split(";")
        if len(answers) != len(parts):  # some part failed: the reply cannot be lined up, skip it
            return
        with self._lock:
            for (name, args), value in zip(parts, answers, strict=False):
                q = QUANTITY.get(name)
                if q is None or not args:
                    continue
                try:
                    key, v = (_channel(args[0]), q), float(value)
                except ValueError:
                    continue
                if not delivered:
                    self.faulted += 1
                elif late:
                    self.late[key] = self.late.get(key, 0) + 1
                else:
                    self.values.setdefault(key, array("d")).append(v)

    def counts(self) -> dict[str, int]:
        """``{"<channel>/<quantity>": n}`` of readings delivered on time."""
        with self._lock:
            return {f"{c}/{q}": len(v) for (c, q), v in sorted(self.values.items())}

    def snapshot(self) -> dict[tuple[str, str], list[float]]:
        with self._lock:
            return {k: list(v) for k, v in self.values.items()}

    def total(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.values.values())

    def late_total(self) -> int:
        with self._lock:
            return sum(self.late.values())
