"""The front panel: its page and assets (``/``, ``/static/<path>``) and ``GET /api/v1/panel``, what it
shows beyond /api/v1/health (how far back the store reaches, the card's wear per day, the channels
in config order)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import bottle
from bottle import Bottle

from ..freshness import schedule
from ..models import MODELS
from .common import API

if TYPE_CHECKING:
    from ..poller import Poller
    from ..store import Store

STATIC = Path(str(resources.files("appliance").joinpath("static")))


def _write_bytes() -> int | None:
    """Bytes this process has sent to storage (/proc/self/io), for the store card's wear per day."""
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def install(
    app: Bottle,
    *,
    store: Store,
    pollers: Sequence[Poller],
    raw_retention_days: float,
    stale_after: float,
    ack: dict | None = None,
) -> None:
    """``ack`` says how the panel may acknowledge an alarm (``{"pin": bool, "token": bool}``): the
    kiosk shows its PIN pad only when the appliance has an acknowledge PIN."""
    writes: deque[tuple[float, int]] = deque()  # (time, write_bytes) at each panel request, the last hour
    lock = threading.Lock()

    def wear_per_day(now: float) -> float | None:
        """Bytes written per day over the last hour (at least a minute of it): the start-up burst
        (opening, migrating the store) and one busy second do not count as a day's wear."""
        wb = _write_bytes()
        if wb is None:
            return None
        with lock:
            writes.append((now, wb))
            while len(writes) > 2 and now - writes[1][0] >= 3600:
                writes.popleft()
            t0, b0 = writes[0]
        return (wb - b0) * 86400 / (now - t0) if now - t0 >= 60 else None

    @app.get(f"{API}/panel")
    def panel():
        """What the front panel shows beyond health: how far back the store reaches, wear per day,
        and the instruments' fields in config order (the combined plot's order)."""
        oldest_t = store.oldest_time()
        now = time.time()
        due = schedule(pollers, now)  # a scanned 372 channel is read once per rotation
        order = []
        for p in pollers:
            for plan in list(p.plans.values()):
                key = plan.kelvin or plan.sensor
                d = due.get(key.name) if key is not None else None
                order.append(
                    {
                        "node": p.cfg.name,
                        "channel": plan.number,
                        "name": plan.name,
                        "kelvin": plan.kelvin.name if plan.kelvin else None,
                        "sensor": plan.sensor.name if plan.sensor else None,
                        "sensor_units": plan.sensor.units if plan.sensor else None,
                        # seconds readings are expected apart: a longer silence is a gap in the plot
                        "gap": max(d.gap if d is not None else 0.0, p.health.cycle_seconds or 0.0, p.cfg.interval),
                    }
                )
        plant = {}  # one card per plant instrument (a compressor), as its driver class declares it
        for p in pollers:
            spec = getattr(MODELS.get(p.cfg.model), "PANEL", None)
            if spec is not None:
                plant[p.cfg.name] = spec
        return {
            "store": {
                "oldest": oldest_t,
                "days_kept": (now - oldest_t) / 86400 if oldest_t else 0.0,
                "raw_retention_days": raw_retention_days,
                "write_bytes_per_day": wear_per_day(now),
            },
            "channels": order,
            "plant": plant,
            "stale_after": stale_after,
            "ack": ack or {"pin": False, "token": False},
        }

    @app.get("/")
    def index():
        return bottle.static_file("index.html", root=str(STATIC))

    @app.get("/static/<path:path>")
    def static(path):
        return bottle.static_file(path, root=str(STATIC))
