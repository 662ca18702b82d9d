"""Alarm routes: ``GET /api/v1/alarms`` (every rule's state, active first) and
``POST /api/v1/alarms/<name>/ack`` (acknowledge: repeats stop), the latter with the control
token like any change from the network, and refused unless control is enabled."""
from __future__ import annotations

from bottle import Bottle, HTTPError, request

from .control import ControlRefused

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
            return app_state.alarms.ack(name, request.remote_addr or "?")
        except KeyError:
            raise HTTPError(404, f"no alarm named {name!r} (see /api/v1/alarms)") from None
