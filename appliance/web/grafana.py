"""A wide time-series table for Grafana's Infinity datasource (and any tool reading JSON or CSV tables).

``GET /api/v1/timeseries?field=<node>::<field>&field=...&from=${__from}&to=${__to}&max_points=1000``

One row per time, UNIX milliseconds in ``time``, one column per field (keyed by its name, or by
the ``name=`` given in the same position: Infinity does not substitute dashboard variables in
its column selectors, so a dashboard asking for ``field=${node}::mxc_t&name=mxc_t`` can declare the
column ``mxc_t`` whatever ``$node`` is) (``null`` / an empty CSV cell
where that field has no sample at that time), oldest first, so Infinity's parser makes a Grafana
time-series frame with no transformation. ``from``/``to`` are milliseconds as Grafana's ``${__from}``
and ``${__to}`` give them; ``interval_ms`` (``${__interval_ms}``) is the finest spacing wanted. The
answer comes from ``Store.data``: at most ``max_points`` per field (default 1000, at most
10000), raw samples for short ranges and the rollup tiers (means of aligned buckets, so the
fields share their times) for long ones, so the work is bounded whatever the range.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time

from bottle import Bottle, HTTPError, request, response

DEFAULT_MAX_POINTS = 1000
MAX_POINTS = 10000
MAX_FIELDS = 64


def _number(name: str, raw: str | None, default: float | None, lo: float, hi: float) -> float | None:
    """The web module's number parameter (one error shape), with a default when absent."""
    from . import parse_float  # the web module installs this one: imported when a request comes

    v = parse_float(name, raw, lo, hi)
    return default if v is None else v


def table(store, names: list[str], start: float, end: float, stride: float | None,
          max_points: int, columns: list[str] | None = None) -> list[dict]:
    """Rows ``{"time": ms, column: value | None, ...}`` in time order, every column in every row."""
    columns = columns or names
    result = store.data(names, start, end, stride, max_points=max_points)
    rows: dict[int, dict] = {}
    for n, col in zip(names, columns):
        d = result.get(n)
        if d is None:
            continue
        for t, v in zip(d.t, d.value):
            ms = int(round(t * 1000))
            row = rows.get(ms)
            if row is None:
                row = rows[ms] = {"time": ms, **dict.fromkeys(columns)}
            row[col] = v if v is None or math.isfinite(v) else None
    return [rows[k] for k in sorted(rows)]


def register_infinity(app: Bottle, app_state) -> None:
    store = app_state.store

    @app.get("/api/v1/timeseries")
    def timeseries():
        names = request.query.getall("field")
        if not names or any(not n.strip() for n in names):
            raise HTTPError(400, "give field=<node>::<field> (one per column; see /api/v1/fields)")
        if len(names) > MAX_FIELDS:
            raise HTTPError(400, f"at most {MAX_FIELDS} fields per request, got {len(names)}")
        columns = request.query.getall("name") or list(names)
        if len(columns) != len(names):
            raise HTTPError(400, f"give one name= per field= ({len(names)} fields, {len(columns)} names), or none")
        if len(set(columns)) != len(columns) or any(not c.strip() or c == "time" for c in columns):
            raise HTTPError(400, "column names must be distinct, not empty and not 'time'")
        known = store.field_map()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise HTTPError(404, f"unknown field {unknown[0]!r} (see /api/v1/fields)")
        now_ms = time.time() * 1000
        end_ms = _number("to", request.query.get("to"), now_ms, 0, 1e14)
        start_ms = _number("from", request.query.get("from"), end_ms - 3600_000, 0, 1e14)
        if end_ms < start_ms:
            raise HTTPError(400, f"to ({end_ms:.0f}) is before from ({start_ms:.0f})")
        max_points = int(_number("max_points", request.query.get("max_points"), DEFAULT_MAX_POINTS, 1, MAX_POINTS))
        interval_ms = _number("interval_ms", request.query.get("interval_ms"), None, 0, 1e12)
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "csv"):
            raise HTTPError(400, f"format={fmt!r}: give json or csv")
        rows = table(store, names, start_ms / 1000, end_ms / 1000,
                     None if interval_ms is None else interval_ms / 1000, max_points, columns)
        if fmt == "json":
            response.content_type = "application/json"
            return json.dumps(rows)
        response.content_type = "text/csv; charset=utf-8"
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["time", *columns])
        for r in rows:
            w.writerow([r["time"], *("" if r[c] is None else repr(r[c]) for c in columns)])
        return buf.getvalue()
