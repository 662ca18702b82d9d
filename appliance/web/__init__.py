"""Bottle app: JSON API, Grafana JSON datasource, /metrics, front panel; and the HTTP server it runs in.

Every error is one JSON shape, ``{"error": {"status": N, "message": "..."}}``; no
traceback ever reaches a client (it goes to the log).

**Bounded cost per request.** The Pi sits on the lab network, often unauthenticated, so no
request may cost more than these ceilings (over one: 400, 413 or 431, naming the limit):

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

**The server is waitress, not cheroot.** cheroot hands a connection to a worker thread as soon as
its first byte arrives, and the worker then blocks reading the head with only a per-read
timeout: eight clients sending a header byte every few seconds held all eight workers, and the
front panel stopped answering. No cheroot setting bounds a whole request head. waitress reads
and buffers every request (head and body) in one asynchronous I/O thread and hands only complete
requests to its worker threads, so a trickling client holds a socket, never a worker. On top of it
(``Server``): a deadline for a whole request (``web.request_timeout``), a per-client connection
limit (``web.max_connections_per_client``) beside waitress's total one, an idle keep-alive timeout,
and its own errors in the JSON shape. It is pure Python and packaged by Debian.

**Who is asking.** The control audit names the socket's peer; ``X-Forwarded-For`` is believed only
from a peer in ``web.trusted_proxies`` (Bottle's ``remote_addr`` would believe anyone).
"""
from __future__ import annotations

import csv
import io
import ipaddress
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import bottle
from bottle import Bottle, HTTPError, request, response
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

from drivers.readings import LS240_STATUS_BITS, LS372_STATUS_BITS, decode_status

from .. import curve_api
from ..control import ControlRefused
from ..freshness import schedule
from ..samples import FLAG_CLOCK_UNSYNCED, FLAG_INVALID, FLAG_TIME_NUDGED
from ..store import resolve_time

log = logging.getLogger("kelvinpi.web")
STATIC = Path(str(resources.files("appliance").joinpath("static")))
API = "/api/v1"

# -- ceilings (documented above, in the OpenAPI description and in the README) ------------------
MAX_BODY = 256 * 1024  # bytes of a request body (Grafana's queries are a few KB)
MAX_HEAD = 16 * 1024  # bytes of request line + headers (waitress answers 431 past it)
MAX_QUERY = 8 * 1024  # bytes of a query string
MAX_QUERY_PARAMS = 100  # parameters in a query string
MAX_SERIES = 64  # distinct series per data request or export (a 372 has 36; the answer is streamed)
MAX_POINTS = 5000  # points per series in a data answer (maxDataPoints is clamped to it)
MAX_RESPONSE_POINTS = 100_000  # points per data answer, all series together
MAX_EXPORT_DAYS = 31  # range of one CSV export
MAX_EXPORT_ROWS = 2_000_000  # rows of one CSV export (~200 MB); the file then ends with a comment line
MAX_SEARCH = 256  # characters of a Grafana search target
RAW_WINDOW = 3600.0  # seconds of raw samples read at a time (an hour of a fast poller is a few MB)
SNAPSHOT_MAX_AGE = 1.0  # seconds a serialised latest/health/metrics answer is served without a commit
CACHE_BUDGET = 16 * 1024 * 1024  # bytes of repeated data answers kept (panel plots, shared dashboards)
CACHE_ITEM = 1024 * 1024  # larger answers are never kept
CACHE_TTL_MAX = 10.0  # seconds an answer is reused, at most (and at most its stride)


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
    """UNIX seconds; a *number* <= 0 means that many seconds before now (sisock); or ISO 8601.

    An ISO time before 1970 is refused: it would become a negative number and then, read
    as "seconds before now", answer something recent instead of nothing.
    """
    if raw is None:
        return resolve_time(default)
    if not raw.strip():
        raise HTTPError(400, f"{name} is empty: leave it out for the default, or give UNIX seconds, seconds "
                             "before now (<= 0), or ISO 8601")
    try:
        number = float(raw)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number):
            raise HTTPError(400, f"{name}={raw!r} is not a finite number")
        return resolve_time(number)
    try:
        dt = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HTTPError(400, f"{name}={raw!r} is not a time: give UNIX seconds, seconds before now (<= 0), "
                             "or ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    t = dt.timestamp()
    if t <= 0:
        raise HTTPError(400, f"{name}={raw!r} is at or before 1970-01-01T00:00:00Z: an ISO time must be later "
                             "(seconds before now are given as a number <= 0)")
    return resolve_time(t)


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
        raise HTTPError(413, f"request body of {length} bytes is over the limit of {MAX_BODY} bytes (MAX_BODY)")
    raw = request.body.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise HTTPError(413, f"request body is over the limit of {MAX_BODY} bytes (MAX_BODY)")
    if not raw:
        return {}  # no body at all: the defaults
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HTTPError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "JSON body must be an object")
    return body


