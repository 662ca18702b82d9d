"""Answers built once and shared: a snapshot per store commit, and a byte-bounded cache of repeated queries.

``/api/v1/latest``, ``/api/v1/health``, ``/metrics`` answer bytes serialised once per store
commit (at most once a second otherwise: ages and connection flags move with the clock), so
fifty panels cost what one does; repeated data queries (the panel's plots, one Grafana
dashboard on many screens) are kept for a few seconds for the same reason.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store import Store


def store_changed(store: Store) -> Callable[[], object]:
    """The key a snapshot is rebuilt on: the store's commit counters (a new commit, a failed write)."""
    return lambda: (store.written, store.commits, store.write_errors)


class Snapshot:
    """An answer serialised once per change of ``key()`` (or after ``max_age`` s), shared by every client.

    One thread builds while the others wait for it and take the same bytes: fifty clients
    asking at the moment of a commit cost one serialisation, not fifty.
    """

    def __init__(self, build: Callable[[], bytes], key: Callable[[], object], max_age: float) -> None:
        self.build, self.key, self.max_age = build, key, max_age
        self._entry: tuple[object, float, bytes] | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        k = self.key()
        e = self._entry
        if e is not None and e[0] == k and time.monotonic() - e[1] < self.max_age:
            return e[2]
        with self._lock:
            e = self._entry
            if e is not None and e[0] == k and time.monotonic() - e[1] < self.max_age:
                return e[2]
            body = self.build()
            self._entry = (k, time.monotonic(), body)
            return body


class AnswerCache:
    """Answers to data queries that many clients repeat, kept ``ttl`` seconds within a byte budget.

    Every open front panel asks the same URLs every 30 s, and every screen showing one Grafana
    dashboard the same query each refresh; an answer at a stride of minutes hardly moves in a
    few seconds, so N viewers cost one query per key and ``ttl``. Answers over ``max_item``
    bytes are not kept; the oldest go first past ``budget`` bytes in all.
    """

    def __init__(self, budget: int, max_item: int) -> None:
        self.budget, self.max_item = budget, max_item
        self._data: OrderedDict[object, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._building: dict[object, threading.Lock] = {}
        self.hits = self.misses = 0

    def get(self, key: object, ttl: float, build: Callable[[], bytes]) -> bytes:
        hit = self._data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            self.hits += 1
            return hit[1]
        with self._lock:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:  # one builds, the others asking the same wait for its answer
            hit = self._data.get(key)
            if hit is not None and hit[0] > time.monotonic():
                self.hits += 1
                return hit[1]
            self.misses += 1
            body = build()
            with self._lock:
                self._building.pop(key, None)
                old = self._data.pop(key, None)
                if old is not None:
                    self._bytes -= len(old[1])
                if len(body) <= self.max_item:
                    now = time.monotonic()
                    for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
                        self._bytes -= len(self._data.pop(k)[1])
                    while self._data and self._bytes + len(body) > self.budget:
                        self._bytes -= len(self._data.popitem(last=False)[1][1])
                    self._data[key] = (now + ttl, body)
                    self._bytes += len(body)
            return body
