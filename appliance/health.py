"""Health counters shared by pollers, uplinks, web and metrics (plain data, updated in place).

One source for both views: a field that is also a Prometheus metric says so where it is declared
(``stat(...)``: the metric's name, help, counter or gauge, and its labels), and
``appliance.web.metrics`` exposes every such field of the stats records (``StoreStats``,
``InstrumentHealth``, ``UplinkHealth``, ``TargetStats``, ``AlarmStats``) in field order, while ``/api/v1/health``
is their ``as_dict``. A new health field is one declaration here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from drivers.errors import DriverError

# What an instrument error is counted as: each driver error's ``kind`` (drivers/errors.py), and
# "internal" for anything else the poller meets. /metrics exposes every one, zero or not.
ERROR_KINDS: tuple[str, ...] = (*(cls.kind for cls in DriverError.__subclasses__()), "internal")

if TYPE_CHECKING:
    from .samples import SampleQueue
    from .store import Store


@dataclass(frozen=True)
class MetricSpec:
    """How a stats field is exposed at /metrics: ``labels`` are (label, field of the same record)."""

    name: str
    help: str
    counter: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    each: tuple[str, tuple[str, ...]] | None = None  # a mapping field: (label, keys), one sample per key


def stat(
    metric: str | None = None,
    help: str = "",
    *,
    counter: bool = False,
    labels: tuple[tuple[str, str], ...] = (),
    each: tuple[str, tuple[str, ...]] | None = None,
    health: bool = True,
    **kw: Any,
) -> Any:
    """A stats field: shown in the health (unless ``health`` is False) and, when ``metric`` is
    given, exposed at /metrics under that name. ``kw`` goes to ``dataclasses.field`` (a default)."""
    spec = MetricSpec(metric, help, counter, labels, each) if metric else None
    return field(metadata={"metric": spec, "health": health}, **kw)


def metric_fields(record: object) -> list[tuple[str, MetricSpec]]:
    """(field name, its metric) of a stats record, in declaration order."""
    return [(f.name, f.metadata["metric"]) for f in fields(record) if f.metadata.get("metric")]  # type: ignore[arg-type]


def health_dict(record: object) -> dict:
    """A stats record's health view: its fields but those marked ``health=False``."""
    return {f.name: getattr(record, f.name) for f in fields(record) if f.metadata.get("health", True)}  # type: ignore[arg-type]


@dataclass
class StoreStats:
    """What the store and the sample queue report, read once for the health and /metrics alike."""

    path: str = stat()
    file_bytes: int = stat("kelvinpi_store_file_bytes", "Store file size incl. WAL")
    used_bytes: int | None = stat("kelvinpi_store_used_bytes", "Store bytes in use", health=False)
    max_bytes: int = stat("kelvinpi_store_max_bytes", "Store size cap")
    written: int = stat("kelvinpi_store_samples_written", "Samples committed", counter=True)
    commits: int = stat("kelvinpi_store_commits", "Store commits", counter=True)
    last_commit: float | None = stat()
    commit_seconds: float = stat("kelvinpi_store_commit_seconds", "Duration of the last commit")
    write_errors: int = stat("kelvinpi_store_write_errors", "Failed store writes (data kept in memory)", counter=True)
    last_error: str | None = stat()
    queue: int = stat("kelvinpi_queue_samples", "Samples waiting for the store")
    records_queued: int = stat(
        "kelvinpi_store_records_queued", "Events, snapshots and cursor moves waiting for the store"
    )
    records_dropped: int = stat(
        "kelvinpi_store_records_dropped",
        "Events, snapshots and cursor moves dropped from a full memory queue",
        counter=True,
    )
    rejected: int = stat(
        "kelvinpi_store_rejected_samples",
        "Readings the store could not hold at all (no UNIX time, no 32-bit status, no number), dropped",
        counter=True,
    )
    sealed_blocks: int = stat("kelvinpi_store_sealed_blocks", "Compressed blocks sealed", counter=True)
    dropped: int = stat("kelvinpi_queue_dropped_samples", "Samples dropped from a full memory queue", counter=True)
    writing: bool = stat()  # False while writes are failing

    @classmethod
    def read(cls, store: Store, queue: SampleQueue, used_bytes: bool = False) -> StoreStats:
        """``used_bytes`` asks SQLite (a reader connection): /metrics does, the health never has."""
        return cls(
            path=str(store.path),
            file_bytes=store.file_bytes(),
            used_bytes=store.used_bytes() if used_bytes else None,
            max_bytes=store.max_bytes,
            written=store.written,
            commits=store.commits,
            last_commit=store.last_commit or None,
            commit_seconds=store.last_commit_seconds,
            write_errors=store.write_errors,
            last_error=store.last_error,
            queue=len(queue),
            records_queued=store.records_queued(),
            records_dropped=store.records_dropped,
            rejected=store.rejected,
            sealed_blocks=store.sealed_blocks,
            dropped=queue.dropped,
            writing=store.last_error_t <= store.last_commit,
        )

    def as_dict(self) -> dict:
        return health_dict(self)


