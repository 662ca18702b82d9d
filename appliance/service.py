"""``kelvinpi run``: wire config, store, pollers, uplinks and web into one process under systemd."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from . import __version__, sdnotify
from .clock import clock_synchronised
from .config import Config
from .control import Control
from .health import StoreStats, SystemdWatchdogPinger, UplinkHealth
from .latest import DeliveredQueue, LatestReadings
from .poller import Poller
from .samples import SampleQueue
from .store import Store, StoreBusy
from .update import Conditions, HealthGate, UpdateCommands, boot_info
from .update.devicetree import DeviceTreeError
from .uplinks import UplinkRunner, build_uplinks
from .web import Server, make_app
from .web.metrics import make_registry

log = logging.getLogger("kelvinpi")

LEVEL_PREFIX = {
    logging.DEBUG: "<7>",
    logging.INFO: "<6>",
    logging.WARNING: "<4>",
    logging.ERROR: "<3>",
    logging.CRITICAL: "<2>",
}


def _still_migrating() -> None:
    """Tell systemd the service is still starting (a migration of a big store can take minutes), not hung."""
    sdnotify.notify("EXTEND_TIMEOUT_USEC=120000000\nSTATUS=migrating the store")


class JournalFormatter(logging.Formatter):
    """Plain lines for journald (which adds the time), with sd-daemon(3) level prefixes."""

    def __init__(self, prefixes: bool) -> None:
        super().__init__("%(name)s: %(message)s")
        self.prefixes = prefixes

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.prefixes:
            return LEVEL_PREFIX.get(record.levelno, "<6>") + text
        return f"{time.strftime('%H:%M:%S')} {record.levelname:7s} {text}"


def setup_logging(level: str) -> None:
    import os

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(prefixes=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Appliance:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.version = __version__
        self.started = time.time()
        self.stop_event = threading.Event()
        sc = config.store
        # a migration of a big store can take minutes: tell systemd we are still starting, not hung
        self.store = Store(
            sc.path,
            sc.raw_retention_days,
            sc.rollup_retention_days,
            sc.max_size_mb,
            sc.commit_interval,
            progress=_still_migrating,
        )
        # readings as the pollers hand them on: the alarms see them before (and whether or not) they are written
        self.latest = LatestReadings()
        self.queue: SampleQueue = DeliveredQueue(sc.queue_size, self.latest)
        enabled = [i for i in config.instrument if i.enabled]
        self.watchdog_pinger = (
            SystemdWatchdogPinger(sdnotify.notify, [i.name for i in enabled]) if sdnotify.watchdog_interval() else None
        )
        self.pollers = [
            Poller(i, config.polling, self.queue, self.store, self.stop_event, self.watchdog_pinger) for i in enabled
        ]
        self.uplinks: list[UplinkRunner] = []  # built by add_uplinks, started and stopped with the rest
        self.control, self.control_error = None, None
        try:
            self.control = Control(config.control, self.pollers, self.store)
        except PermissionError as exc:  # fail closed: no control, polling goes on, the reason is shown
            self.control_error = str(exc)
            log.error("instrument control disabled: %s", exc)
        from .share import build_shares

        # [instrument.share]: the instrument's protocol on a port of the Pi, its clients' lines run on the poller
        self.share_errors: dict[str, str] = {}  # node -> why its share is not listening
        self.shares = build_shares(
            self.pollers, self.store, self.control.audit if self.control else None, self.share_errors
        )
        from .alarm_service import AlarmService

        self.alarms = AlarmService(
            config,
            self.store,
            latest=self.latest,
            pollers=self.pollers,
            queue=self.queue,
            uplink_health=self.uplink_health,
        )
        self.ready_event = threading.Event()  # set once READY=1 has gone to systemd (run())
        self.update_gate = self._update_gate()
        self.metrics_registry = make_registry(
            store=self.store,
            pollers=self.pollers,
            queue=self.queue,
            clock_synced=self.clock_synced,
            uplink_health=self.uplink_health,
            alarms=self.alarms,
            update_gate=self.update_gate.stats,
        )
        self.server: Server | None = None
        self._web_thread: threading.Thread | None = None
        self._clock: tuple[bool | None, float] = (None, 0.0)
        self.clock_steps = 0

    def _update_gate(self) -> HealthGate:
        """The try boot's health gate (appliance/update/gate.py): what it waits for, read from this service."""
        uc = self.config.update
        try:
            boot = boot_info(uc.device_tree)
        except (DeviceTreeError, OSError) as exc:
            log.error("cannot tell which slot booted: %s", exc)
            boot = None
        conditions = Conditions(
            ready=self.ready_event.is_set,
            instruments=lambda: {p.cfg.name: p.health.samples > 0 for p in self.pollers},
            store_committed=lambda: self.store.commits > 0,
            uplinks=lambda: {h.name: h.connected for h in self.uplink_health()},
        )
        return HealthGate(
            UpdateCommands.of(uc),
            boot,
            conditions,
            lambda kind, detail: self.store.event(kind, None, detail),
            uc.commit_deadline_s,
            self.stop_event,
        )

    def clock_synced(self) -> bool | None:
        value, checked = self._clock
        if time.monotonic() - checked > 10:
            value = clock_synchronised()
            self._clock = (value, time.monotonic())
        return value

    def config_error(self) -> str | None:
        """The first-boot report of a rejected kelvinpi.toml (the last good one keeps running)."""
        if not self.config_path:
            return None
        from pathlib import Path

        f = Path(self.config_path).parent / "config-error.txt"
        try:
            return f.read_text(encoding="utf-8", errors="replace")[:4000] or None
        except OSError:
            return None

    def add_uplinks(self) -> None:
        """Build the configured uplinks (``start`` starts them): `kelvinpi run` and the tests of the uplinks."""
        self.uplinks = build_uplinks(
            self.config.uplink, self.store, [p.cfg for p in self.pollers], alarm_source=self.alarms.active
        )

    def uplink_health(self) -> list[UplinkHealth]:
        return [u.health for u in self.uplinks if u.health is not None]

    def health(self) -> dict:
        st = self.store
        instruments = [p.health.as_dict() for p in self.pollers]
        stats = StoreStats.read(st, self.queue)  # the same record /metrics exposes
        # ok: every instrument answers and the store has committed recently (a past write error
        # that has since cleared does not keep the box "not ok")
        store_ok = st.last_commit == 0 or time.time() - st.last_commit < 10 * max(1.0, st.commit_interval)
        writing = stats.writing
        alarms = self.alarms.health()
        ok = (
            all(i["connected"] for i in instruments)
            and store_ok
            and writing
            and not self.queue.dropped
            and not st.records_dropped
            and not any(a["severity"] != "info" for a in alarms["active"])
        )
        return {
            "ok": bool(ok),
            "version": self.version,
            "uptime": time.time() - self.started,
            "config_error": self.config_error(),
            "control": {
                "enabled": self.control is not None and self.config.control.enabled,
                "error": self.control_error,
            },
            "share_errors": self.share_errors,
            "clock_synchronised": self.clock_synced(),
            "clock_steps": self.clock_steps,
            "instruments": instruments,
            "uplinks": [u.as_dict() for u in self.uplink_health()],
            "alarms": alarms,
            "web": None
            if self.server is None
            else {  # slow or greedy clients, cut off (appliance/web/server.py)
                "connections": len(self.server.active_channels),
                "refused": self.server.refused,
                "timed_out": self.server.timed_out,
            },
            "store": stats.as_dict(),
            "update": self.update_gate.stats().as_dict(),
        }

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        self.store.retention_held = True  # until every uplink has registered what it still needs
        self.store.start(self.queue)
        for p in self.pollers:
            p.start()
        for sh in self.shares:
            sh.start()
        try:
            for u in self.uplinks:
                u.start()
        finally:
            self.store.retention_held = False
        self.alarms.start()
        if self.control is not None:  # curve slots a failed upload left marked: marked again, restore scheduled
            from .curve_api import CurveService

            CurveService(self.control).reconcile()
        # waitress under a request deadline and connection limits (why not cheroot: appliance/web/server.py)
        app = make_app(
            store=self.store,
            config=self.config,
            pollers=self.pollers,
            version=self.version,
            health=self.health,
            metrics_registry=self.metrics_registry,
            alarms=self.alarms,
            control=self.control,
            control_error=self.control_error,
        )
        from .update.web import large_body

        # POST /api/v1/update may carry a bundle past MAX_BODY: the token is checked before its body is kept
        self.server = Server(app, self.config.web, large_body(self.control, self.control_error, self.config.update))
        self.web_address = self.server.bind_addr
        self._web_thread = threading.Thread(target=self.server.serve, name="web", daemon=True)
        self._web_thread.start()
        log.info("front panel on http://%s:%d/", *self.web_address[:2])
        # an update the marker says is pending: settled as an event (rolled back, committed), or tried now
        from .update import reconcile
        from .update.primary import rauc_primary

        state_dir = self.config.update.state_dir
        commands = self.update_gate.c
        # nothing in the update's state stops the appliance (a read-only or full data partition, a marker
        # of another shape, a bug): it runs, logs it and records an event saying so
        try:
            reconcile(
                state_dir,
                self.update_gate.boot,
                self.update_gate.record,
                primary=lambda: rauc_primary(commands),
                forget_other=lambda: commands.run(
                    [*commands.rauc, "status", "mark-bad", "other"], "rauc mark-bad other", timeout=30.0
                ),
            )
        except Exception as exc:
            log.exception("update state in %s could not be settled", state_dir)
            self.store.event("update_unknown", None, f"the update state in {state_dir} could not be settled: {exc!r}")
        try:
            self.update_gate.start()  # a try still on trial is judged whatever became of the marker
        except Exception as exc:
            log.exception("the update gate could not start")
            self.store.event("update_unknown", None, f"the try boot's health gate could not start: {exc!r}")

    def wait_ready(self, timeout: float) -> bool:
        """READY once every instrument has been tried once (connected or failed)."""
        deadline = time.monotonic() + timeout
        for p in self.pollers:
            while (
                not p.connected_event.is_set()
                and not p.health.errors
                and time.monotonic() < deadline
                and not self.stop_event.is_set()
            ):
                time.sleep(0.05)
        return all(p.connected_event.is_set() for p in self.pollers)

    def watch_clock(self) -> None:
        """Main-thread loop: notice wall-clock steps (NTP's first sync on a Pi without RTC)."""
        offset = time.time() - time.monotonic()
        while not self.stop_event.wait(1.0):
            now_offset = time.time() - time.monotonic()
            step = now_offset - offset
            if abs(step) > 2.0:
                self.clock_steps += 1
                log.warning("system clock stepped by %+.1f s; readings keep their order and keys", step)
                self.store.event("clock_step", None, f"{step:+.3f} s")
            offset = now_offset

    def stop(self) -> None:
        self.stop_event.set()
        self.alarms.stop()  # before the store stops: its last records are committed with the rest
        for u in self.uplinks:
            u.stop()
        for sh in self.shares:
            sh.stop()
        for p in self.pollers:
            p.join(timeout=max(5.0, p.cfg.timeout * 3))
        self.store.stop()
        if self.server is not None:
            self.server.stop()
        log.info("stopped; %d samples committed in this run", self.store.written)


def run(config: Config, config_path: str | None = None) -> int:
    setup_logging(config.log_level)
    try:
        app = Appliance(config, config_path)
    except StoreBusy as exc:  # a second `kelvinpi run` beside the service: say so, touch nothing
        log.error("%s", exc)
        return 1
    app.add_uplinks()

    def on_signal(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        app.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app.start()
    connected = app.wait_ready(timeout=max(i.timeout for i in config.instrument) * 3 + 2)
    sdnotify.notify("READY=1\nSTATUS=" + ("polling all instruments" if connected else "polling; some instruments down"))
    app.ready_event.set()  # the update gate's first condition (a try boot commits only after READY)
    log.info("ready: %d instrument(s), %d uplink(s)", len(app.pollers), len(app.uplink_health()))
    try:
        app.watch_clock()
    finally:
        sdnotify.notify("STOPPING=1")
        app.stop()
    return 0
