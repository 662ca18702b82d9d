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
from ..settings import SettingService
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
            raise ControlRefused(403, f"{refusal}: {token_problem(self.error)}")
        self.control.authorize(request.get_header("Authorization"))
        return self.control

    def who(self) -> str:
        """The socket's peer (a proxy header only from web.trusted_proxies): who made a change."""
        return client_address(request.environ, self.trusted)


def token_problem(error: str | None) -> str:
    """Why control could not start, in words that name the setting, never the file's path or mode
    (an unauthenticated client reads this; the appliance's log has the full reason)."""
    text = error or ""
    if "readable by others" in text:
        why = "is readable by others: chmod 600 the file it names"
    elif "is empty" in text:
        why = "names an empty file"
    elif "UTF-8" in text:
        why = "names a file that is not UTF-8 text"
    else:
        why = "names a file the appliance cannot read"
    return f"control.token_file {why} (the appliance's log says which)"


def install(app: Bottle, *, access: ControlAccess) -> None:
    install_settings(app, access=access)

    @app.post(f"{API}/control/<node>/setpoint")
    def control_setpoint(node):
        try:
            ctl = access.authorize("instrument control is disabled")
            return ctl.set_setpoint(node, read_json(), access.who())
        except ControlRefused as exc:
            raise HTTPError(exc.status, str(exc)) from None


def install_settings(app: Bottle, *, access: ControlAccess) -> None:
    """``/api/v1/control/<node>/settings[/<name>]``: the declared settings (appliance/settings.py)."""

    def guarded(fn):
        def handler(*args, **kwargs):
            try:
                return fn(SettingService(access.authorize("instrument control is disabled")), *args, **kwargs)
            except ControlRefused as exc:
                raise HTTPError(exc.status, str(exc)) from None

        return handler

    base = f"{API}/control/<node>/settings"
    app.get(base)(guarded(lambda s, node: s.describe(node)))
    app.get(f"{base}/<name>")(guarded(lambda s, node, name: s.get(node, name, request.query.get("target"))))
    app.put(f"{base}/<name>")(guarded(lambda s, node, name: s.set(node, name, read_json(), access.who())))
