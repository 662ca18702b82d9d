"""The control route (``POST /api/v1/control/<node>/setpoint``) and the gate every changing route passes.

What a change does lives in appliance/control.py (and curve_api.py); here is only who may ask
and who asked. ``ControlAccess`` is the one gate: no ``Control`` (disabled, or its token file
unreadable: the reason is kept) answers 403; a missing or wrong bearer token 401. The curve and
alarm-acknowledge routes go through the same gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bottle import Bottle, HTTPError, request

from ..control import ControlRefused
from .common import API, client_address, read_json

if TYPE_CHECKING:
    from ..control import Control


@dataclass(frozen=True)
class ControlAccess:
    """The running ``Control`` (None when it could not start: ``error`` says why) and the proxies
    whose ``X-Forwarded-For`` is believed when naming who made a change."""

    control: Control | None
    error: str | None
    trusted: list

    def authorize(self, refusal: str) -> Control:
        """The request's bearer token checked; ``ControlRefused`` (403: ``refusal``, then why; 401) if not."""
        if self.control is None:
            raise ControlRefused(403, f"{refusal}: {self.error}")
        self.control.authorize(request.get_header("Authorization"))
        return self.control

    def who(self) -> str:
        """The socket's peer (a proxy header only from web.trusted_proxies): who made a change."""
        return client_address(request.environ, self.trusted)


def install(app: Bottle, *, access: ControlAccess) -> None:
    @app.post(f"{API}/control/<node>/setpoint")
    def control_setpoint(node):
        try:
            ctl = access.authorize("instrument control is disabled")
            return ctl.set_setpoint(node, read_json(), access.who())
        except ControlRefused as exc:
            raise HTTPError(exc.status, str(exc)) from None
