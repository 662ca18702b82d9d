"""The gauge controller's record of every pressure reading it delivered, so loss can be counted.

The same contract as ``ledger.Ledger`` (what ``tests/support/reconcile.py`` reads): on-time
readings per (channel, quantity) in ``values``, late ones counted in ``late``, faulted ones in
``faulted``. A reading that is not a measurement (status 1-6) is kept as NaN, with its status
code beside it in ``codes``: it was delivered, and must be stored, as NULL with its status.

Each connection also has its own ledger (``connections``, the newest 64 in the order they opened), so a second
client (a probe, socs beside the appliance) is told apart: reconcile the appliance's connection
alone, and the other client's readings are not counted as lost.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import deque

QUANTITY = "pressure"
CONNECTIONS_KEPT = 64  # the newest connections' own ledgers (an emulator running for days reconnects often)


class PfeifferLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[tuple[str, str], array] = {}
        self.codes: dict[tuple[str, str], array] = {}
        self.late: dict[tuple[str, str], int] = {}
        self.faulted = 0
        self.heard: deque[str] = deque(maxlen=20000)
        self.connections: deque[PfeifferLedger] = deque(maxlen=CONNECTIONS_KEPT)

    def connection(self) -> PfeifferLedger:
        """A new connection's own ledger: what is noted there is noted here too."""
        child = PfeifferLedger()
        with self._lock:
            self.connections.append(child)
        return child

    def hear(self, line: str) -> None:
        self.heard.append(line)

    def note(self, readings: list, delivered: bool, late: bool) -> None:
        """Record the gauge readings one answer carried."""
        with self._lock:
            for r in readings:
                key = (str(r.channel), QUANTITY)
                if not delivered:
                    self.faulted += 1
                elif late:
                    self.late[key] = self.late.get(key, 0) + 1
                else:
                    self.values.setdefault(key, array("d")).append(r.value if r.code == 0 else math.nan)
                    self.codes.setdefault(key, array("b")).append(r.code)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {f"{c}/{q}": len(v) for (c, q), v in sorted(self.values.items())}

    def snapshot(self) -> dict[tuple[str, str], list[float]]:
        with self._lock:
            return {k: list(v) for k, v in self.values.items()}

    def status_snapshot(self) -> dict[tuple[str, str], list[int]]:
        with self._lock:
            return {k: list(v) for k, v in self.codes.items()}

    def total(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.values.values())

    def late_total(self) -> int:
        with self._lock:
            return sum(self.late.values())