def as_json(value) -> str:
    response.content_type = "application/json"
    return json.dumps(value)


def unique_series(names: list[str]) -> list[str]:
    """Repeats collapsed (first order kept); more than MAX_SERIES distinct series is refused."""
    out = list(dict.fromkeys(names))
    if len(out) > MAX_SERIES:
        raise HTTPError(400, f"{len(out)} distinct series asked for: over the limit of {MAX_SERIES} series per "
                             "request (MAX_SERIES); split the request")
    return out


def points_per_series(n: int, asked: int | None = None) -> int:
    """The per-series point budget: MAX_POINTS, less when many series share MAX_RESPONSE_POINTS."""
    budget = min(MAX_POINTS, MAX_RESPONSE_POINTS // max(1, n))
    return budget if asked is None else max(1, min(int(asked), budget))


def read_series(store, name: str, start: float, end: float, stride: float, points: int):
    """One series at ``stride`` (at least (end - start) / points), at most ``points`` points.

    Strides under the 10 s rollup tier are raw reads: those go an hour at a time, so a
    fast poller's long range is never held in memory whole (the seams keep the stride).
    """
    if end > start:
        stride = max(stride, (end - start) / points)
    if stride >= 10 or end - start <= RAW_WINDOW:
        d = store.data([name], start, end, stride, max_points=None).get(name)
        if d is not None and len(d.t) > points:
            d.t, d.value, d.status = d.t[:points], d.value[:points], d.status[:points]
        return d
    t: list[float] = []
    value: list = []
    status: list[int] = []
    a, d = start, None
    while a < end and len(t) < points:
        b = min(end, a + RAW_WINDOW)
        d = store.data([name], a, b, stride, max_points=None).get(name)
        if d is None:
            return None
        for ti, vi, si in zip(d.t, d.value, d.status):
            if t and ti - t[-1] < stride - 0.001:  # (the store spaces them in whole ms)
                continue  # the seam: keep successive points at least the stride apart
            t.append(ti)
            value.append(vi)
            status.append(si)
        a = b
    d.t, d.value, d.status = t[:points], value[:points], status[:points]
    return d


class Snapshot:
    """An answer serialised once per change of ``key()`` (or after ``max_age`` s), shared by every client.

    One thread builds while the others wait for it and take the same bytes: fifty clients
    asking at the moment of a commit cost one serialisation, not fifty.
    """

    def __init__(self, build: Callable[[], bytes], key: Callable[[], object], max_age: float) -> None:
        self.build, self.key, self.max_age = build, key, max_age
        self._entry: tuple[object, float, bytes] | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        k = self.key()
        e = self._entry
        if e is not None and e[0] == k and time.monotonic() - e[1] < self.max_age:
            return e[2]
        with self._lock:
            e = self._entry
            if e is not None and e[0] == k and time.monotonic() - e[1] < self.max_age:
                return e[2]
            body = self.build()
            self._entry = (k, time.monotonic(), body)
            return body


class AnswerCache:
    """Answers to data queries that many clients repeat, kept ``ttl`` seconds within a byte budget.

    Every open front panel asks the same URLs every 30 s, and every screen showing one Grafana
    dashboard the same query each refresh; an answer at a stride of minutes hardly moves in a
    few seconds, so N viewers cost one query per key and ``ttl``. Answers over ``max_item``
    bytes are not kept; the oldest go first past ``budget`` bytes in all.
    """

    def __init__(self, budget: int, max_item: int) -> None:
        self.budget, self.max_item = budget, max_item
        self._data: OrderedDict[object, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._building: dict[object, threading.Lock] = {}
        self.hits = self.misses = 0

    def get(self, key: object, ttl: float, build: Callable[[], bytes]) -> bytes:
        hit = self._data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            self.hits += 1
            return hit[1]
        with self._lock:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:  # one builds, the others asking the same wait for its answer
            hit = self._data.get(key)
            if hit is not None and hit[0] > time.monotonic():
                self.hits += 1
                return hit[1]
            self.misses += 1
            body = build()
            with self._lock:
                self._building.pop(key, None)
                old = self._data.pop(key, None)
                if old is not None:
                    self._bytes -= len(old[1])
                if len(body) <= self.max_item:
                    now = time.monotonic()
                    for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
                        self._bytes -= len(self._data.pop(k)[1])
                    while self._data and self._bytes + len(body) > self.budget:
                        self._bytes -= len(self._data.popitem(last=False)[1][1])
                    self._data[key] = (now + ttl, body)
                    self._bytes += len(body)
            return body


def _networks(entries) -> list:
    return [ipaddress.ip_network(str(e), strict=False) for e in entries]


def _within(addr: str, nets: list) -> bool:
    try:
        ip = ipaddress.ip_address(addr.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in n for n in nets)


def client_address(environ: dict, trusted: list) -> str:
    """Who is asking: the socket's peer; through a trusted proxy, the nearest untrusted hop it names.

    ``X-Forwarded-For`` is read right to left (each proxy appends the address it saw), and only
    while the hop that wrote it is trusted: a client cannot put its own entry past a proxy.
    """
    peer = environ.get("REMOTE_ADDR") or "?"
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return f"{peer} (forwarded for an unreadable address)"
    return peer


def make_app(app_state) -> Bottle:
    """``app_state`` is the running Appliance (store, health, config); see service.py."""
    app = Bottle(catchall=True, autojson=True)
    store = app_state.store
    models = {i.name: i.model for i in app_state.config.instrument}
    trusted = _networks(getattr(app_state.config.web, "trusted_proxies", []))
    changed = lambda: (store.written, store.commits, store.write_errors)  # noqa: E731 - the commit counters
    answers = AnswerCache(CACHE_BUDGET, CACHE_ITEM)
    app.answers = answers  # hits and misses, for tests and the bench

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

    for code in (400, 401, 403, 404, 405, 409, 413, 414, 500, 503):
        app.error(code)(on_error)

    @app.hook("before_request")
    def _limits():
        qs = request.environ.get("QUERY_STRING", "")
        if len(qs) > MAX_QUERY:
            raise HTTPError(400, f"query string of {len(qs)} bytes is over the limit of {MAX_QUERY} bytes (MAX_QUERY)")
        if qs and qs.count("&") + 1 > MAX_QUERY_PARAMS:
            raise HTTPError(400, f"{qs.count('&') + 1} query parameters: over the limit of {MAX_QUERY_PARAMS} "
                                 "(MAX_QUERY_PARAMS)")

    @app.hook("after_request")
    def _headers():
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("Cache-Control", "no-store")

    def json_bytes(body: bytes) -> bytes:
        response.content_type = "application/json"
        return body

    def field_names(required: bool = True) -> list[str]:
        given = request.query.getall("field")
        if any(not n.strip() for n in given):
            raise HTTPError(400, "field= is empty: give <node>::<field> (see /api/v1/fields), or leave it out")
        names = unique_series(given)
        if not names and required:
            raise HTTPError(400, "give at least one field=<node>::<field> (see /api/v1/fields)")
        known = store.field_map()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise HTTPError(404, f"unknown field {unknown[0]!r} (see /api/v1/fields)")
        return names

    # -- JSON API --------------------------------------------------------------------
    ping_body = json.dumps({"ok": True, "kelvinpi": app_state.version}).encode()

    @app.get(f"{API}/ping")
    def ping():
        return json_bytes(ping_body)

    health_snap = Snapshot(lambda: json.dumps(app_state.health()).encode(), changed, SNAPSHOT_MAX_AGE)

    @app.get(f"{API}/health")
    def health():
        return json_bytes(health_snap.get())

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
            return ctl.set_setpoint(node, read_json(), client_address(request.environ, trusted))
        except ControlRefused as exc:
            raise HTTPError(exc.status, str(exc)) from None

    curve_api.install(app, app_state)  # /api/v1/control/<node>/curves...

    @app.get(f"{API}/fields")
    def fields():
        return {"fields": [{"field": f.name, "node": f.node, "name": f.field, "units": f.units,
                            "timeline": f.timeline, "description": f.description} for f in store.fields()]}

    def build_latest() -> bytes:
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
        return json.dumps(items).encode()

    latest_snap = Snapshot(build_latest, changed, SNAPSHOT_MAX_AGE)

    @app.get(f"{API}/latest")
    def latest():
        return json_bytes(latest_snap.get())

    def stream_data(names: list[str], start: float, end: float, stride: float, points: int) -> Iterator[bytes]:
        fmap = store.field_map()
        yield json.dumps({"start": start, "end": end})[:-1].encode() + b', "fields": {'
        for i, n in enumerate(names):
            d = read_series(store, n, start, end, stride, points)
            if d is None:
                continue
            item = {"units": fmap[n].units, "tier": d.tier, "t": d.t, "value": [clean(v) for v in d.value],
                    "status": d.status}
            yield (b", " if i else b"") + json.dumps(n).encode() + b": " + json.dumps(item).encode()
        yield b"}}"

    @app.get(f"{API}/data")
    def data():
        names = field_names()
        q = request.query
        start = parse_time("start", q.get("start"), -3600)
        end = parse_time("end", q.get("end"), 0)
        stride = parse_float("min_stride", q.get("min_stride"))
        if end < start:
            raise HTTPError(400, f"end ({end}) is before start ({start})")
        points = points_per_series(len(names))
        response.content_type = "application/json"

        def relative(raw: str | None, default: float) -> bool:
            try:
                return (default if raw is None else float(raw)) <= 0
            except ValueError:
                return False

        if relative(q.get("start"), -3600) and relative(q.get("end"), 0):
            # the panel's plots: the same URL from every open panel, kept a few seconds
            key = ("data", tuple(names), q.get("start"), q.get("end"), stride)
            ttl = min(CACHE_TTL_MAX, max(1.0, (stride or 0) / 2))
            return answers.get(key, ttl, lambda: b"".join(stream_data(names, start, end, stride or 0, points)))
        return stream_data(names, start, end, stride or 0, points)

    @app.get(f"{API}/export.csv")
    def export_csv():
        names = field_names(required=False) or [f.name for f in store.fields()]  # all: streamed, rows capped
        start = parse_time("start", request.query.get("start"), -86400)
        end = parse_time("end", request.query.get("end"), 0)
        if end < start:
            raise HTTPError(400, f"end ({end}) is before start ({start})")
        if end - start > MAX_EXPORT_DAYS * 86400:
            raise HTTPError(400, f"an export of {(end - start) / 86400:.1f} days is over the limit of "
                                 f"{MAX_EXPORT_DAYS} days per request (MAX_EXPORT_DAYS); split the range")
        fmap = store.field_map()
        curves = CurveLookup(store)
        response.content_type = "text/csv; charset=utf-8"
        response.set_header("Content-Disposition", 'attachment; filename="kelvinpi-export.csv"')

        def rows():
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["field", "t_unix", "time_utc", "value", "units", "status", "status_bits", "curve"])
            n = 0
            for name, t, v, st in store.iter_raw(names, start, end):
                if n >= MAX_EXPORT_ROWS:
                    buf.write(f"# truncated at {MAX_EXPORT_ROWS} rows (MAX_EXPORT_ROWS): ask again from "
                              f"start={t:.3f}\n")
                    break
                n += 1
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

    openapi_body: list[bytes] = []

    @app.get(f"{API}/openapi.json")
    def openapi():
        from .openapi import spec

        if not openapi_body:
            openapi_body.append(json.dumps(spec()).encode())
        return json_bytes(openapi_body[0])

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
        if len(target) > MAX_SEARCH:
            raise HTTPError(400, f"search target of {len(target)} characters is over the limit of {MAX_SEARCH}"
                                 " (MAX_SEARCH)")
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
        if not isinstance(max_points, (int, float)) or isinstance(max_points, bool) or not math.isfinite(max_points) \
                or max_points < 1:
            raise HTTPError(400, "maxDataPoints must be a number, at least 1")
        interval_ms = body.get("intervalMs")
        if interval_ms is None and isinstance(body.get("interval"), str):
            interval_ms = parse_interval(body["interval"]) * 1000
        if interval_ms is not None and (not isinstance(interval_ms, (int, float)) or isinstance(interval_ms, bool)
                                        or not math.isfinite(interval_ms) or interval_ms < 0):
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
                pts = [] if d is None else [[clean(v), t * 1000.0] for t, v in zip(d.t, d.value)]
                yield (b", " if i else b"") + json.dumps({"target": n, "datapoints": pts}).encode()
            yield b"]"

        # Screens showing one dashboard ask the same query, each with its own "now": the range
        # widened to whole strides is one key for all of them, its answer reused for up to a stride
        q_start, q_end = math.floor(start / stride) * stride, math.ceil(end / stride) * stride
        if stride < 1 or q_start <= 0 or end - start < 10 * stride:
            return stream(start, end)  # a live sub-second view, a range from 1970, a few points: as asked
        key = ("grafana", tuple(names), q_start, q_end, stride, points)
        return answers.get(key, min(CACHE_TTL_MAX, stride), lambda: b"".join(stream(q_start, q_end)))

    from .alarms import add_panel_routes, add_routes as alarm_routes

    alarm_routes(app, app_state)
    add_panel_routes(app, app_state)

    # -- metrics and front panel -----------------------------------------------------------
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics_snap = Snapshot(lambda: generate_latest(app_state.metrics_registry), changed, SNAPSHOT_MAX_AGE)

    @app.get("/metrics")
    def metrics():
        response.content_type = CONTENT_TYPE_LATEST
        return metrics_snap.get()

    @app.get("/")
    def index():
        return bottle.static_file("index.html", root=str(STATIC))

    @app.get("/static/<path:path>")
    def static(path):
        return bottle.static_file(path, root=str(STATIC))

    from .grafana import register_infinity  # wide JSON/CSV time series for Grafana's Infinity

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


# -- the HTTP server ------------------------------------------------------------------------------
class JsonErrorTask(ErrorTask):
    """waitress's own refusals (a head over MAX_HEAD, a malformed request line) in the one error shape."""

    def execute(self) -> None:
        e = self.request.error
        message = {413: f"request body over the limit of {MAX_BODY} bytes (MAX_BODY)",
                   431: f"request line and headers over the limit of {MAX_HEAD} bytes (MAX_HEAD)"}.get(
                       e.code, f"{e.reason}: {e.body}")
        body = json.dumps({"error": {"status": e.code, "message": message}}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    """One connection; remembers when the request it is still receiving began (the deadline's start)."""

    error_task_class = JsonErrorTask
    _timed = None  # the partial request being timed (waitress's parser object)
    request_started = 0.0
    spoke = False  # any byte received yet (a connection that never speaks is closed at the deadline)

    def received(self, data: bytes) -> bool:
        self.spoke = True
        out = super().received(data)
        r = self.request
        if r is not None and r is not self._timed:
            self._timed, self.request_started = r, time.time()
        return out


TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s")


class Server(TcpWSGIServer):
    """waitress with a whole-request deadline and a per-client connection limit.

    Runs ``serve()`` in a thread of its own; ``stop()`` from any other thread. The deadline
    is checked once a second by waitress's maintenance pass (in the I/O thread, where the
    channels live): a request still incomplete ``request_timeout`` seconds after its first
    byte, or a connection that has sent nothing that long after it was accepted, is closed.
    """

    channel_class = Channel

    def __init__(self, app, cfg) -> None:
        self.request_timeout = cfg.request_timeout
        self.per_client = cfg.max_connections_per_client
        self.refused = 0  # connections over the per-client limit
        # waitress warns of every request that waits for a worker: under a crowd, a journal line
        # per request (CPU, and wear on the SD card) saying what a 50-client panel load is
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self.timed_out = 0  # connections closed at the request deadline
        super().__init__(app, host=cfg.bind, port=cfg.port, threads=cfg.threads, ident="kelvinpi",
                         connection_limit=cfg.max_connections, channel_timeout=max(1, int(cfg.idle_timeout)),
                         cleanup_interval=1, max_request_header_size=MAX_HEAD, max_request_body_size=MAX_BODY,
                         clear_untrusted_proxy_headers=False, asyncore_use_poll=True, backlog=256,
                         expose_tracebacks=False, log_socket_errors=False)
        self.bind_addr = self.socket.getsockname()[:2]  # (host, port as int): waitress keeps strings

    def handle_accept(self) -> None:
        try:
            v = self.accept()
            if v is None:
                return
            conn, addr = v
            self.set_socket_options(conn)
        except OSError:
            return  # the peer went away before we got to it
        ip = addr[0]
        if sum(1 for c in list(self.active_channels.values()) if c.addr and c.addr[0] == ip) >= self.per_client:
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log.warning("refused a connection from %s: over web.max_connections_per_client = %d (%d refused"
                            " so far)", ip, self.per_client, self.refused)
            msg = json.dumps({"error": {"status": 503, "message": f"over the limit of {self.per_client} "
                                        "connections per client (web.max_connections_per_client)"}}).encode()
            try:
                conn.setblocking(False)
                conn.send(TOO_MANY % (len(msg), msg))
            except OSError:
                pass
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # the idle keep-alive timeout
        cutoff = now - self.request_timeout
        for ch in list(self.active_channels.values()):
            if ch.requests or ch.will_close:
                continue  # a complete request is being answered
            slow = (ch.request is not None and ch.request is ch._timed and ch.request_started < cutoff) or \
                   (not ch.spoke and ch.creation_time < cutoff)  # accepted, then silent
            if slow:
                self.timed_out += 1
                ch.will_close = True

    def serve(self) -> None:
        self.run()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and the listening socket from inside the I/O loop, then end it."""
        done = threading.Event()

        def close_all(_=None) -> None:
            for ch in list(self.active_channels.values()):
                try:
                    ch.handle_close()
                except OSError:
                    pass
            self.close()
            done.set()

        try:
            self.trigger.pull_trigger(close_all)
        except OSError:
            close_all()
        done.wait(timeout)
        self.task_dispatcher.shutdown(timeout=timeout)
