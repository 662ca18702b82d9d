"""The web side: one Bottle app composed from route modules, and the HTTP server it runs in.

===============  ======================================================================
``api``          the read-only JSON API under /api/v1, and its OpenAPI document (``openapi``)
``control``      POST /api/v1/control/<node>/setpoint, and the token gate every change passes
``curves``       /api/v1/control/<node>/curves... (the operations: appliance/curve_api.py)
``alarms``       /api/v1/alarms, and acknowledging one
``grafana``      the Grafana JSON datasource (/grafana/...) and Infinity's /api/v1/timeseries
``panel``        the front panel: /, /static/..., /api/v1/panel
``metrics``      /metrics (the Prometheus collector)
(update)         POST /api/v1/update: an update bundle (appliance/update/web.py)
``common``       ceilings, the one error shape, parameter parsers, who is asking
``cache``        answers built once per commit and shared; repeated queries kept a few seconds
``server``       waitress with a whole-request deadline and per-client limits
===============  ======================================================================

Each route module's ``install(app, *, ...)`` names what it reads; ``make_app`` hands each its
pieces, so what a route can touch is visible at its signature.

Every error is one JSON shape, ``{"error": {"status": N, "message": "..."}}``; no
traceback ever reaches a client (it goes to the log).

**Bounded cost per request.** The Pi sits on the lab network, often unauthenticated, so no
request may cost more than these ceilings (common.py; over one: 400, 413 or 431, naming the limit):

* a data request (``/api/v1/data``, ``/grafana/query``) names at most ``MAX_SERIES`` distinct
  series (repeats are collapsed) and gets at most ``MAX_POINTS`` points per series and
  ``MAX_RESPONSE_POINTS`` in all (``maxDataPoints`` is clamped to that); the answer is
  streamed series by series, raw reads in windows of an hour, so its memory is one series'
  worth whatever the range;
* a CSV export names at most ``MAX_SERIES`` series (or all of them), covers at most ``MAX_EXPORT_DAYS``, and stops after
  ``MAX_EXPORT_ROWS`` rows (streamed, ~100 bytes a row);
* a request head (request line and headers) is at most ``MAX_HEAD`` bytes, a query string at most
  ``MAX_QUERY`` bytes and ``MAX_QUERY_PARAMS`` parameters, a body at most ``MAX_BODY`` bytes;
* everything else answers from a bounded set (series, instruments, 500 events).

``/api/v1/latest``, ``/api/v1/health``, ``/metrics`` and ``/api/v1/ping`` answer bytes serialised
once per store commit (at most once a second otherwise: ages and connection flags move with the
clock), so fifty panels cost what one does; the panel's plot queries (relative times) are kept for
a few seconds for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bottle import Bottle

from . import alarms as alarm_routes
from . import api, common, curves, grafana, metrics, panel
from . import control as control_routes
from .cache import AnswerCache, store_changed
from .common import CACHE_BUDGET, CACHE_ITEM
from .server import Server

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from ..alarm_service import AlarmService
    from ..config import Config
    from ..control import Control
    from ..poller import Poller
    from ..store import Store

__all__ = ["Server", "make_app"]


def make_app(
    *,
    store: Store,
    config: Config,
    pollers: Sequence[Poller],
    version: str,
    health: Callable[[], dict],
    metrics_registry: CollectorRegistry,
    alarms: AlarmService,
    control: Control | None,
    control_error: str | None,
) -> Bottle:
    """The app, every route module installed with the pieces it needs.

    ``health`` builds the /api/v1/health answer; ``control`` is None when instrument control
    could not start, and ``control_error`` then says why (shown in every 403).
    """
    app = Bottle(catchall=True, autojson=True)
    common.install(app)
    answers = AnswerCache(CACHE_BUDGET, CACHE_ITEM)
    app.answers = answers  # hits and misses, for tests and the bench
    changed = store_changed(store)
    access = control_routes.ControlAccess(control, control_error, common.networks(config.web.trusted_proxies))

    api.install(
        app,
        store=store,
        instruments=config.instrument,
        pollers=pollers,
        version=version,
        health=health,
        stale_after=config.web.stale_after,
        answers=answers,
        changed=changed,
    )
    control_routes.install(app, access=access, store=store, pollers=pollers)
    curves.install(app, access=access)
    grafana.install(app, store=store, version=version, answers=answers)
    ack_pin = alarm_routes.AckPin.load(config.control.ack_pin_file)
    alarm_routes.install(app, alarms=alarms, access=access, pin=ack_pin)
    panel.install(
        app,
        store=store,
        pollers=pollers,
        raw_retention_days=config.store.raw_retention_days,
        stale_after=config.web.stale_after,
        ack={"pin": ack_pin.pin is not None, "token": control is not None},
    )
    metrics.install(app, registry=metrics_registry, changed=changed)
    from ..update import web as update_routes

    update_routes.install(
        app, access=access, cfg=config.update, record=lambda kind, detail: store.event(kind, None, detail)
    )
    return app
