"""The store's health in one named snapshot, for ``/api/v1/health`` and ``/metrics`` alike.

The writer keeps its counters as plain attributes (one thread updates them, any thread reads
them); ``Store.stats()`` reads them once into a ``StoreStats``, so a page built from it shows
one moment, and a field added here is one field for both surfaces.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StoreStats:
    """The writer's counters and the file's size at one moment."""

    path: str
    file_bytes: int  # the file with its WAL, shared-memory file and journal
    used_bytes: int  # pages in use (the size cap counts these)
    max_bytes: int
    written: int  # samples committed in this run
    commits: int
    last_commit: float  # wall clock of the last commit; 0.0 before the first
    last_commit_seconds: float
    write_errors: int
    last_error: str | None
    last_error_t: float
    records_queued: int  # events, snapshots, cursor moves, alarm records waiting for the writer
    records_dropped: int
    rejected: int  # readings no store could hold, dropped with an event
    sealed_blocks: int
    flushes: int  # journal -> SQLite moves
    flush_failing: str | None  # why journaled readings cannot reach SQLite now, else None
    longest_step: float  # seconds: the longest write-lock hold of a sealing or retention step
    commit_interval: float

    @property
    def writing(self) -> bool:
        """False while writes are failing (an error newer than the last commit)."""
        return self.last_error_t <= self.last_commit

    def committed_recently(self, now: float | None = None) -> bool:
        """Committed within ten commit intervals (or not started yet)."""
        now = time.time() if now is None else now
        return self.last_commit == 0 or now - self.last_commit < 10 * max(1.0, self.commit_interval)

    def as_dict(self) -> dict:
        return asdict(self)
