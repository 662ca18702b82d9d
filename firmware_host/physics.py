"""A small thermal model of a dilution refrigerator.

Five stages (50 K, 4 K, still, cold plate, mixing chamber) relax towards targets
that depend on the stage above: the dilution unit only condenses once the 4 K
plate is cold, so a cooldown from room temperature shows the familiar staircase.
The sample heater's power raises the mixing chamber through the T^2 cooling
power of a dilution unit. Time is simulated seconds, so a cooldown can be
fast-forwarded.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field

STAGES = ("50k", "4k", "still", "cold_plate", "mxc")
BASE = {"50k": 42.0, "4k": 3.05, "still": 0.82, "cold_plate": 0.095, "mxc": 0.0115}
TAU = {"50k": 9000.0, "4k": 7000.0, "still": 1200.0, "cold_plate": 900.0, "mxc": 600.0}
ROOM = 295.0
MXC_COOLING = 1.0e-2  # W/K^2: 100 uW at 100 mK
STILL_COOLING = 2.0e-3  # W/K^2


@dataclass
class Fridge:
    """Stage temperatures in kelvin, advanced in simulated seconds."""

    temps: dict[str, float] = field(default_factory=lambda: dict(BASE))
    sample_heater_w: float = 0.0
    still_heater_w: float = 0.0
    t: float = 0.0
    warmup_tau: float = 0.0  # > 0: warming towards room temperature with this time constant (s)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def warm(cls) -> Fridge:
        return cls(temps={s: ROOM for s in STAGES})

    def _targets(self) -> dict[str, float]:
        T = self.temps
        targets = {"50k": BASE["50k"], "4k": max(BASE["4k"], 0.07 * T["50k"])}
        condensing = T["4k"] < 4.5
        for stage, parent in (("still", "4k"), ("cold_plate", "still"), ("mxc", "cold_plate")):
            targets[stage] = BASE[stage] if condensing else T[parent]
        targets["still"] = math.sqrt(targets["still"] ** 2 + self.still_heater_w / STILL_COOLING)
        targets["mxc"] = math.sqrt(targets["mxc"] ** 2 + self.sample_heater_w / MXC_COOLING)
        return targets

    def advance_to(self, t: float) -> None:
        with self.lock:
            while self.t < t:
                dt = min(t - self.t, 20.0)
                if self.warmup_tau > 0:  # a cooldown run backwards: every stage relaxes towards the room
                    for s in STAGES:
                        self.temps[s] += (ROOM - self.temps[s]) * (1 - math.exp(-dt / self.warmup_tau))
                    self.t += dt
                    continue
                targets = self._targets()
                for s in STAGES:
                    # Warm stages relax slowly; the dilution stages respond fast once condensing.
                    tau = TAU[s] if self.temps[s] > 5 or s in ("50k", "4k") else TAU[s] / 10
                    self.temps[s] += (targets[s] - self.temps[s]) * (1 - math.exp(-dt / tau))
                self.t += dt

    def temperature(self, stage: str, t: float) -> float:
        self.advance_to(t)
        return self.temps[stage]


class Noise:
    """Gaussian relative noise, seeded, updated at the instrument's reading rate."""

    def __init__(self, seed: int | None, relative: float = 2e-4) -> None:
        self.rng = random.Random(seed)
        self.relative = relative
        self.base = seed if seed is not None else random.randrange(2**32)

    def apply_at(self, value: float, *key: object) -> float:
        """Noise drawn for ``key`` alone (an input, a reading tick): the same key gets the same
        noise however many other values were drawn before, so a reading does not depend on
        which queries a client happened to send (the 372's heater loop reads through this)."""
        rng = random.Random(f"{self.base}:" + ":".join(map(str, key)))
        return value * (1 + rng.gauss(0, self.relative))

    def apply(self, value: float) -> float:
        return value * (1 + self.rng.gauss(0, self.relative))