_NODE = (("node", "name"),)


@dataclass
class InstrumentHealth:
    name: str
    model: str
    transport: str
    connected: bool = stat(
        "kelvinpi_instrument_up", "1 while the instrument answers", labels=(*_NODE, ("model", "model")), default=False
    )
    identity: str | None = None
    last_good: float | None = stat(
        "kelvinpi_instrument_last_good_timestamp_seconds", "Time of the last good cycle", labels=_NODE, default=None
    )
    last_error: str | None = None
    last_error_t: float | None = None
    errors: Counter = stat(
        "kelvinpi_instrument_errors",
        "Instrument errors by kind",
        counter=True,
        labels=_NODE,
        each=("kind", ERROR_KINDS),
        default_factory=Counter,
    )
    reconnects: int = stat(
        "kelvinpi_instrument_connects", "Successful (re)connections", counter=True, labels=_NODE, default=0
    )
    cycles: int = stat(
        "kelvinpi_instrument_poll_cycles", "Completed poll cycles", counter=True, labels=_NODE, default=0
    )
    samples: int = 0
    next_retry: float | None = None
    active_channel: str | None = None
    cycle_seconds: float = 0.0
    overruns: int = stat(  # cycles that took longer than the poll interval: the next one started late
        "kelvinpi_instrument_poll_overruns",
        "Poll cycles longer than the interval",
        counter=True,
        labels=_NODE,
        default=0,
    )
    # 372 autoscan: {"autoscan", "channel", "switched" (UNIX s), "rotation": [[channel, pause, dwell], ...]}
    scan: dict | None = None
    # curve slots an upload left part written (slot -> why), until a verify or upload succeeds (curve_api)
    incomplete_curves: dict = field(default_factory=dict)
    share: ShareHealth | None = None  # set when [instrument.share] is on (appliance.share)
    # what the configuration asks and the instrument cannot do, in words (a 336's D2-D5 without its 3062)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "name",
                "model",
                "transport",
                "connected",
                "identity",
                "last_good",
                "last_error",
                "last_error_t",
                "cycles",
                "samples",
                "reconnects",
                "next_retry",
                "active_channel",
                "cycle_seconds",
                "overruns",
                "scan",
                "incomplete_curves",
                "warnings",
            )
        }
        d["errors"] = dict(self.errors)
        d["share"] = None if self.share is None else self.share.as_dict()
        d["age"] = None if self.last_good is None else max(0.0, time.time() - self.last_good)
        return d


@dataclass
class ShareHealth:
    """One instrument's share ([instrument.share], ``appliance.share``): its clients and what they cost."""

    name: str  # the instrument's (data node) name
    port: int = 0
    policy: str = "read"
    clients: int = stat("kelvinpi_share_clients", "Clients connected to the share", labels=_NODE, default=0)
    accepted: int = stat("kelvinpi_share_accepted", "Clients accepted", counter=True, labels=_NODE, default=0)
    refused: int = stat(
        "kelvinpi_share_refused", "Clients refused: max_clients reached", counter=True, labels=_NODE, default=0
    )
    commands: int = stat(
        "kelvinpi_share_commands", "Client lines carried out by the poller", counter=True, labels=_NODE, default=0
    )
    cached: int = stat(
        "kelvinpi_share_cached",
        "Client lines answered from the poller's reading of this cycle",
        counter=True,
        labels=_NODE,
        default=0,
    )
    settings: int = stat(
        "kelvinpi_share_settings", "Client settings carried out (audited)", counter=True, labels=_NODE, default=0
    )
    settings_refused: int = stat(
        "kelvinpi_share_settings_refused",
        "Client settings refused by the policy",
        counter=True,
        labels=_NODE,
        default=0,
    )
    settings_failed: int = stat(
        "kelvinpi_share_settings_failed",
        "Client settings the policy let through and the instrument refused (its ESR error bits; audited)",
        counter=True,
        labels=_NODE,
        default=0,
    )
    dropped: int = stat(
        "kelvinpi_share_dropped_lines",
        "Client lines dropped unanswered: max_queued waiting, asked before an outage, or waited past max_wait",
        counter=True,
        labels=_NODE,
        default=0,
    )
    garbage: int = stat(
        "kelvinpi_share_garbage_lines",
        "Client lines that were not printable ASCII or too long",
        counter=True,
        labels=_NODE,
        default=0,
    )
    timeouts: int = stat(
        "kelvinpi_share_timeouts",
        "Client exchanges the instrument did not answer in time (the link reset; polling went on)",
        counter=True,
        labels=_NODE,
        default=0,
    )
    cut_off: int = stat(
        "kelvinpi_share_cut_off",
        "Clients cut off: idle, or not reading their answers",
        counter=True,
        labels=_NODE,
        default=0,
    )
    displaced: int = stat(
        "kelvinpi_share_displaced_readings",
        "Scanned readings the acquisition could not take because a client moved the scanner",
        counter=True,
        labels=_NODE,
        default=0,
    )
    busy_seconds: float = stat(
        "kelvinpi_share_busy_seconds", "Link time spent on clients' lines", counter=True, labels=_NODE, default=0.0
    )
    # one entry per connected client: address, since, commands, rate (lines/s), wait_ms, queued, ...
    client_list: list = field(default_factory=list)
    # the share's own account of its clients now (read when the health is: a poll interval may be an hour)
    clients_now: Any = stat(health=False, default=None)

    def as_dict(self) -> dict:
        d = health_dict(self)
        if self.clients_now is not None:
            d["client_list"] = self.clients_now()
        return d


