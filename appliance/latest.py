"""The newest reading of every series as the pollers delivered it, before the store writes it.

The alarms evaluate this view, not ``Store.latest()``: the store's view moves only after a
successful commit, so a full card or a failing store would blind every threshold alarm while
the readings that should raise them wait in the queue. Here a reading counts the moment its
poller hands it on (``DeliveredQueue.put_many``); a store that cannot write raises its own alarm
(``store_not_writing``) and hides nothing else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .samples import FLAG_INVALID, Sample, SampleQueue


@dataclass(frozen=True)
class Delivered:
    """One series' newest reading: ``t`` is its timestamp (wall clock), ``mono`` when it was
    handed on (monotonic; None for a reading loaded from the store before this run)."""

    node: str
    units: str
    t: float
    value: float | None  # None: the instrument flagged it
    status: int
    mono: float | None
    limit: float | None = None  # Sample.limit: the range's end a flagged reading ran past, when sent


class LatestReadings:
    """Thread-safe: pollers update it, the alarm loop reads it."""

    def __init__(self, mono: Callable[[], float] = time.monotonic) -> None:
        self._mono = mono
        self._lock = threading.Lock()
        self._latest: dict[str, Delivered] = {}
        self.updated = threading.Event()  # set on every update: the alarm loop may look at once

    def update(self, samples: Iterable[Sample]) -> None:
        """Delivery order is the truth (a stepped wall clock may make a newer reading look older)."""
        now = self._mono()
        with self._lock:
            for s in samples:
                k = s.series
                self._latest[k.name] = Delivered(k.node, k.units, s.t, s.value, s.status, now, s.limit)
        self.updated.set()

    def seed(self, rows: Iterable[dict]) -> None:
        """What the store held from before this run (``Store.latest()`` rows), where nothing newer came."""
        with self._lock:
            for r in rows:
                if r["field"] not in self._latest:
                    value = None if r["status"] & FLAG_INVALID else r["value"]
                    self._latest[r["field"]] = Delivered(r["node"], r["units"], r["t"], value, r["status"], None)

    def snapshot(self) -> dict[str, Delivered]:
        with self._lock:
            return dict(self._latest)


class DeliveredQueue(SampleQueue):
    """The pollers' queue, noting each batch in a ``LatestReadings`` as it is handed on (even
    when the queue is full and drops the oldest for the writer)."""

    def __init__(self, maxlen: int, latest: LatestReadings) -> None:
        super().__init__(maxlen)
        self.latest = latest

    def put_many(self, samples: list[Sample]) -> None:
        self.latest.update(samples)
        super().put_many(samples)
