"""Health counters shared by pollers, uplinks, web and metrics (plain data, updated in place)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from drivers.errors import DriverError

# What an instrument error is counted as: each driver error's ``kind`` (drivers/errors.py), and
# "internal" for anything else the poller meets. /metrics exposes every one, zero or not.
ERROR_KINDS: tuple[str, ...] = (*(cls.kind for cls in DriverError.__subclasses__()), "internal")


@dataclass
class InstrumentHealth:
    name: str
    model: str
    transport: str
    connected: bool = False
    identity: str | None = None
    last_good: float | None = None
    last_error: str | None = None
    last_error_t: float | None = None
    errors: Counter = field(default_factory=Counter)
    cycles: int = 0
    samples: int = 0
    reconnects: int = 0
    next_retry: float | None = None
    active_channel: str | None = None
    cycle_seconds: float = 0.0
    overruns: int = 0  # cycles that took longer than the poll interval: the next one started late
    # 372 autoscan: {"autoscan", "channel", "switched" (UNIX s), "rotation": [[channel, pause, dwell], ...]}
    scan: dict | None = None

    def as_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "name",
                "model",
                "transport",
                "connected",
                "identity",
                "last_good",
                "last_error",
                "last_error_t",
                "cycles",
                "samples",
                "reconnects",
                "next_retry",
                "active_channel",
                "cycle_seconds",
                "overruns",
                "scan",
            )
        }
        d["errors"] = dict(self.errors)
        d["age"] = None if self.last_good is None else max(0.0, time.time() - self.last_good)
        return d


@dataclass
class UplinkHealth:
    name: str
    kind: str
    connected: bool = False
    last_success: float | None = None
    backlog: int = 0
    sent: int = 0
    errors: Counter = field(default_factory=Counter)
    last_error: str | None = None

    def as_dict(self) -> dict:
        d = {
            k: getattr(self, k) for k in ("name", "kind", "connected", "last_success", "backlog", "sent", "last_error")
        }
        d["errors"] = dict(self.errors)
        return d


class SystemdWatchdogPinger:
    """Sends systemd its watchdog ping (``WATCHDOG=1``), but only once every poller has made progress.

    Not a watchdog itself: systemd is (``WatchdogSec=`` in the unit), and restarts the service
    when the pings stop. This class decides when a ping is honest. Each poller ``kick``s it
    after each completed cycle *or* each connection attempt, so an unplugged instrument (backing
    off) does not starve systemd's watchdog, but a poller hung inside I/O does.
    """

    def __init__(self, notify, names: list[str]) -> None:
        self.notify = notify
        self._pending = set(names)
        self._all = set(names)
        self._lock = threading.Lock()
        self.pings = 0

    def kick(self, name: str) -> None:
        with self._lock:
            self._pending.discard(name)
            if self._pending:
                return
            self._pending = set(self._all)
        self.pings += 1
        self.notify("WATCHDOG=1")
