"""Reconcile the instruments' ledgers with the store and with what remote readers are served.

produced: readings the emulated instruments delivered whole and on time (their ledger);
stored:   rows of those series in the appliance's SQLite file;
served:   points a remote reader gets back: sisock ``get_data`` through the router, and the
          Grafana JSON datasource over HTTP;
lost:     produced readings with no stored row (per channel and quantity);
foreign:  stored numbers the instrument never sent (garbled bytes taken as values).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from appliance.store import MAX_TIME, Store, StoreReader
from appliance.uplinks.sisock import MAX_POINTS as SISOCK_MAX_POINTS
from appliance.web.common import points_per_series
from firmware_host.ledger import QUANTITY

DESC = re.compile(r"^(?P<model>\d+) input (?P<ch>\S+) ")
GAUGE = re.compile(r"p\d")
HEATER = re.compile(r"heater_(\d)")  # the 336's and 350's heater outputs (HTR? <n> in the ledger)


@dataclass
class Tally:
    produced: int = 0
    late: int = 0
    stored: int = 0
    served_wamp: int | None = None
    served_http: int | None = None
    lost: int = 0
    foreign: int = 0
    per_series: dict = field(default_factory=dict)

    @property
    def served(self) -> int:
        vals = [v for v in (self.served_wamp, self.served_http) if v is not None]
        return min(vals) if vals else 0

    def line(self) -> str:
        return (
            f"produced={self.produced} stored={self.stored} served={self.served} lost={self.lost}"
            f" (late={self.late} foreign={self.foreign} wamp={self.served_wamp} http={self.served_http})"
        )


def series_for(db: sqlite3.Connection) -> dict[tuple[str, str, str], tuple[int, str, str]]:
    """(node, channel, quantity) -> (series id, node::field, field) for every reading series.

    The channel of each series comes from the pollers' configuration snapshots, which record
    which series each input feeds (``fields``); the series description is the fallback.
    """
    ids = {name: (sid, node, fld) for sid, name, node, fld in db.execute("SELECT id, name, node, field FROM series")}
    out = {}

    def add(node: str, ch: str, name: str) -> None:
        if name in ids and (name.endswith("_t") or name.endswith("_r")):
            sid, _, fld = ids[name]
            out[(node, ch, "kelvin" if name.endswith("_t") else "sensor")] = (sid, name, fld)
        elif name in ids and GAUGE.fullmatch(ids[name][2]):  # a gauge controller's p<n>
            sid, _, fld = ids[name]
            out[(node, ch, "pressure")] = (sid, name, fld)

    for _sid, name, node, _fld, desc in db.execute("SELECT id, name, node, field, description FROM series"):
        m = DESC.match(desc)
        if m:
            add(node, m["ch"], name)
    for _sid, name, node, fld in db.execute("SELECT id, name, node, field FROM series"):
        m = HEATER.fullmatch(fld)
        if m:  # a 336/350's heater_<n>: the ledger counts its HTR? <n> as (n, "heater")
            out[(node, m[1], "heater")] = (ids[name][0], name, fld)
    for node, config in db.execute("SELECT node, config FROM snapshot ORDER BY t"):
        for ch, names in (json.loads(config).get("fields") or {}).items():
            for name in names:
                add(node, str(ch), name)
    return out


def _reader(store) -> StoreReader:
    """The running appliance's Store's reader (which also sees readings still in its journal), or a file's."""
    return store.stored if isinstance(store, Store) else store if isinstance(store, StoreReader) else StoreReader(store)


def narrow(start: float, end: float, unthinned: float, widest: float) -> float:
    """A query window's width: ``unthinned`` (a stride under 2 ms: every row back raw) for a test's
    usual minutes of data, widening to at most ``widest`` (the old width) over long spans, so a
    simulated day is still a few thousand requests, not tens of thousands."""
    return min(widest, max(unthinned, (end - start) / 200))


