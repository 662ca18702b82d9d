"""Bottle app: JSON API, Grafana JSON datasource, /metrics, front panel. Reads the store only.

Every error is one JSON shape, ``{"error": {"status": N, "message": "..."}}``; no
traceback ever reaches a client (it goes to the log).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import bottle
from bottle import Bottle, HTTPError, request, response

from drivers.readings import LS240_STATUS_BITS, LS372_STATUS_BITS, decode_status

from . import curve_api
from .control import ControlRefused
from .freshness import schedule
from .samples import FLAG_CLOCK_UNSYNCED, FLAG_INVALID, FLAG_TIME_NUDGED
from .store import resolve_time

log = logging.getLogger("kelvinpi.web")
STATIC = Path(str(resources.files("appliance").joinpath("static")))
MAX_BODY = 1 << 20
API = "/api/v1"


def status_names(status: int, model: str | None) -> list[str]:
    table = LS240_STATUS_BITS if model == "240" else LS372_STATUS_BITS
    names = list(decode_status(status & 0xFF, table))
    if status & FLAG_INVALID:
        names.append("INVALID")
    if status & FLAG_CLOCK_UNSYNCED:
        names.append("CLOCK_UNSYNCED")
    if status & FLAG_TIME_NUDGED:
        names.append("TIME_NUDGED")
    return names


def clean(v):
    """No NaN or infinity on the wire: JSON has no such tokens."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def parse_time(name: str, raw: str | None, default: float) -> float:
    """UNIX seconds, sisock-relative (<= 0 is seconds before now), or ISO 8601."""
    if raw is None:
        return resolve_time(default)
    if not raw.strip():
        raise HTTPError(400, f"{name} is empty: leave it out for the default, or give UNIX seconds, seconds "
                             "before now (<= 0), or ISO 8601")
    try:
        return resolve_time(float(raw))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPError(400, f"{name}={raw!r} is not a time: give UNIX seconds, seconds before now (<= 0), "
                             "or ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_float(name: str, raw: str | None, lo: float = 0.0, hi: float = 1e9) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        v = float(raw)
    except ValueError:
        raise HTTPError(400, f"{name}={raw!r} is not a number") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise HTTPError(400, f"{name}={raw!r} must be between {lo:g} and {hi:g}")
    return v


def read_json() -> dict:
    length = request.content_length
    if length > MAX_BODY:
        raise HTTPError(413, f"request body of {length} bytes is over the {MAX_BODY} byte limit")
    raw = request.body.read(MAX_BODY + 1)
    if not raw:
        return {}  # no body at all: the defaults
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "JSON body must be an object")
    return body


def as_json(value) -> str:
    response.content_type = "application/json"
    return json.dumps(value)


