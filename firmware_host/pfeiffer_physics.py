"""The pressures a Bluefors fridge's six gauges see, in simulated time (no wire format here).

P1 is the vacuum can (OVC), P2 the still line, P3 the condensing line, P4 the backing line, P5
the mixture tank and P6 the service manifold, at typical values of a cold, circulating system.
Each reading has a small seeded noise drawn per (gauge, tick), so two clients asking at the same
simulated moment read the same pressure. A *soft vacuum* (a leak, a warming cryopump) makes a
gauge's pressure grow by e every ``tau`` simulated seconds from the moment it started, up to
atmosphere; ending it puts the gauge back at its base.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from .physics import Noise

CHANNELS = 6
BASE_MBAR = {1: 1.5e-6, 2: 3.0e-2, 3: 4.0e2, 4: 2.0, 5: 8.0e1, 6: 5.0e-2}
ATMOSPHERE_MBAR = 1013.0
TICK = 0.1  # seconds between the controller's measurements (its display/update cycle)


@dataclass
class Vacuum:
    """Six gauges' true pressures (mbar), with leaks started at a simulated time."""

    seed: int | None = None
    base: dict[int, float] = field(default_factory=lambda: dict(BASE_MBAR))
    soft: dict[int, tuple[float, float]] = field(default_factory=dict)  # gauge -> (start, tau)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.noise = Noise(self.seed, relative=0.01)

    def go_soft(self, gauge: int, tau: float, now: float) -> None:
        """From ``now``, the gauge's pressure grows by e every ``tau`` s; ``tau`` 0 ends it."""
        if gauge not in self.base:
            raise ValueError(f"gauge {gauge} is not 1-{CHANNELS}")
        if tau < 0 or not math.isfinite(tau):
            raise ValueError(f"time constant {tau} is not a positive number of seconds")
        with self.lock:
            if tau == 0:
                self.soft.pop(gauge, None)
            else:
                self.soft[gauge] = (now, tau)

    def pressure(self, gauge: int, t: float) -> float:
        """The true pressure of ``gauge`` at simulated time ``t`` (the measurement of its tick)."""
        tick = math.floor(t / TICK)
        with self.lock:
            p = self.base[gauge]
            leak = self.soft.get(gauge)
        if leak is not None:
            start, tau = leak
            p *= math.exp(min(700.0, max(0.0, t - start) / tau))
        return min(ATMOSPHERE_MBAR, self.noise.apply_at(p, gauge, tick))
