"""Prometheus exposition at ``GET /metrics``: a custom collector reading current state at scrape time.

Units are deliberate for cryogenics: ``_kelvin``, ``_ohms``, ``_volts`` (not celsius). The
exposition is serialised once per store commit (cache.Snapshot), so many scrapers cost one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from bottle import Bottle, response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from ..health import ERROR_KINDS
from ..naming import OTHER_UNITS_METRIC, UNITS_METRICS
from .cache import Snapshot
from .common import SNAPSHOT_MAX_AGE

if TYPE_CHECKING:
    from ..health import UplinkHealth
    from ..alarm_service import AlarmService
    from ..poller import Poller
    from ..samples import SampleQueue
    from ..store import Store


@dataclass(eq=False)  # the registry keys collectors by identity
class ApplianceCollector:
    """What a scrape reads: the store, the pollers' health, the sample queue, the clock, the
    uplinks' health (a callable: uplinks start after the registry is made) and the alarms."""

    store: Store
    pollers: Sequence[Poller]
    queue: SampleQueue
    clock_synced: Callable[[], bool | None]
    uplink_health: Callable[[], Sequence[UplinkHealth]]
    alarms: AlarmService | None = None

    def collect(self) -> Iterator[Metric]:
        store = self.store
        now = time.time()
        by_units = {u: GaugeMetricFamily(m.name, m.help, labels=["field", "node"]) for u, m in UNITS_METRICS.items()}
        other = GaugeMetricFamily(OTHER_UNITS_METRIC.name, OTHER_UNITS_METRIC.help, labels=["field", "node", "units"])
        status = GaugeMetricFamily(
            "kelvinpi_reading_status", "Reading status bits of the latest sample", labels=["field", "node"]
        )
        age = GaugeMetricFamily("kelvinpi_reading_age_seconds", "Age of the latest sample", labels=["field", "node"])
        for r in store.latest():
            labels = [r["field"], r["node"]]
            status.add_metric(labels, r["status"])
            age.add_metric(labels, max(0.0, now - r["t"]))
            if r["value"] is None:
                continue
            family = by_units.get(r["units"])
            if family is not None:
                family.add_metric(labels, r["value"])
            else:
                other.add_metric(labels + [r["units"]], r["value"])
        yield from (*by_units.values(), other, status, age)

        up = GaugeMetricFamily("kelvinpi_instrument_up", "1 while the instrument answers", labels=["node", "model"])
        last = GaugeMetricFamily(
            "kelvinpi_instrument_last_good_timestamp_seconds", "Time of the last good cycle", labels=["node"]
        )
        errors = CounterMetricFamily("kelvinpi_instrument_errors", "Instrument errors by kind", labels=["node", "kind"])
        reconnects = CounterMetricFamily("kelvinpi_instrument_connects", "Successful (re)connections", labels=["node"])
        cycles = CounterMetricFamily("kelvinpi_instrument_poll_cycles", "Completed poll cycles", labels=["node"])
        overruns = CounterMetricFamily(
            "kelvinpi_instrument_poll_overruns", "Poll cycles longer than the interval", labels=["node"]
        )
        for p in self.pollers:
            h = p.health
            up.add_metric([h.name, h.model], 1 if h.connected else 0)
            if h.last_good:
                last.add_metric([h.name], h.last_good)
            for kind in ERROR_KINDS:
                errors.add_metric([h.name, kind], h.errors.get(kind, 0))
            reconnects.add_metric([h.name], h.reconnects)
            cycles.add_metric([h.name], h.cycles)
            overruns.add_metric([h.name], h.overruns)
        yield from (up, last, errors, reconnects, cycles, overruns)

        yield GaugeMetricFamily("kelvinpi_store_file_bytes", "Store file size incl. WAL", value=store.file_bytes())
        yield GaugeMetricFamily("kelvinpi_store_used_bytes", "Store bytes in use", value=store.used_bytes())
        yield GaugeMetricFamily("kelvinpi_store_max_bytes", "Store size cap", value=store.max_bytes)
        yield CounterMetricFamily("kelvinpi_store_samples_written", "Samples committed", value=store.written)
        yield CounterMetricFamily("kelvinpi_store_commits", "Store commits", value=store.commits)
        yield GaugeMetricFamily(
            "kelvinpi_store_commit_seconds", "Duration of the last commit", value=store.last_commit_seconds
        )
        yield CounterMetricFamily(
            "kelvinpi_store_write_errors", "Failed store writes (data kept in memory)", value=store.write_errors
        )
        yield GaugeMetricFamily("kelvinpi_queue_samples", "Samples waiting for the store", value=len(self.queue))
        yield GaugeMetricFamily(
            "kelvinpi_store_records_queued",
            "Events, snapshots and cursor moves waiting for the store",
            value=store.records_queued(),
        )
        yield CounterMetricFamily(
            "kelvinpi_store_records_dropped",
            "Events, snapshots and cursor moves dropped from a full memory queue",
            value=store.records_dropped,
        )
        yield CounterMetricFamily(
            "kelvinpi_store_rejected_samples",
            "Readings the store could not hold at all (no UNIX time, no 32-bit status, no number), dropped",
            value=store.rejected,
        )
        yield CounterMetricFamily("kelvinpi_store_sealed_blocks", "Compressed blocks sealed", value=store.sealed_blocks)
        yield CounterMetricFamily(
            "kelvinpi_queue_dropped_samples", "Samples dropped from a full memory queue", value=self.queue.dropped
        )
        synced = self.clock_synced()
        yield GaugeMetricFamily(
            "kelvinpi_clock_synchronised",
            "1 if NTP-synchronised, 0 if not, -1 unknown",
            value=-1 if synced is None else int(synced),
        )

        up_u = GaugeMetricFamily("kelvinpi_uplink_up", "1 while the uplink is connected", labels=["uplink", "kind"])
        backlog = GaugeMetricFamily(
            "kelvinpi_uplink_backlog_samples", "Samples not yet acknowledged", labels=["uplink", "kind"]
        )
        sent = CounterMetricFamily("kelvinpi_uplink_sent_samples", "Samples acknowledged", labels=["uplink", "kind"])
        for u in self.uplink_health():
            up_u.add_metric([u.name, u.kind], 1 if u.connected else 0)
            backlog.add_metric([u.name, u.kind], u.backlog)
            sent.add_metric([u.name, u.kind], u.sent)
        yield from (up_u, backlog, sent)

        alarms = self.alarms
        if alarms is not None:
            active = GaugeMetricFamily(
                "kelvinpi_alarm_active", "1 while the alarm is raised", labels=["name", "severity"]
            )
            acked = GaugeMetricFamily(
                "kelvinpi_alarm_acknowledged", "1 while the raised alarm is acknowledged", labels=["name"]
            )
            for a in alarms.alarms():
                active.add_metric([a["name"], a["severity"]], 1 if a["active"] else 0)
                acked.add_metric([a["name"]], 1 if a["active"] and a["acked"] else 0)
            pending = GaugeMetricFamily(
                "kelvinpi_notify_backlog", "Notifications waiting for delivery", labels=["target", "kind"]
            )
            failures = CounterMetricFamily(
                "kelvinpi_notify_failures", "Failed delivery attempts", labels=["target", "kind"]
            )
            for lane in alarms.lanes.values():
                pending.add_metric([lane.sender.name, lane.sender.kind], lane.backlog())
                failures.add_metric([lane.sender.name, lane.sender.kind], lane.failures)
            yield from (active, acked, pending, failures)


def make_registry(
    *,
    store: Store,
    pollers: Sequence[Poller],
    queue: SampleQueue,
    clock_synced: Callable[[], bool | None],
    uplink_health: Callable[[], Sequence[UplinkHealth]],
    alarms: AlarmService | None = None,
) -> CollectorRegistry:
    """A registry holding only the appliance's collector (no process or platform collectors)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ApplianceCollector(store, pollers, queue, clock_synced, uplink_health, alarms))
    return reg


def install(app: Bottle, *, registry: CollectorRegistry, changed: Callable[[], object]) -> None:
    """``changed`` is the key the exposition is re-serialised on (cache.store_changed)."""
    snap = Snapshot(lambda: generate_latest(registry), changed, SNAPSHOT_MAX_AGE)

    @app.get("/metrics")
    def metrics():
        response.content_type = CONTENT_TYPE_LATEST
        return snap.get()
