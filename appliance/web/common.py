"""What every route module shares: the ceilings, the one error shape, the parameter parsers, who is asking.

Every error is one JSON shape, ``{"error": {"status": N, "message": "..."}}``; no
traceback ever reaches a client (it goes to the log). ``install`` puts that shape, the
query-string ceilings and the headers every answer carries on the app; the parsers here
raise ``HTTPError(400, <what is wrong, naming the parameter>)`` and so share the shape.

**Who is asking.** The control audit names the socket's peer; ``X-Forwarded-For`` is believed only
from a peer in ``web.trusted_proxies`` (Bottle's ``remote_addr`` would believe anyone).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bottle import Bottle, HTTPError, request, response

from drivers.readings import decode_status

from ..models import facts
from ..samples import FLAG_CLOCK_UNSYNCED, FLAG_INVALID, FLAG_TIME_NUDGED
from ..store import resolve_time

if TYPE_CHECKING:
    from ..store import SeriesData, Store, StoreReader

log = logging.getLogger("kelvinpi.web")
API = "/api/v1"

# -- ceilings (documented in appliance/web/__init__.py, in the OpenAPI description and in the README) --
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


def install(app: Bottle) -> None:
    """The one error shape for every status the app can answer, the query-string ceilings, and the
    headers on every answer (no MIME sniffing, no caching: every answer is live data)."""

    def on_error(e: HTTPError) -> str:
        response.content_type = "application/json"
        if e.status_code >= 500 and not (e.status_code == 503 and isinstance(e.body, str) and e.body):
            if e.exception:
                log.error(
                    "internal error on %s %s: %r", request.method, request.path, e.exception, exc_info=e.exception
                )
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
            raise HTTPError(
                400, f"{qs.count('&') + 1} query parameters: over the limit of {MAX_QUERY_PARAMS} (MAX_QUERY_PARAMS)"
            )

    @app.hook("after_request")
    def _headers():
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("Cache-Control", "no-store")


def status_names(status: int, model: str | None) -> list[str]:
    names = list(decode_status(status & 0xFF, facts(model).STATUS_BITS))
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


def one_param(name: str) -> str | None:
    """A query parameter that takes one value: given twice (``since=x&since=8``) it is refused, not
    read as whichever copy the framework happens to keep (a garbage first value was silently ignored)."""
    values = request.query.getall(name)
    if len(values) > 1:
        raise HTTPError(400, f"{name} is given {len(values)} times: give it once")
    return values[0] if values else None


def parse_time(name: str, raw: str | None, default: float) -> float:
    """UNIX seconds; a *number* <= 0 means that many seconds before now (sisock); or ISO 8601.

    An ISO time before 1970 is refused: it would become a negative number and then, read
    as "seconds before now", answer something recent instead of nothing.
    """
    if raw is None:
        return resolve_time(default)
    if not raw.strip():
        raise HTTPError(
            400,
            f"{name} is empty: leave it out for the default, or give UNIX seconds, seconds "
            "before now (<= 0), or ISO 8601",
        )
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
        raise HTTPError(
            400, f"{name}={raw!r} is not a time: give UNIX seconds, seconds before now (<= 0), or ISO 8601"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    t = dt.timestamp()
    if t <= 0:
        raise HTTPError(
            400,
            f"{name}={raw!r} is at or before 1970-01-01T00:00:00Z: an ISO time must be later "
            "(seconds before now are given as a number <= 0)",
        )
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


def as_json(value: object) -> str:
    response.content_type = "application/json"
    return json.dumps(value)


def json_bytes(body: bytes) -> bytes:
    """An answer serialised beforehand (a snapshot, a cached query), sent as JSON."""
    response.content_type = "application/json"
    return body


def unique_series(names: list[str]) -> list[str]:
    """Repeats collapsed (first order kept); more than MAX_SERIES distinct series is refused."""
    out = list(dict.fromkeys(names))
    if len(out) > MAX_SERIES:
        raise HTTPError(
            400,
            f"{len(out)} distinct series asked for: over the limit of {MAX_SERIES} series per "
            "request (MAX_SERIES); split the request",
        )
    return out


def points_per_series(n: int, asked: int | float | None = None) -> int:
    """The per-series point budget: MAX_POINTS, less when many series share MAX_RESPONSE_POINTS."""
    budget = min(MAX_POINTS, MAX_RESPONSE_POINTS // max(1, n))
    return budget if asked is None else max(1, min(int(asked), budget))


def read_series(
    store: Store | StoreReader, name: str, start: float, end: float, stride: float, points: int
) -> SeriesData | None:
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
        for ti, vi, si in zip(d.t, d.value, d.status, strict=False):
            if t and ti - t[-1] < stride - 0.001:  # (the store spaces them in whole ms)
                continue  # the seam: keep successive points at least the stride apart
            t.append(ti)
            value.append(vi)
            status.append(si)
        a = b
    assert d is not None  # the range is over RAW_WINDOW: the loop read at least once
    d.t, d.value, d.status = t[:points], value[:points], status[:points]
    return d


def networks(entries: Iterable[object]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``web.trusted_proxies`` as networks (a bare address is a network of one)."""
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
