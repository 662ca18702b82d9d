"""Store-and-forward: a durable per-series cursor in the store, advanced only on acknowledgement.

Each push uplink (OCS feed, InfluxDB) owns cursors ``(uplink name, series) -> last sent t``.
``take()`` returns the oldest unsent rows of every series (backfill, oldest first) and, while
a series has a backlog, also its newest rows ("live"), so an outage's backfill never starves
live data. ``ack()`` makes the delivery durable; a crash before ``ack`` only means a resend.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .store import FieldInfo, Store


@dataclass
class Batch:
    """Rows to send, per series: (t_ms, value, status)."""

    rows: dict[int, list[tuple[int, float | None, int]]] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)  # "back" or "live" per series

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


class Outbox:
    def __init__(self, store: Store, name: str, nodes: set[str] | None = None, limit: int = 500) -> None:
        self.store, self.name, self.nodes, self.limit = store, name, nodes, limit
        self._lock = threading.Lock()
        self._ahead: dict[int, tuple[int, int]] = {}  # live rows already sent past a backlog: (lo, hi)
        self._cursors: dict[int, int] | None = None

    def fields(self) -> dict[int, FieldInfo]:
        return {f.id: f for f in self.store.fields() if self.nodes is None or f.node in self.nodes}

    def _load(self) -> dict[int, int]:
        if self._cursors is None:
            rows = self.store.reader().execute("SELECT series, position FROM cursor WHERE name=?", (self.name,))
            self._cursors = {s: p for s, p in rows}
        return self._cursors

    def start_from_now(self) -> None:
        """A newly configured uplink starts at the newest stored sample, not at the dawn of the store."""
        cursors = self._load()
        conn = self.store.reader()
        new = {}
        for sid in self.fields():
            if sid not in cursors:
                row = conn.execute("SELECT max(t) FROM raw WHERE series=?", (sid,)).fetchone()
                new[sid] = row[0] or 0
        if new:
            self._save(new)

    def take(self) -> Batch:
        """The next rows to send (read-only; nothing moves until ``ack``)."""
        with self._lock:
            cursors = self._load()
            conn = self.store.reader()
            batch = Batch()
            for sid in self.fields():
                cur = cursors.get(sid, 0)
                ahead = self._ahead.get(sid)
                upper = ahead[0] if ahead else 1 << 62
                back = conn.execute(
                    "SELECT t, value, status FROM raw WHERE series=? AND t>? AND t<? ORDER BY t LIMIT ?",
                    (sid, cur, upper, self.limit)).fetchall()
                if len(back) == self.limit:
                    # a backlog: also send the newest rows so live data keeps flowing
                    live_from = max(cur, ahead[1] if ahead else back[-1][0])
                    live = conn.execute(
                        "SELECT t, value, status FROM raw WHERE series=? AND t>? ORDER BY t DESC LIMIT ?",
                        (sid, live_from, max(1, self.limit // 5))).fetchall()
                    live.reverse()
                    if live and (ahead or live[0][0] > back[-1][0]):
                        batch.rows[sid] = back + live
                        batch.kinds[sid] = f"back+live:{len(back)}"
                        continue
                if back:
                    batch.rows[sid] = back
                    batch.kinds[sid] = "back"
            return batch

    def ack(self, batch: Batch) -> None:
        """The receiver has these rows: move the cursors, durably."""
        with self._lock:
            moves = {}
            for sid, rows in batch.rows.items():
                kind = batch.kinds.get(sid, "back")
                if kind.startswith("back+live"):
                    n_back = int(kind.split(":")[1])
                    back, live = rows[:n_back], rows[n_back:]
                    lo = self._ahead[sid][0] if sid in self._ahead else live[0][0]
                    self._ahead[sid] = (lo, live[-1][0])
                    moves[sid] = back[-1][0]
                else:
                    moves[sid] = rows[-1][0]
                    ahead = self._ahead.get(sid)
                    if ahead and len(rows) < self.limit:
                        # backfill reached the rows already sent live: jump over them
                        moves[sid] = ahead[1]
                        del self._ahead[sid]
            self._save(moves)

    def _save(self, moves: dict[int, int]) -> None:
        cursors = self._load()
        now = time.time()
        with self.store._write_lock:
            conn = self.store._wconn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO cursor(name, series, position, updated) VALUES (?,?,?,?) ON CONFLICT(name, series)"
                    " DO UPDATE SET position=excluded.position, updated=excluded.updated",
                    [(self.name, sid, pos, now) for sid, pos in moves.items()])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        cursors.update(moves)

    def backlog(self) -> int:
        """Rows not yet acknowledged (counted over the PK range; called every few seconds)."""
        cursors = self._load()
        conn = self.store.reader()
        total = 0
        for sid in self.fields():
            total += conn.execute("SELECT count(*) FROM raw WHERE series=? AND t>?",
                                  (sid, cursors.get(sid, 0))).fetchone()[0]
            ahead = self._ahead.get(sid)
            if ahead:
                total -= conn.execute("SELECT count(*) FROM raw WHERE series=? AND t>=? AND t<=?",
                                      (sid, ahead[0], ahead[1])).fetchone()[0]
        return max(0, total)
