"""Simulated time: runs ``scale`` times faster than the wall clock, and can be fast-forwarded."""

from __future__ import annotations

import threading
import time


class SimClock:
    def __init__(self, scale: float = 1.0, start: float = 0.0) -> None:
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.scale = scale
        self._lock = threading.Lock()
        self._base_sim = start
        self._base_real = time.monotonic()

    def now(self) -> float:
        with self._lock:
            return self._base_sim + (time.monotonic() - self._base_real) * self.scale

    def advance(self, seconds: float) -> None:
        """Jump simulated time forward (a cooldown in seconds rather than days)."""
        with self._lock:
            self._base_sim += seconds

    def sleep(self, sim_seconds: float) -> None:
        time.sleep(max(0.0, sim_seconds / self.scale))
