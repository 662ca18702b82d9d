"""Alarm routes: ``GET /api/v1/alarms`` (every rule's state, active first) and
``POST /api/v1/alarms/<name>/ack`` (acknowledge: repeats stop), the latter with the control
token like any change from the network, and refused unless control is enabled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bottle import Bottle, HTTPError

from ..control import ControlRefused
from .common import API
from .control import ControlAccess

if TYPE_CHECKING:
    from ..alarm_service import AlarmService


def install(app: Bottle, *, alarms: AlarmService, access: ControlAccess) -> None:
    @app.get(f"{API}/alarms")
    def alarms_route():
        rows = alarms.alarms()
        rows.sort(key=lambda a: (not a["active"], a["acked"], a["name"]))
        return {"alarms": rows, "active": sum(1 for a in rows if a["active"])}

    @app.post(f"{API}/alarms/<name>/ack")
    def ack(name):
        try:
            access.authorize("acknowledging needs instrument control")
        except ControlRefused as exc:
            raise HTTPError(exc.status, str(exc)) from None
        try:
            return alarms.ack(name, access.who())  # the socket's peer, never a header it wrote
        except KeyError:
            raise HTTPError(404, f"no alarm named {name!r} (see /api/v1/alarms)") from None
