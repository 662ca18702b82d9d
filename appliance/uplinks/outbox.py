"""Store-and-forward by insertion sequence number, advanced only on acknowledgement.

Each push uplink (OCS feed, InfluxDB) owns one durable cursor: ``position`` (every sample with
a sequence number at or below it is acknowledged) and the acknowledged ranges above it. A
sample's sequence number is given by the store's writer when it is stored, so a clock step,
a series created while the uplink was down, or a restart can never hide a row behind the
cursor: ``take()`` returns the oldest unacknowledged samples (backfill) and, while there is a
backlog, also the newest ones ("live"), so an outage's backfill never starves live data.
``ack()`` records exactly the ranges the batch covered; a second outage during a backfill,
or a crash before the cursor is committed, only means a resend.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ..store import FieldInfo, Store, merge_ranges

LIVE_SHARE = 5  # while backfilling, 1/5 of a batch is the newest samples


@dataclass
class Batch:
    """Rows to send, per series: (t_ms, value, status); ``covered``: the sequence ranges it acknowledges."""

    rows: dict[int, list[tuple[int, float | None, int]]] = field(default_factory=dict)
    covered: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


class Outbox:
    def __init__(
        self, store: Store, name: str, nodes: set[str] | None = None, limit: int = 500, live: bool = True
    ) -> None:
        """``live=False``: a backlog goes strictly oldest first, no newest rows beside it (for a receiver
        that refuses a sample older than one it already has, e.g. Prometheus without an out-of-order window)."""
        self.store, self.name, self.nodes, self.limit, self.live = store, name, nodes, limit, live
        # The newest sample when the uplink was configured. The service builds its uplinks before it
        # starts the pollers and starts them after: readings stored in between (a CPA's connect
        # reading, stored within milliseconds on a loaded box) belong to this run and must be sent.
        self._configured_after = store.next_seq() - 1
        self._lock = threading.Lock()
        self.position = 0
        self.acked: list[list[int]] = []
        self._loaded = False

    def fields(self) -> dict[int, FieldInfo]:
        return {f.id: f for f in self.store.fields() if self.nodes is None or f.node in self.nodes}

    def _load(self) -> None:
        if not self._loaded:
            saved = self.store.load_cursor(self.name)
            if saved is not None:
                self.position, self.acked = saved
            self._loaded = True

    def start_from_now(self) -> None:
        """A newly configured uplink starts after the newest sample stored when it was built (before the
        pollers started), not at the dawn of the store, nor at its own start: a reading stored between
        the two was never sent (the CPA's first reading missing from the OCS feed, InfluxDB had it).

        The cursor is saved at once: a restart before the first acknowledgement (the server
        unreachable from the start) resumes here, and everything stored since is sent.
        """
        with self._lock:
            saved = self.store.load_cursor(self.name)
            if saved is None:
                self.position, self.acked = self._configured_after, []
                self.store.save_cursor(self.name, self.position, [])
            else:
                self.position, self.acked = saved
            self._loaded = True
        self.store.register_uplink(self.name, self)

    def _gaps(self) -> list[tuple[int, int]]:
        """Unacknowledged (lo, hi] ranges in order; the last is open-ended."""
        out, lo = [], self.position
        for a, b in self.acked:
            out.append((lo, a - 1))
            lo = b
        out.append((lo, 1 << 62))
        return out

    def take(self) -> Batch:
        """The next rows to send (read-only; nothing moves until ``ack``)."""
        with self._lock:
            self._load()
            # Everything numbered up to ``top`` is readable and its series exists (the writer
            # creates a series before numbering its readings): read the series after ``top``
            # and look no further, so a series created meanwhile is never covered unread.
            top = self.store.next_seq() - 1
            sids = set(self.fields())
            batch = Batch()
            got: list[tuple] = []
            for lo, hi in self._gaps():
                hi = min(hi, top)
                if hi <= lo:
                    break
                rows = self.store.by_seq(sids, lo, hi, self.limit - len(got))
                got.extend(rows)
                if len(got) >= self.limit:
                    batch.covered.append([lo + 1, rows[-1][0]])
                    break
                batch.covered.append([lo + 1, hi])  # scanned whole up to hi: nothing else of ours in it
            if len(got) >= self.limit and self.live:
                # a backlog: also the newest rows, so live data keeps flowing
                live_from = max(got[-1][0], self.acked[-1][1] if self.acked else 0)
                n_live = max(1, self.limit // LIVE_SHARE)
                live = self.store.by_seq(sids, live_from, top, n_live, newest=True)
                if live:
                    batch.covered.append([live_from + 1 if len(live) < n_live else live[0][0], live[-1][0]])
                    got.extend(live)
            for _seq, sid, t, v, st in got:
                batch.rows.setdefault(sid, []).append((t, v, st))
            if not got and batch.covered:
                # only other instruments' readings there: nothing to deliver, so step over them now
                # (or every take would scan them again, a longer stretch each time)
                self._advance(batch.covered)
                batch.covered = []
            return batch

    def _advance(self, covered: list[list[int]]) -> None:
        position, acked = merge_ranges(self.position, self.acked + covered)
        if (position, acked) != (self.position, self.acked):
            self.position, self.acked = position, acked
            self.store.save_cursor(self.name, self.position, [list(r) for r in self.acked])

    def ack(self, batch: Batch) -> None:
        """The receiver has these rows: move the cursor (durable at the writer's next commit)."""
        if not batch.covered:
            return
        with self._lock:
            self._load()
            self._advance(batch.covered)

    def first_unacked(self) -> int:
        with self._lock:
            return self.position + 1

    def unacked_among(self, seqs: np.ndarray) -> int:
        """How many of these sequence numbers this uplink has not acknowledged (size-cap accounting)."""
        with self._lock:
            done = seqs <= self.position
            for a, b in self.acked:
                done |= (seqs >= a) & (seqs <= b)
            return int((~done).sum())

    def backlog(self) -> int:
        """Samples not yet acknowledged (called every few seconds)."""
        with self._lock:
            self._load()
            gaps = self._gaps()
        sids = set(self.fields())
        return sum(self.store.count_by_seq(sids, lo, hi) for lo, hi in gaps)