def make_app(app_state) -> Bottle:
    """``app_state`` is the running Appliance (store, health, config); see service.py."""
    app = Bottle(catchall=True, autojson=True)
    store = app_state.store
    models = {i.name: i.model for i in app_state.config.instrument}

    def on_error(e: HTTPError) -> str:
        response.content_type = "application/json"
        if e.status_code >= 500 and not (e.status_code == 503 and isinstance(e.body, str) and e.body):
            if e.exception:
                log.error("internal error on %s %s: %r", request.method, request.path, e.exception,
                          exc_info=e.exception)
            message = "internal error (logged on the appliance)"
        else:
            message = e.body if isinstance(e.body, str) and e.body else e.status_line
        if e.status_code == 404 and (not isinstance(e.body, str) or message.startswith("Not found: '")):
            message = f"no such resource: {request.path}"
        if e.status_code == 405:
            message = f"method {request.method} not allowed on {request.path}"
        return json.dumps({"error": {"status": e.status_code, "message": message}})

    for code in (400, 401, 403, 404, 405, 409, 413, 500, 503):
        app.error(code)(on_error)

    @app.hook("after_request")
    def _headers():
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("Cache-Control", "no-store")

    def field_names(required: bool = True) -> list[str]:
        given = request.query.getall("field")
        if any(not n.strip() for n in given):
            raise HTTPError(400, "field= is empty: give <node>::<field> (see /api/v1/fields), or leave it out")
        names = list(given)
        if not names and required:
            raise HTTPError(400, "give at least one field=<node>::<field> (see /api/v1/fields)")
        known = store.field_map()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise HTTPError(404, f"unknown field {unknown[0]!r} (see /api/v1/fields)")
        return names

    # -- JSON API --------------------------------------------------------------------
    @app.get(f"{API}/health")
    def health():
        return app_state.health()

    @app.get(f"{API}/instruments")
    def instruments():
        out = []
        for cfg, poller in zip(app_state.config.instrument, app_state.pollers):
            snaps = store.snapshots(cfg.name)
            out.append({"name": cfg.name, "model": cfg.model, "description": cfg.description,
                        "transport": cfg.transport, "health": poller.health.as_dict(),
                        "configuration": snaps[-1][1] if snaps else None,
                        "configuration_t": snaps[-1][0] if snaps else None})
        return {"instruments": out}

    @app.post(f"{API}/control/<node>/setpoint")
    def control_setpoint(node):
        ctl = app_state.control
        try:
            if ctl is None:
                raise ControlRefused(403, f"instrument control is disabled: {app_state.control_error}")
            ctl.authorize(request.get_header("Authorization"))
            return ctl.set_setpoint(node, read_json(), request.remote_addr or "?")
        except ControlRefused as exc:
            raise HTTPError(exc.status, str(exc)) from None

    curve_api.install(app, app_state)  # /api/v1/control/<node>/curves...

    @app.get(f"{API}/fields")
    def fields():
        return {"fields": [{"field": f.name, "node": f.node, "name": f.field, "units": f.units,
                            "timeline": f.timeline, "description": f.description} for f in store.fields()]}

    @app.get(f"{API}/latest")
    def latest():
        now = time.time()
        stale = app_state.config.web.stale_after
        due = schedule(app_state.pollers, now)  # a scanned 372 channel is due once per rotation
        items = []
        for r in store.latest():
            d = due.get(r["field"])
            scanned = d is not None and d.scanned
            item = {"field": r["field"], "value": clean(r["value"]), "units": r["units"],
                    "status": r["status"], "status_bits": status_names(r["status"], models.get(r["node"])),
                    "t": r["t"], "age": max(0.0, now - r["t"]),
                    "stale": now - r["t"] > stale + (d.gap if scanned else 0.0)}
            if scanned:
                item["scan"] = {"period": d.gap, "next_in": d.next_in, "active": d.active}
            items.append(item)
        return as_json(items)

    @app.get(f"{API}/data")
    def data():
        names = field_names()
        start = parse_time("start", request.query.get("start"), -3600)
        end = parse_time("end", request.query.get("end"), 0)
        stride = parse_float("min_stride", request.query.get("min_stride"))
        if end < start:
            raise HTTPError(400, f"end ({end}) is before start ({start})")
        result = store.data(names, start, end, stride)
        fmap = store.field_map()
        return {"start": start, "end": end, "fields": {
            n: {"units": fmap[n].units, "tier": d.tier, "t": d.t, "value": [clean(v) for v in d.value],
                "status": d.status} for n, d in result.items()}}

    @app.get(f"{API}/export.csv")
    def export_csv():
        names = field_names(required=False) or [f.name for f in store.fields()]
        start = parse_time("start", request.query.get("start"), -86400)
        end = parse_time("end", request.query.get("end"), 0)
        if end < start:
            raise HTTPError(400, f"end ({end}) is before start ({start})")
        fmap = store.field_map()
        curves = CurveLookup(store)
        response.content_type = "text/csv; charset=utf-8"
        response.set_header("Content-Disposition", 'attachment; filename="kelvinpi-export.csv"')

        def rows():
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["field", "t_unix", "time_utc", "value", "units", "status", "status_bits", "curve"])
            for name, t, v, st in store.iter_raw(names, start, end):
                info = fmap[name]
                w.writerow([name, f"{t:.3f}", datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds"),
                            "" if v is None else repr(v), info.units, st,
                            "|".join(status_names(st, models.get(info.node))),
                            curves.curve(info.node, name, t) if info.units == "K" else ""])
                if buf.tell() > 16384:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()
        return rows()

    @app.get(f"{API}/openapi.json")
    def openapi():
        from .openapi import spec

        return spec()

    @app.get(f"{API}/events")
    def events():
        since = parse_time("since", request.query.get("since"), -86400)
        return {"events": store.events(since, 500)}

    # -- Grafana JSON datasource (SimpleJSON contract; simpod's extras) ----------------
    @app.route("/grafana", method=["GET", "POST"])
    @app.route("/grafana/", method=["GET", "POST"])
    def grafana_root():
        return {"status": "ok", "kelvinpi": app_state.version}

    @app.post("/grafana/search")
    def grafana_search():
        body = read_json()
        target = body.get("target", "")
        if not isinstance(target, str):
            raise HTTPError(400, "search target must be a string")
        return as_json([f.name for f in store.fields() if target.lower() in f.name.lower()])

    @app.post("/grafana/metrics")
    def grafana_metrics():
        read_json()
        return as_json([{"label": f.name, "value": f.name} for f in store.fields()])

    @app.post("/grafana/metric-payload-options")
    @app.post("/grafana/variable")
    @app.post("/grafana/tag-keys")
    @app.post("/grafana/tag-values")
    @app.post("/grafana/annotations")
    def grafana_empty():
        read_json()
        return as_json([])

    @app.post("/grafana/query")
    def grafana_query():
        body = read_json()
        rng = body.get("range")
        if not isinstance(rng, dict):
            raise HTTPError(400, "query needs range: {from, to}")
        raw_from, raw_to = rng.get("from"), rng.get("to")
        start = parse_time("range.from", None if raw_from is None else str(raw_from), -3600)
        end = parse_time("range.to", None if raw_to is None else str(raw_to), 0)
        if end < start:
            raise HTTPError(400, "range.to is before range.from")
        max_points = body.get("maxDataPoints", 1000)
        if not isinstance(max_points, (int, float)) or isinstance(max_points, bool) or not 1 <= max_points <= 100000:
            raise HTTPError(400, "maxDataPoints must be a number from 1 to 100000")
        interval_ms = body.get("intervalMs")
        if interval_ms is None and isinstance(body.get("interval"), str):
            interval_ms = parse_interval(body["interval"]) * 1000
        if interval_ms is not None and (not isinstance(interval_ms, (int, float)) or interval_ms < 0):
            raise HTTPError(400, "intervalMs must be a non-negative number")
        stride = max((interval_ms or 0) / 1000, (end - start) / max_points)
        targets = body.get("targets")
        if not isinstance(targets, list):
            raise HTTPError(400, "query needs targets: a list of {target: <node>::<field>}")
        names = []
        for t in targets:
            if not isinstance(t, dict) or not isinstance(t.get("target", ""), str):
                raise HTTPError(400, "each target must be an object with a string 'target'")
            if t.get("hide") or not t.get("target"):
                continue
            names.append(t["target"])
        result = store.data(names, start, end, stride, max_points=int(max_points))
        out = []
        for n in names:
            d = result.get(n)
            points = [] if d is None else [[clean(v), t * 1000.0] for t, v in zip(d.t, d.value)]
            out.append({"target": n, "datapoints": points})
        return as_json(out)

    from .web_alarms import add_panel_routes, add_routes as alarm_routes

    alarm_routes(app, app_state)
    add_panel_routes(app, app_state)

    # -- metrics and front panel -----------------------------------------------------------
    @app.get("/metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        response.content_type = CONTENT_TYPE_LATEST
        return generate_latest(app_state.metrics_registry)

    @app.get("/")
    def index():
        return bottle.static_file("index.html", root=str(STATIC))

    @app.get("/static/<path:path>")
    def static(path):
        return bottle.static_file(path, root=str(STATIC))

    from .web_infinity import register_infinity  # wide JSON/CSV time series for Grafana's Infinity

    register_infinity(app, app_state)
    return app


def parse_interval(text: str) -> float:
    """Grafana interval strings (``500ms``, ``5s``, ``1m``, ``6h``, ``1d``, ``1w``, ``1y``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    t = text.strip()
    for u in sorted(units, key=len, reverse=True):
        if t.endswith(u):
            try:
                return float(t[: -len(u)]) * units[u]
            except ValueError:
                break
    raise HTTPError(400, f"interval {text!r} is not a Grafana interval like 500ms, 5s, 1m, 1h, 1d")


class CurveLookup:
    """Which calibration curve produced a temperature, from the configuration snapshots."""

    def __init__(self, store) -> None:
        self.store = store
        self._cache: dict[str, list] = {}

    def curve(self, node: str, field: str, t: float) -> str:
        snaps = self._cache.get(node)
        if snaps is None:
            snaps = self._cache[node] = self.store.snapshots(node)
        active = None
        for st, snap in snaps:
            if st <= t:
                active = snap
            else:
                break
        if active is None and snaps:
            active = snaps[0][1]
        if not active:
            return ""
        for ch, names in active.get("fields", {}).items():
            if field in names:
                chan = active.get("channels", {}).get(ch, {})
                if "inset" in chan:
                    num = chan["inset"].get("curve")
                    hdr = active.get("curves", {}).get(str(num), {})
                    return f"{num}:{hdr.get('name', '')}:{hdr.get('serial', '')}" if num else "none"
                if "curve" in chan:
                    hdr = chan["curve"]
                    return f"input:{hdr.get('name', '')}:{hdr.get('serial', '')}"
        return ""
