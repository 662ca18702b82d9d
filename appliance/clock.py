"""Is the system clock synchronised? The Pi has no RTC: until NTP syncs, readings are flagged."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

TIME_ERROR = 5


@functools.cache
def _libc() -> ctypes.CDLL:
    """Looked up once: ``find_library`` runs ``ldconfig`` (and maybe a compiler) in a child process
    each time, and the clock is checked every few seconds: that was a process spawned, and its
    temporary files written to the card, every check."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def clock_synchronised() -> bool | None:
    """adjtimex(2) read-only: False when the kernel says the clock is unsynchronised (TIME_ERROR).

    ``KELVINPI_ASSUME_CLOCK_SYNC=1`` overrides it (containers and tests often cannot tell).
    """
    forced = os.environ.get("KELVINPI_ASSUME_CLOCK_SYNC")
    if forced is not None:
        return forced == "1"
    try:
        libc = _libc()
        buf = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes=0 means read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR
