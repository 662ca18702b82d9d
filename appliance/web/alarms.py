"""Alarm routes: ``GET /api/v1/alarms`` (every rule's state, active first) and
``POST /api/v1/alarms/<name>/ack`` (acknowledge: repeats stop), the latter with the control
token like any change from the network, and refused unless control is enabled."""
from __future__ import annotations

from bottle import Bottle, HTTPError, request

from ..control import ControlRefused

API = "/api/v1"


def add_routes(app: Bottle, app_state) -> None:
    @app.get(f"{API}/alarms")
    def alarms():
        rows = app_state.alarms.alarms()
        rows.sort(key=lambda a: (not a["active"], a["acked"], a["name"]))
        return {"alarms": rows, "active": sum(1 for a in rows if a["active"])}

    @app.post(f"{API}/alarms/<name>/ack")
    def ack(name):
        ctl = app_state.control
        try:
            if ctl is None:
                raise ControlRefused(403, f"acknowledging needs instrument control: {app_state.control_error}")
            ctl.authorize(request.get_header("Authorization"))
        except ControlRefused as exc:
            raise HTTPError(exc.status, str(exc)) from None
        try:
            from . import _networks, client_address  # the socket's peer, never a header it wrote

            who = client_address(request.environ, _networks(app_state.config.web.trusted_proxies))
            return app_state.alarms.ack(name, who)
        except KeyError:
            raise HTTPError(404, f"no alarm named {name!r} (see /api/v1/alarms)") from None


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


def add_panel_routes(app: Bottle, app_state) -> None:
    import threading
    from collections import deque

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
        import time

        store = app_state.store
        conn = store.reader()
        oldest = [r[0] for r in (conn.execute("SELECT min(t0) FROM block").fetchone(),
                                 conn.execute("SELECT min(t0) FROM fresh").fetchone()) if r[0] is not None]
        now = time.time()
        order = []
        for p in app_state.pollers:
            for plan in list(p.plans.values()):
                order.append({"node": p.cfg.name, "channel": plan.number, "name": plan.name,
                              "kelvin": plan.kelvin.name if plan.kelvin else None,
                              "sensor": plan.sensor.name if plan.sensor else None,
                              "sensor_units": plan.sensor.units if plan.sensor else None})
        oldest_t = min(oldest) / 1000 if oldest else None
        return {"store": {"oldest": oldest_t, "days_kept": (now - oldest_t) / 86400 if oldest_t else 0.0,
                          "raw_retention_days": app_state.config.store.raw_retention_days,
                          "write_bytes_per_day": wear_per_day(now)},
                "channels": order, "stale_after": app_state.config.web.stale_after}
