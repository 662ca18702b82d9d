"""The read-only JSON API under ``/api/v1``: ping, health, instruments, fields, latest, data, CSV export,
events, and the OpenAPI document that describes every route.

``latest`` and ``health`` are snapshots rebuilt once per store commit (cache.py); the panel's
plot queries (relative times) are kept a few seconds in the shared answer cache; data and
export answers are streamed series by series under the ceilings in common.py.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bottle import Bottle, HTTPError, request, response

from ..freshness import schedule
from .cache import AnswerCache, Snapshot
from .common import (
    API,
    CACHE_TTL_MAX,
    MAX_EXPORT_DAYS,
    MAX_EXPORT_ROWS,
    SNAPSHOT_MAX_AGE,
    clean,
    json_bytes,
    one_param,
    parse_float,
    parse_time,
    points_per_series,
    read_series,
    status_names,
    unique_series,
)

if TYPE_CHECKING:
    from ..config import InstrumentConfig
    from ..poller import Poller
    from ..store import Store


def install(
    app: Bottle,
    *,
    store: Store,
    instruments: Sequence[InstrumentConfig],
    pollers: Sequence[Poller],
    version: str,
    health: Callable[[], dict],
    stale_after: float,
    answers: AnswerCache,
    changed: Callable[[], object],
) -> None:
    """``instruments`` is the configured list (names, models, descriptions); ``pollers`` the running
    ones (their health, their scan schedule); ``health`` builds the /health answer; ``changed`` is
    the key the snapshots are rebuilt on (cache.store_changed)."""
    models = {i.name: i.model for i in instruments}

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

    ping_body = json.dumps({"ok": True, "kelvinpi": version}).encode()

    @app.get(f"{API}/ping")
    def ping():
        return json_bytes(ping_body)

    health_snap = Snapshot(lambda: json.dumps(health()).encode(), changed, SNAPSHOT_MAX_AGE)

    def stamp_now() -> None:
        """The appliance's own time on the answer (not in the cached body): the panel checks that it
        moves (a replayed answer does not) and plots on the Pi's clock, not the browser's."""
        response.set_header("X-Kelvinpi-Now", f"{time.time():.3f}")

    @app.get(f"{API}/health")
    def health_route():
        stamp_now()
        return json_bytes(health_snap.get())

    @app.get(f"{API}/instruments")
    def instruments_route():
        out = []
        for poller in pollers:  # the running ones, each with its own config (disabled ones have no poller)
            cfg = poller.cfg
            snaps = store.snapshots(cfg.name)
            out.append(
                {
                    "name": cfg.name,
                    "model": cfg.model,
                    "description": cfg.description,
                    "transport": cfg.transport,
                    "health": poller.health.as_dict(),
                    "configuration": snaps[-1][1] if snaps else None,
                    "configuration_t": snaps[-1][0] if snaps else None,
                }
            )
        return {"instruments": out}

    @app.get(f"{API}/fields")
    def fields():
        return {
            "fields": [
                {
                    "field": f.name,
                    "node": f.node,
                    "name": f.field,
                    "units": f.units,
                    "timeline": f.timeline,
                    "description": f.description,
                }
                for f in store.fields()
            ]
        }

    def build_latest() -> bytes:
        now = time.time()
        due = schedule(pollers, now)  # a scanned 372 channel is due once per rotation
        items = []
        for r in store.latest():
            d = due.get(r["field"])
            scan = d if d is not None and d.scanned else None
            item = {
                "field": r["field"],
                "value": clean(r["value"]),
                "units": r["units"],
                "status": r["status"],
                "status_bits": status_names(r["status"], models.get(r["node"])),
                "t": r["t"],
                "age": max(0.0, now - r["t"]),
                "stale": now - r["t"] > stale_after + (scan.gap if scan is not None else 0.0),
            }
            if scan is not None:
                item["scan"] = {"period": scan.gap, "next_in": scan.next_in, "active": scan.active}
            items.append(item)
        return json.dumps(items).encode()

    latest_snap = Snapshot(build_latest, changed, SNAPSHOT_MAX_AGE)

    @app.get(f"{API}/latest")
    def latest():
        stamp_now()
        return json_bytes(latest_snap.get())

    def stream_data(names: list[str], start: float, end: float, stride: float, points: int) -> Iterator[bytes]:
        fmap = store.field_map()
        yield json.dumps({"start": start, "end": end})[:-1].encode() + b', "fields": {'
        for i, n in enumerate(names):
            d = read_series(store, n, start, end, stride, points)
            if d is None:
                continue
            item = {
                "units": fmap[n].units,
                "tier": d.tier,
                "t": d.t,
                "value": [clean(v) for v in d.value],
                "status": d.status,
            }
            yield (b", " if i else b"") + json.dumps(n).encode() + b": " + json.dumps(item).encode()
        yield b"}}"

    @app.get(f"{API}/data")
    def data():
        names = field_names()
        q = request.query
        start = parse_time("start", one_param("start"), -3600)
        end = parse_time("end", one_param("end"), 0)
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

        if relative(one_param("start"), -3600) and relative(one_param("end"), 0):
            # the panel's plots: the same URL from every open panel, kept a few seconds
            key = ("data", tuple(names), one_param("start"), one_param("end"), stride)
            ttl = min(CACHE_TTL_MAX, max(1.0, (stride or 0) / 2))
            return answers.get(key, ttl, lambda: b"".join(stream_data(names, start, end, stride or 0, points)))
        return stream_data(names, start, end, stride or 0, points)

    @app.get(f"{API}/export.csv")
    def export_csv():
        names = field_names(required=False) or [f.name for f in store.fields()]  # all: streamed, rows capped
        start = parse_time("start", one_param("start"), -86400)
        end = parse_time("end", one_param("end"), 0)
        if end < start:
            raise HTTPError(400, f"end ({end}) is before start ({start})")
        if end - start > MAX_EXPORT_DAYS * 86400:
            raise HTTPError(
                400,
                f"an export of {(end - start) / 86400:.1f} days is over the limit of "
                f"{MAX_EXPORT_DAYS} days per request (MAX_EXPORT_DAYS); split the range",
            )
        fmap = store.field_map()
        curves = CurveLookup(store)
        response.content_type = "text/csv; charset=utf-8"
        response.set_header("Content-Disposition", 'attachment; filename="kelvinpi-export.csv"')

        def rows():
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["field", "t_unix", "time_utc", "value", "units", "status", "status_bits", "curve"])
            for n, (name, t, v, st) in enumerate(store.iter_raw(names, start, end)):
                if n >= MAX_EXPORT_ROWS:
                    buf.write(
                        f"# truncated at {MAX_EXPORT_ROWS} rows (MAX_EXPORT_ROWS): ask again from start={t:.3f}\n"
                    )
                    break
                info = fmap[name]
                w.writerow(
                    [
                        name,
                        f"{t:.3f}",
                        datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds"),
                        "" if v is None else repr(v),
                        info.units,
                        st,
                        "|".join(status_names(st, models.get(info.node))),
                        curves.curve(info.node, name, t) if info.units == "K" else "",
                    ]
                )
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
        since = parse_time("since", one_param("since"), -86400)
        return {"events": store.events(since, 500)}


class CurveLookup:
    """Which calibration curve produced a temperature, from the configuration snapshots."""

    def __init__(self, store: Store) -> None:
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
