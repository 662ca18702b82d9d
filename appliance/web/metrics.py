"""Prometheus exposition at ``GET /metrics``: a custom collector reading current state at scrape time.

Units are deliberate for cryogenics: ``_kelvin``, ``_ohms``, ``_volts`` (not celsius). The
exposition is serialised once per store commit (cache.Snapshot), so many scrapers cost one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bottle import Bottle, response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from ..health import (
    AlarmStats,
    InstrumentHealth,
    ShareHealth,
    StoreStats,
    TargetStats,
    UpdateGateStats,
    UplinkHealth,
    metric_fields,
)
from ..naming import OTHER_UNITS_METRIC, UNITS_METRICS
from .cache import Snapshot
from .common import SNAPSHOT_MAX_AGE

if TYPE_CHECKING:
    from ..alarm_service import AlarmService
    from ..poller import Poller
    from ..samples import SampleQueue
    from ..store import Store


@dataclass(eq=False)  # the registry keys collectors by identity
class ApplianceCollector:
    """What a scrape reads: the store, the pollers' health, the sample queue, the clock, the
    uplinks' health (a callable: uplinks start after the registry is made) and the alarms.
    Everything but the latest readings comes from the stats records of ``appliance.health``, the
    same ones ``/api/v1/health`` shows (the alarms' ``AlarmStats`` from the rules' views)."""

    store: Store
    pollers: Sequence[Poller]
    queue: SampleQueue
    clock_synced: Callable[[], bool | None]
    uplink_health: Callable[[], Sequence[UplinkHealth]]
    alarms: AlarmService | None = None
    now: Callable[[], float] = time.time  # the wall clock readings' ages are measured on (fixed in the golden test)
    update_gate: Callable[[], UpdateGateStats] | None = None  # the try boot's health gate (appliance/update)

    def collect(self) -> Iterator[Metric]:
        store = self.store
        now = self.now()
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

        yield from stats_families(InstrumentHealth, [p.health for p in self.pollers])
        shares = [p.health.share for p in self.pollers if p.health.share is not None]
        if shares:  # only where [instrument.share] is on: /metrics of an appliance without one is unchanged
            yield from stats_families(ShareHealth, shares)
        yield from stats_families(StoreStats, [StoreStats.read(store, self.queue, used_bytes=True)])
        synced = self.clock_synced()
        yield GaugeMetricFamily(
            "kelvinpi_clock_synchronised",
            "1 if NTP-synchronised, 0 if not, -1 unknown",
            value=-1 if synced is None else int(synced),
        )
        yield from stats_families(UplinkHealth, list(self.uplink_health()))

        alarms = self.alarms
        if alarms is not None:
            yield from stats_families(AlarmStats, [AlarmStats.of(a) for a in alarms.alarms()])
            yield from stats_families(TargetStats, [lane.stats() for lane in alarms.lanes.values()])
        if self.update_gate is not None:
            yield from stats_families(UpdateGateStats, [self.update_gate()])


def stats_families(cls: type, records: Sequence[object]) -> Iterator[Metric]:
    """One family per metric field of the stats class ``cls`` (``appliance.health.stat``), in field
    order, with a sample per record: a family is there even with no records (as before: an appliance
    without uplinks still says it has none). A None value is no sample; a bool is 0 or 1."""
    for name, spec in metric_fields(cls):
        labels = [label for label, _attr in spec.labels] + ([spec.each[0]] if spec.each else [])
        family: GaugeMetricFamily | CounterMetricFamily = (CounterMetricFamily if spec.counter else GaugeMetricFamily)(
            spec.name, spec.help, labels=labels
        )
        for r in records:
            base = [str(getattr(r, attr)) for _label, attr in spec.labels]
            value = getattr(r, name)
            if spec.each:
                for key in spec.each[1]:
                    family.add_metric(base + [key], value.get(key, 0))
            elif value is not None:
                family.add_metric(base, int(value) if isinstance(value, bool) else value)
        yield family


def make_registry(
    *,
    store: Store,
    pollers: Sequence[Poller],
    queue: SampleQueue,
    clock_synced: Callable[[], bool | None],
    uplink_health: Callable[[], Sequence[UplinkHealth]],
    alarms: AlarmService | None = None,
    now: Callable[[], float] = time.time,
    update_gate: Callable[[], UpdateGateStats] | None = None,
) -> CollectorRegistry:
    """A registry holding only the appliance's collector (no process or platform collectors)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ApplianceCollector(store, pollers, queue, clock_synced, uplink_health, alarms, now, update_gate))
    return reg


def install(app: Bottle, *, registry: CollectorRegistry, changed: Callable[[], object]) -> None:
    """``changed`` is the key the exposition is re-serialised on (cache.store_changed)."""
    snap = Snapshot(lambda: generate_latest(registry), changed, SNAPSHOT_MAX_AGE)

    @app.get("/metrics")
    def metrics():
        response.content_type = CONTENT_TYPE_LATEST
        return snap.get()
