"""The control route (``POST /api/v1/control/<node>/setpoint``) and the gate every changing route passes.

What a change does lives in appliance/control.py (and curve_api.py); here is only who may ask
and who asked. ``ControlAccess`` is the one gate: no ``Control`` (disabled, or its token file
unreadable: the reason is kept) answers 403; a missing or wrong bearer token 401. The curve and
alarm-acknowledge routes go through the same gate.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bottle import Bottle, HTTPError, request, response

from ..control import ControlRefused
from ..settings import SettingService
from .common import API, client_address, read_json

if TYPE_CHECKING:
    from ..control import Control
    from ..poller import Poller
    from ..store import Store


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


def install(app: Bottle, *, access: ControlAccess, store: Store | None = None, pollers: Sequence[Poller] = ()) -> None:
    install_settings(app, access=access)
    if store is not None:
        install_view(app, store=store, pollers=pollers)

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


CHANGES_SHOWN = 50  # the last control and curve events an instrument's settings view lists


def settings_view(store: Store, poller: Poller) -> dict:
    """What an instrument is set to (its latest configuration snapshot) and the last changes, with
    who and when: read-only, from the store, so it needs no token and never touches the link."""
    node = poller.cfg.name
    snaps = store.snapshots(node)
    t, snap = snaps[-1] if snaps else (None, {})
    curves = snap.get("curves", {})
    inputs = {}
    for ch, entry in snap.get("channels", {}).items():
        e = dict(entry)
        if "inset" in e:  # the 372 names the curve by number in INSET; its header is in "curves"
            e["curve"] = curves.get(str(e["inset"].get("curve")))
        inputs[ch] = e
    # asked of the store directly: the newest of this node's changes, however many other events came since
    changes = [
        {"t": e["t"], "kind": e["kind"], "detail": e["detail"]}
        for e in store.events(limit=CHANGES_SHOWN, node=node, kinds=("control", "curve"))
    ]
    return {
        "node": node,
        "model": poller.cfg.model,
        "configuration_t": t,
        "inputs": inputs,
        "outputs": snap.get("outputs", {}),
        "scanner": snap.get("scan"),
        "incomplete_curves": dict(poller.health.incomplete_curves),
        "changes": changes,
    }


def _cells(d: dict) -> str:
    return ", ".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in d.items())


def settings_page(view: dict) -> str:
    """The view as a plain HTML page (no script: it is the panel's read-only settings view)."""
    rows = []
    for ch, e in view["inputs"].items():
        curve = e.get("curve") or {}
        setup = {k: v for k, v in e.items() if k not in ("name", "curve")}
        rows.append(
            f"<tr><td>{html.escape(ch)}</td><td>{html.escape(str(e.get('name', '')))}</td>"
            f"<td>{html.escape(str(curve.get('name', '')))} {html.escape(str(curve.get('serial', '')))}</td>"
            f"<td>{'; '.join(f'{html.escape(k)}: {_cells(v)}' for k, v in setup.items() if isinstance(v, dict))}</td></tr>"
        )
    outputs = [
        f"<tr><td>{html.escape(o)}</td><td>{'; '.join(f'{html.escape(k)}: {_cells(v) if isinstance(v, dict) else html.escape(str(v))}' for k, v in d.items())}</td></tr>"
        for o, d in view["outputs"].items()
    ]
    changes = [
        f"<tr><td>{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(c['t']))} UTC</td><td>{html.escape(c['detail'])}</td></tr>"
        for c in view["changes"]
    ]
    incomplete = "".join(
        f"<p class=warn>curve {html.escape(n)} is incomplete: {html.escape(why)}</p>"
        for n, why in view["incomplete_curves"].items()
    )
    node = html.escape(view["node"])
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{node} settings</title>"
        '<link rel=stylesheet href="/static/panel.css"></head><body>'
        f"<h1>{node}: instrument settings (Model {html.escape(view['model'])})</h1>{incomplete}"
        "<h2>Inputs</h2><table><tr><th>input</th><th>name</th><th>curve</th><th>setup</th></tr>"
        + "".join(rows)
        + "</table><h2>Heater outputs</h2><table><tr><th>output</th><th>setup</th></tr>"
        + "".join(outputs)
        + "</table><h2>Last changes</h2><table><tr><th>when</th><th>what, by whom</th></tr>"
        + "".join(changes)
        + "</table></body></html>"
    )


def install_view(app: Bottle, *, store: Store | None, pollers: Sequence[Poller]) -> None:
    """The read-only settings view of each instrument: JSON, and the same as a page."""
    by_name = {p.cfg.name: p for p in pollers}

    def find(node: str) -> Poller:
        poller = by_name.get(node)
        if poller is None:
            raise HTTPError(404, f"no instrument named {node!r}")
        return poller

    @app.get(f"{API}/instruments/<node>/settings")
    def settings_json(node):
        return settings_view(store, find(node))

    @app.get("/instruments/<node>/settings")
    def settings_html(node):
        view = settings_view(store, find(node))
        response.content_type = "text/html; charset=utf-8"
        return settings_page(view)


def openapi_view_paths(ok: Callable[..., dict], errors: Callable[..., dict]) -> dict:
    node = {"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        f"{API}/instruments/{{node}}/settings": {
            "get": {
                "summary": "an instrument's settings as last snapshotted and its last control changes (who, when); "
                "read-only, no token",
                "parameters": [node],
                "responses": {**ok({"type": "object"}), **errors(404)},
            }
        },
        "/instruments/{node}/settings": {
            "get": {
                "summary": "the same as an HTML page (the panel's instrument settings view)",
                "parameters": [node],
                "responses": {**ok({"type": "string"}, "text/html"), **errors(404)},
            }
        },
    }