def reconcile(store, emulators: dict, consumer=None, http_base: str | None = None, since: float = 0.0) -> Tally:
    """``store``: the running appliance's Store, or a store file (then only what the writer has
    moved into SQLite counts: stop the service first). ``emulators`` maps node name -> Emulator
    (with its ledger); rows before ``since`` (seeded history) are not the emulators' and are left out."""
    tally = Tally()
    reader = _reader(store)
    db = sqlite3.connect(f"file:{reader.path}?mode=ro", uri=True)
    try:
        smap = series_for(db)
        t_lo = t_hi = None
        row_times: set[int] = set()
        for node, emu in emulators.items():
            led = emu.ledger
            on_time = led.snapshot()
            with led._lock:
                late = {k: n for k, n in led.late.items()}
            for (ch, q), values in sorted(on_time.items()):
                key = (node, ch, q)
                tally.produced += len(values)
                tally.late += late.get((ch, q), 0)
                if key not in smap:
                    tally.lost += len(values)
                    tally.per_series[f"{node}/{ch}/{q}"] = (len(values), 0)
                    continue
                sid, name, _ = smap[key]
                rows = [(round(t * 1000), v) for _, t, v, _st in reader.iter_raw([name], since, MAX_TIME)]
                stored = len(rows)
                tally.stored += stored
                tally.lost += max(0, len(values) - stored)
                known = Counter(values)
                numbers = Counter(v for _, v in rows if v is not None)
                tally.foreign += (
                    sum(max(0, n - known[v]) for v, n in numbers.items()) if not late.get((ch, q)) else 0
                )  # late replies' values are not kept; then only counts are compared
                tally.per_series[name] = (len(values), stored)
                if rows:
                    t_lo = rows[0][0] if t_lo is None else min(t_lo, rows[0][0])
                    t_hi = rows[-1][0] if t_hi is None else max(t_hi, rows[-1][0])
                    row_times.update(t for t, _ in rows)
        if t_lo is None:
            return tally
        times = sorted(t / 1000 for t in row_times)
        # the width from the seconds the rows cover, not their span: a clock step a day ahead left a day
        # empty, widened the windows to 90 s and thinned two readings 1 ms apart out of the HTTP answer
        start, end = 0.0, occupied(times)
        if consumer is not None:
            tally.served_wamp = 0
            for node in emulators:
                fields = [fld for (n, _, _), (_, _, fld) in smap.items() if n == node]
                # windows of sisock's MAX_POINTS ms: a stride under 2 ms, so rows 1 ms apart both come back
                for a, b in covering(times, narrow(start, end, SISOCK_MAX_POINTS / 1000, 3000)):
                    got = consumer.get_data(node, fields, a, b)
                    tally.served_wamp += sum(len(v) for v in got["data"].values())
        if http_base is not None:
            tally.served_http = 0
            names = [name for (n, _, _), (_, name, _) in smap.items() if n in emulators]
            # windows of the per-series point budget in ms: a stride under 2 ms, so every row comes back raw
            # (two cycles back to back on a loaded machine read an input 1 ms apart; a wider window thins one)
            for a, b in covering(times, narrow(start, end, points_per_series(len(names)) / 1000, 90)):
                body = json.dumps(
                    {
                        "range": {"from": repr(a), "to": repr(b)},
                        "maxDataPoints": 100000,
                        "intervalMs": 0,
                        "targets": [{"target": n} for n in names],
                    }
                ).encode()
                req = urllib.request.Request(
                    f"{http_base}/grafana/query", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=30) as r:
                    tally.served_http += sum(len(t["datapoints"]) for t in json.load(r))
    finally:
        db.close()
    return tally


def occupied(times: list[float], gap: float = 60.0) -> float:
    """Seconds the (sorted) row times cover, each gap counted up to ``gap``: a clock step's empty day is not."""
    return sum(min(b - a, gap) for a, b in zip(times, times[1:], strict=False))


def covering(times: list[float], width: float):
    """[a, b) windows about ``width`` wide that cover every one of the (sorted, ms-rounded) ``times``,
    none over empty stretches, none overlapping: a row is counted in exactly one window. In whole ms,
    as the store's reader rounds a window's ends (a window ending on a half ms dropped a row there)."""
    ms = [round(t * 1000) for t in times]
    w = max(1, round(width * 1000))
    i, hi = 0, None
    while i < len(ms):
        lo = ms[i] if hi is None else max(ms[i], hi)
        hi = lo + w
        yield lo / 1000, hi / 1000
        while i < len(ms) and ms[i] < hi:
            i += 1


def windows(start: float, end: float, width: float):
    """[a, b) windows covering [start, end): short enough that readers return raw rows."""
    a = start
    while a < end:
        yield a, min(a + width, end)
        a += width


def stored(store, name: str, t0: float = 0.0, t1: float = MAX_TIME) -> list[tuple[float, float | None]]:
    """(t, value) of every stored sample of ``node::field`` in [t0, t1), hot or sealed, in time order."""
    return [(t, v) for _, t, v, _st in _reader(store).iter_raw([name], t0, t1)]


def stored_count(db_path) -> int:
    """Every stored sample, hot, sealed or journaled, of a store no service has open.

    Opening it as the next start would, replays the journal first (readings made durable but
    not yet moved into SQLite when the writer was killed)."""
    from appliance.store import Store

    Store(db_path).close()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT (SELECT coalesce(sum(n), 0) FROM fresh) + (SELECT coalesce(sum(n), 0) FROM block)"
        ).fetchone()[0]
    finally:
        db.close()


