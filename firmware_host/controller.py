"""What the emulated Lake Shore controllers (372, 336, 350) share: their event register and their clock.

* ``EventRegisters``: ``*ESR?`` read-and-clear, the error bits a refused command sets, ``*RST``
  leaving the registers alone (IEEE 488.2);
* ``TickedReadings``: an input is measured 10 times a second, so repeated queries in one tick agree;
* ``SteppedLoop``: the heater loops run on a fixed grid of simulated time, whoever polls (issue 24,
  item 6), with a long fast-forward taken in at most ``HEATER_MAX_STEPS`` coarser steps.

A device supplies the state these read (``esr``, ``ese``, ``lock``, ``power_on``, ``_measure``,
``_heater_step``, the ``_heater_*`` grid fields); the mixins hold the logic once.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .protocol import CommandError, ExecutionError

ESR_QUERY, ESR_EXEC, ESR_CMD, ESR_PON = 4, 16, 32, 128
HEATER_STEP = 0.1  # simulated seconds per control-loop step (the controllers read 10 times a second)
HEATER_MAX_STEPS = 20000  # a longer fast-forward takes coarser steps
TICK_SLACK = 1e-6  # a step time summed from 0.1 s steps may fall a hair short of its tick


class EventRegisters:
    """``*ESR?``, the error bits, ``*RST``."""

    if TYPE_CHECKING:
        esr: int
        ese: int
        lock: threading.RLock

        def power_on(self) -> None: ...

    def reset_settings(self) -> None:
        """``*RST``: factory settings without the power-on flag."""
        with self.lock:
            esr, ese = self.esr, self.ese
            self.power_on()
            self.esr, self.ese = esr, ese  # IEEE 488.2: *RST leaves the status registers alone

    def error(self, exc: Exception) -> None:
        with self.lock:
            self.esr |= (
                ESR_CMD if isinstance(exc, CommandError) else ESR_EXEC if isinstance(exc, ExecutionError) else ESR_QUERY
            )

    def read_esr(self) -> int:
        """``*ESR?``: the Standard Event Register, cleared by reading it."""
        with self.lock:
            v, self.esr = self.esr, 0
        return v


class TickedReadings:
    """A reading per input per tenth of a simulated second."""

    if TYPE_CHECKING:
        _tick_cache: dict[str, tuple[int, Any]]

        def _measure(self, ch: str, t: float) -> Any: ...

    def _reading_at(self, ch: str, t: float) -> Any:
        """The controller updates a reading 10 times a second; repeated queries in one tick agree."""
        tick = int(t * 10 + TICK_SLACK)
        cached = self._tick_cache.get(ch)
        if cached and cached[0] == tick:
            return cached[1]
        m = self._measure(ch, tick / 10)
        self._tick_cache[ch] = (tick, m)
        return m


class SteppedLoop:
    """The heater loops' grid of simulated time: step k runs at ``_heater_origin + k * HEATER_STEP``."""

    if TYPE_CHECKING:
        _heater_t: float
        _heater_origin: float
        _heater_n: int

        def _heater_step(self, t: float, dt: float) -> None: ...

    def _advance_heater(self, t: float) -> None:
        """Run the loops up to simulated time ``t`` in fixed steps.

        The loop is a function of simulated time only: however often (or seldom) a client queries,
        the same simulated interval runs the same steps. A long fast-forward takes at most
        ``HEATER_MAX_STEPS`` coarser steps, so it stays cheap.
        """
        gap = t - self._heater_t
        if gap <= 0:
            return
        if gap > HEATER_STEP * HEATER_MAX_STEPS:  # a long fast-forward: coarse steps, then a new grid
            step = gap / HEATER_MAX_STEPS
            start = self._heater_t
            for k in range(1, HEATER_MAX_STEPS + 1):
                self._heater_step(start + k * step, step)
            self._heater_t = self._heater_origin = t
            self._heater_n = 0
            return
        # Step k runs at origin + k * 0.1 s, computed rather than summed, and runs once ``t`` has
        # reached it to within TICK_SLACK: a time summed from many small clock advances (a client
        # polling at 10 Hz) and the same time reached in one advance run the same steps.
        while (nxt := self._heater_origin + (self._heater_n + 1) * HEATER_STEP) <= t + TICK_SLACK:
            self._heater_n += 1
            self._heater_t = nxt
            self._heater_step(nxt, HEATER_STEP)
