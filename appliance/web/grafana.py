"""Grafana's two ways in: the JSON datasource (``/grafana/...``) and the Infinity datasource's wide table.

**JSON datasource** (the SimpleJSON contract, with simpod's extras answered empty but for
``/grafana/variable``): ``/grafana/search``, ``/grafana/metrics`` and ``/grafana/variable`` (simpod's
query variables) list the series; ``/grafana/query`` streams each
target at a stride of at least ``intervalMs`` and at most ``maxDataPoints`` points (clamped to
the ceilings in common.py); screens showing one dashboard share the answer (cache.py).

**Infinity** (and any tool reading JSON or CSV tables):
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
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bottle import Bottle, HTTPError, request, response

from .cache import AnswerCache
from .common import (
    CACHE_TTL_MAX,
    MAX_SEARCH,
    as_json,
    clean,
    one_param,
    parse_float,
    parse_time,
    points_per_series,
    read_json,
    read_series,
    unique_series,
)

if TYPE_CHECKING:
    from ..store import Store

DEFAULT_MAX_POINTS = 1000
MAX_POINTS = 10000
MAX_FIELDS = 64


def _number(name: str, raw: str | None, default: float | None, lo: float, hi: float) -> float | None:
    """A number parameter (common.parse_float: one parser, one error shape), with a default when absent."""
    v = parse_float(name, raw, lo, hi)
    return default if v is None else v


def table(
    store: Store,
    names: list[str],
    start: float,
    end: float,
    stride: float | None,
    max_points: int,
    columns: list[str] | None = None,
) -> list[dict]:
    """Rows ``{"time": ms, column: value | None, ...}`` in time order, every column in every row."""
    columns = columns or names
    result = store.data(names, start, end, stride, max_points=max_points)
    rows: dict[int, dict] = {}
    for n, col in zip(names, columns, strict=False):
        d = result.get(n)
        if d is None:
            continue
        for t, v in zip(d.t, d.value, strict=False):
            ms = int(round(t * 1000))
            row = rows.get(ms)
            if row is None:
                row = rows[ms] = {"time": ms, **dict.fromkeys(columns)}
            row[col] = v if v is None or math.isfinite(v) else None
    return [rows[k] for k in sorted(rows)]


def install(app: Bottle, *, store: Store, version: str, answers: AnswerCache) -> None:
    @app.route("/grafana", method=["GET", "POST"])
    @app.route("/grafana/", method=["GET", "POST"])
    def grafana_root():
        return {"status": "ok", "kelvinpi": version}

    @app.post("/grafana/search")
    def grafana_search():
        body = read_json()
        target = body.get("target", "")
        if not isinstance(target, str):
            raise HTTPError(400, "search target must be a string")
        if len(target) > MAX_SEARCH:
            raise HTTPError(
                400, f"search target of {len(target)} characters is over the limit of {MAX_SEARCH} (MAX_SEARCH)"
            )
        return as_json([f.name for f in store.fields() if target.lower() in f.name.lower()])

    @app.post("/grafana/metrics")
    def grafana_metrics():
        read_json()
        return as_json([{"label": f.name, "value": f.name} for f in store.fields()])

    @app.post("/grafana/variable")
    def grafana_variable():
        """simpod's query variables: ``{"payload": {"target": "<text>"}}``, answered with the series whose names
        contain the text, so a dashboard's channel list comes from the Pi's data, not from the dashboard."""
        payload = read_json().get("payload")
        target = payload.get("target", "") if isinstance(payload, dict) else payload if payload is not None else ""
        if not isinstance(target, str) or len(target) > MAX_SEARCH:
            raise HTTPError(400, f"variable payload target must be a string of at most {MAX_SEARCH} characters")
        return as_json(
            [{"__text": f.name, "__value": f.name} for f in store.fields() if target.lower() in f.name.lower()]
        )

    @app.post("/grafana/metric-payload-options")
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
        if (
            not isinstance(max_points, (int, float))
            or isinstance(max_points, bool)
            or not math.isfinite(max_points)
            or max_points < 1
        ):
            raise HTTPError(400, "maxDataPoints must be a number, at least 1")
        interval_ms = body.get("intervalMs")
        if interval_ms is None and isinstance(body.get("interval"), str):
            interval_ms = parse_interval(body["interval"]) * 1000
        if interval_ms is not None and (
            not isinstance(interval_ms, (int, float))
            or isinstance(interval_ms, bool)
            or not math.isfinite(interval_ms)
            or interval_ms < 0
        ):
            raise HTTPError(400, "intervalMs must be a non-negative number")
        targets = body.get("targets")
        if not isinstance(targets, list):
            raise HTTPError(400, "query needs targets: a list of {target: <node>::<field>}")
        asked = []
        for t in targets:
            if not isinstance(t, dict) or not isinstance(t.get("target", ""), str):
                raise HTTPError(400, "each target must be an object with a string 'target'")
            if t.get("hide") or not t.get("target"):
                continue
            asked.append(t["target"])
        names = unique_series(asked)
        points = points_per_series(len(names), max_points)  # maxDataPoints clamped to the budget
        stride = min(max((interval_ms or 0) / 1000, (end - start) / points), 1e12)
        response.content_type = "application/json"

        def stream(start: float, end: float) -> Iterator[bytes]:
            yield b"["
            for i, n in enumerate(names):
                d = read_series(store, n, start, end, stride, points)
                pts = [] if d is None else [[clean(v), t * 1000.0] for t, v in zip(d.t, d.value, strict=False)]
                yield (b", " if i else b"") + json.dumps({"target": n, "datapoints": pts}).encode()
            yield b"]"

        # Screens showing one dashboard ask the same query, each with its own "now": the range
        # widened to whole strides is one key for all of them, its answer reused for up to a stride
        q_start, q_end = math.floor(start / stride) * stride, math.ceil(end / stride) * stride
        if stride < 1 or q_start <= 0 or end - start < 10 * stride:
            return stream(start, end)  # a live sub-second view, a range from 1970, a few points: as asked
        key = ("grafana", tuple(names), q_start, q_end, stride, points)
        return answers.get(key, min(CACHE_TTL_MAX, stride), lambda: b"".join(stream(q_start, q_end)))

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
        end_ms = _number("to", one_param("to"), now_ms, 0, 1e14)
        start_ms = _number("from", one_param("from"), end_ms - 3600_000, 0, 1e14)
        if end_ms < start_ms:
            raise HTTPError(400, f"to ({end_ms:.0f}) is before from ({start_ms:.0f})")
        max_points = int(_number("max_points", one_param("max_points"), DEFAULT_MAX_POINTS, 1, MAX_POINTS))
        interval_ms = _number("interval_ms", one_param("interval_ms"), None, 0, 1e12)
        fmt = one_param("format") or "json"
        if fmt not in ("json", "csv"):
            raise HTTPError(400, f"format={fmt!r}: give json or csv")
        rows = table(
            store,
            names,
            start_ms / 1000,
            end_ms / 1000,
            None if interval_ms is None else interval_ms / 1000,
            max_points,
            columns,
        )
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