def rollup_mismatches(store, tiers=(10, 60, 600, 3600)) -> list[str]:
    """Buckets where what readers are served at a tier differs from the aggregate of the stored samples."""
    reader = _reader(store)
    bad = []
    for f in reader.fields():
        rows = [(t, v) for _, t, v, _st in reader.iter_raw([f.name], 0, MAX_TIME) if v is not None]
        if not rows:
            continue
        lo, hi = rows[0][0], rows[-1][0]
        for tier in tiers:
            expect: dict[int, list] = {}
            for t, v in rows:
                e = expect.setdefault(int(t) // tier * tier, [0, 0.0, math.inf, -math.inf])
                e[0] += 1
                e[1] += v
                e[2], e[3] = min(e[2], v), max(e[3], v)
            start = lo // tier * tier
            d = reader.data([f.name], start, hi + tier, min_stride=tier, max_points=None, now=hi + tier)[f.name]
            got = {int(t): (v, mn, mx) for t, v, mn, mx in zip(d.t, d.value, d.min or [], d.max or [], strict=False)}
            for b, (n, total, mn, mx) in expect.items():
                g = got.get(b)
                if g is None or g[1] != mn or g[2] != mx or abs(g[0] - total / n) > 1e-9 * max(1.0, abs(g[0])):
                    bad.append(f"{f.name} tier {tier} bucket {b}: served {g}, stored n={n} mean={total / n}")
            bad += [f"{f.name} tier {tier} bucket {b}: served but nothing stored" for b in got if b not in expect]
    return bad


def forwarded(store, listener=None, influx=None, root: str = "observatory") -> dict[str, tuple[int, int, int]]:
    """What the push uplinks delivered, per series with an OCS name (flagged readings are not sent):
    ``name -> (non-NULL samples stored, missing or extra on the OCS feed, missing or extra in InfluxDB)``.

    ``listener``: a FeedListener subscribed to the feeds (as OCS's InfluxDB publisher is);
    ``influx``: the InfluxDB the uplink writes (``tests.support.routers.Influx``). A ``None`` reader counts 0.
    """
    reader = _reader(store)
    feed = listener.samples() if listener is not None else {}
    out = {}
    for f in reader.fields():
        if not f.ocs:
            continue
        want = {round(t * 1000) for _, t, v, _st in reader.iter_raw([f.name], 0, MAX_TIME) if v is not None}
        ocs_bad = influx_bad = 0
        if listener is not None:
            got = [round(t * 1000) for t, _ in feed.get(f"{root}.{f.node}.{f.ocs}", [])]
            ocs_bad = len(want ^ set(got)) + (len(got) - len(set(got)))  # missing, extra, duplicated
        if influx is not None:
            res = influx.query(f'SELECT "{f.ocs}" FROM "{root}.{f.node}"')["results"][0].get("series")
            got_i = {int(r[0]) for r in res[0]["values"] if r[1] is not None} if res else set()
            influx_bad = len(want ^ got_i)
        out[f.name] = (len(want), ocs_bad, influx_bad)
    return out


def forwarding_gaps(store, listener=None, influx=None) -> dict[str, tuple[int, int, int]]:
    """The series of ``forwarded`` whose OCS feed or InfluxDB is not exactly what is stored."""
    return {k: v for k, v in forwarded(store, listener, influx).items() if v[1] or v[2]}


class ShareClientsLeftOut:
    """An emulator as ``reconcile`` sees it, without the readings the appliance's share clients were given
    (issue 26): the share sends each client line with ``;*ESR?`` at its end, which the poller's own reading
    lines never have. Pass ``{node: ShareClientsLeftOut(emu.ledger)}`` in place of the emulator."""

    def __init__(self, ledger) -> None:
        self.ledger = _Filtered(ledger)


class _Filtered:
    def __init__(self, ledger) -> None:
        self._lock, self.late = ledger._lock, ledger.late
        self._ledger = ledger

    def snapshot(self):
        snap = self._ledger.snapshot()
        for line, reply in list(self._ledger.exchanges):
            if not line.upper().endswith(";*ESR?"):
                continue
            parts, answers = _parts(line), reply.split(";")
            if len(parts) != len(answers):
                continue
            for p, a in zip(parts, answers, strict=True):
                q = QUANTITY.get(p.mnemonic)
                if q and p.args:
                    values = snap.get((p.args[0].upper().lstrip("0") or "0", q), [])
                    with contextlib.suppress(ValueError):
                        values.remove(float(a))
        return snap


def _parts(line: str):
    from appliance.share.lines import parse_line

    return parse_line(line)


def quiesce(*emus, settle: float = 2.5, app=None) -> None:
    """Stop the instruments answering, so nothing is in flight when the appliance stops; with ``app``,
    also wait until every reading the pollers handed on is written (a loaded machine's writer lags)."""
    for e in emus:
        e.control("mute on")
    time.sleep(settle)  # past a timeout (1 s) and a backoff: every exchange has been answered or given up
    if app is not None:
        deadline = time.monotonic() + 30
        last = -1
        while time.monotonic() < deadline:  # the queue empty and the writer's count still for 0.5 s
            if len(app.queue) == 0 and app.store.written == last:
                return
            last = app.store.written
            time.sleep(0.5)
        raise AssertionError("the store kept writing for 30 s after the instruments went quiet")