_UPLINK = (("uplink", "name"), ("kind", "kind"))


@dataclass
class UplinkHealth:
    name: str
    kind: str
    connected: bool = stat("kelvinpi_uplink_up", "1 while the uplink is connected", labels=_UPLINK, default=False)
    last_success: float | None = None
    backlog: int = stat("kelvinpi_uplink_backlog_samples", "Samples not yet acknowledged", labels=_UPLINK, default=0)
    sent: int = stat("kelvinpi_uplink_sent_samples", "Samples acknowledged", counter=True, labels=_UPLINK, default=0)
    errors: Counter = field(default_factory=Counter)
    last_error: str | None = None
    index: int | None = None  # its position in [[uplink]] (set by build_uplinks): what backlog rules name

    def as_dict(self) -> dict:
        d = {
            k: getattr(self, k) for k in ("name", "kind", "connected", "last_success", "backlog", "sent", "last_error")
        }
        d["errors"] = dict(self.errors)
        return d


_TARGET = (("target", "name"), ("kind", "kind"))


@dataclass
class TargetStats:
    """One notify target's delivery lane (``appliance.notify.Lane``)."""

    name: str
    kind: str
    backlog: int = stat("kelvinpi_notify_backlog", "Notifications waiting for delivery", labels=_TARGET, default=0)
    sent: int = 0
    failures: int = stat(
        "kelvinpi_notify_failures", "Failed delivery attempts", counter=True, labels=_TARGET, default=0
    )
    last_error: str | None = None
    last_success: float | None = None
    next_retry: float | None = None

    def as_dict(self) -> dict:
        return health_dict(self)


@dataclass
class AlarmStats:
    """One alarm rule as /metrics shows it, read from the rule's view (``AlarmService.alarms()``,
    the same records ``/api/v1/alarms`` and the health's ``alarms.active`` list are made of)."""

    name: str
    severity: str
    active: bool = stat(
        "kelvinpi_alarm_active", "1 while the alarm is raised", labels=(("name", "name"), ("severity", "severity"))
    )
    acknowledged: bool = stat(
        "kelvinpi_alarm_acknowledged", "1 while the raised alarm is acknowledged", labels=(("name", "name"),)
    )

    @classmethod
    def of(cls, view: dict) -> AlarmStats:
        """An acknowledgement counts only while the alarm is raised (a cleared one keeps its ``acked``)."""
        active = bool(view["active"])
        return cls(view["name"], view["severity"], active, active and bool(view["acked"]))

    def as_dict(self) -> dict:
        return health_dict(self)


@dataclass
class UpdateGateStats:
    """The update health gate (``appliance.update.gate``): on a try boot, what it still waits for.

    ``state``: none (no A/B boot information), idle (not a try), waiting, committing, committed or
    failed."""

    state: str
    slot: str
    tryboot: bool = stat("kelvinpi_update_try_boot", "1 while this boot is an update's try boot")
    missing: list = stat(default_factory=list)
    missing_count: int = stat(
        "kelvinpi_update_gate_missing", "Conditions the try boot's health gate still waits for", default=0
    )
    seconds: float | None = stat(
        "kelvinpi_update_gate_seconds", "Seconds the try boot has waited for its health gate (or took)", default=None
    )
    deadline_s: float = stat("kelvinpi_update_gate_deadline_seconds", "The try boot's deadline", default=0.0)
    verdict: str | None = None
    info: int = stat(
        "kelvinpi_update_gate_info",
        "The update health gate's state (label state) and the booted slot (label slot)",
        labels=(("state", "state"), ("slot", "slot")),
        health=False,
        default=1,
    )

    def as_dict(self) -> dict:
        return health_dict(self)


class SystemdWatchdogPinger:
    """Sends systemd its watchdog ping (``WATCHDOG=1``), but only once every poller has made progress.

    Not a watchdog itself: systemd is (``WatchdogSec=`` in the unit), and restarts the service
    when the pings stop. This class decides when a ping is honest. Each poller ``kick``s it
    after each completed cycle *or* each connection attempt, so an unplugged instrument (backing
    off) does not starve systemd's watchdog, but a poller hung inside I/O does.
    """

    def __init__(self, notify: Callable[[str], object], names: list[str]) -> None:
        self.notify = notify
        self._pending = set(names)
        self._all = set(names)
        self._lock = threading.Lock()
        self.pings = 0

    def kick(self, name: str) -> None:
        with self._lock:
            self._pending.discard(name)
            if self._pending:
                return
            self._pending = set(self._all)
        self.pings += 1
        self.notify("WATCHDOG=1")
