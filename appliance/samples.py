"""What flows from pollers to the store: one Sample per value, in a bounded queue."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from .naming import SeriesKey

# Appliance flags kept above the instrument's 8 reading-status bits.
FLAG_CLOCK_UNSYNCED = 1 << 8  # taken while the system clock was not NTP-synchronised
FLAG_TIME_NUDGED = 1 << 9  # time moved by a few microseconds to keep (series, t) unique
FLAG_INVALID = 1 << 10  # the instrument flagged the value: stored as NULL, never as a number


@dataclass(frozen=True)
class Sample:
    series: SeriesKey
    t: float  # UNIX seconds, taken when the reply arrived
    value: float | None  # None when the instrument flagged the reading
    status: int
    # a reading flagged past its range's end (a gauge's OVERRANGE / UNDERRANGE): the end the instrument
    # sent, in the series' units, for the alarms only (never stored as a value)
    limit: float | None = None


class SampleQueue:
    """Bounded in-memory buffer between pollers and the writer.

    When the store cannot keep up (disk full, card failing) the oldest samples are
    dropped and counted, never silently: the count shows on the front panel and
    in /metrics.
    """

    def __init__(self, maxlen: int) -> None:
        self._q: deque[Sample] = deque()
        self.maxlen = maxlen
        self.dropped = 0
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)

    def put_many(self, samples: list[Sample]) -> None:
        with self._lock:
            self._q.extend(samples)
            over = len(self._q) - self.maxlen
            for _ in range(max(0, over)):
                self._q.popleft()
                self.dropped += 1
            self._nonempty.notify()

    def put(self, sample: Sample) -> None:
        self.put_many([sample])

    def drain(self, timeout: float) -> list[Sample]:
        with self._lock:
            if not self._q:
                self._nonempty.wait(timeout)
            out = list(self._q)
            self._q.clear()
            return out

    def requeue_front(self, samples: list[Sample]) -> None:
        """Put back a batch the store could not write, ahead of newer samples."""
        with self._lock:
            self._q.extendleft(reversed(samples))
            over = len(self._q) - self.maxlen
            for _ in range(max(0, over)):
                self._q.popleft()
                self.dropped += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._q)
