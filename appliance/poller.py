"""One worker thread per instrument: connect, snapshot, poll forever, reconnect with backoff.

A stuck or unplugged instrument only ever blocks its own thread, bounded by the
driver's timeout; the others keep polling.
"""
from __future__ import annotations

import logging
import random
import re
import threading
import time
from dataclasses import dataclass

from drivers import DriverError
from drivers.errors import ConnectionLost, InstrumentTimeout
from drivers.ls240 import SENSOR_UNITS, Model240
from drivers.ls372 import MEASUREMENT_CHANNELS, Model372
from drivers.readings import Reading
from drivers.transport import TcpTransport, VisaTransport

from .clock import clock_synchronised
from .config import InstrumentConfig, PollingConfig
from .health import InstrumentHealth
from .samples import FLAG_CLOCK_UNSYNCED, Sample, SampleQueue, SeriesKey

log = logging.getLogger("kelvinpi.poller")

SNAPSHOT_EVERY = 600.0


def slug(name: str) -> str:
    """Channel name to field stem: lower case, spaces to '_' (``Channel 05`` -> ``channel_05``)."""
    s = re.sub(r"\s+", "_", name.strip().lower())
    s = re.sub(r"[^a-z0-9_]", "", s)
    return s or "channel"


def ocs_names(model: str, channel: str, name: str) -> tuple[str, str]:
    """The field names socs's Lake Shore agents write, so OCS/InfluxDB dashboards keep working.

    372: the channel's name with spaces as '_' plus _T / _R (``Channel_05_T``), the control input
    ``control_T`` / ``control_R``; 240: ``Channel_<n>_T`` / ``Channel_<n>_V``.
    """
    if model == "240":
        return f"Channel_{channel}_T", f"Channel_{channel}_V"
    if channel == "A":
        return "control_T", "control_R"
    stem = re.sub(r"[^A-Za-z0-9_]", "", re.sub(r"\s+", "_", name.strip())) or f"Channel_{int(channel):02d}"
    if not stem[0].isalpha():
        stem = "Channel_" + stem
    return f"{stem}_T", f"{stem}_R"


def make_instrument(cfg: InstrumentConfig):
    expected = cfg.expect_serial or cfg.serial_number
    if cfg.model == "372":
        if cfg.transport == "tcp":
            return Model372(TcpTransport(cfg.host, cfg.port), timeout=cfg.timeout, expected_serial=expected)
        if cfg.transport == "serial":
            return Model372.serial(cfg.serial_device(), timeout=cfg.timeout, expected_serial=expected)
        settings = dict(baud_rate=57600, data_bits=7)
        return Model372(VisaTransport(cfg.resource, serial_settings=settings), timeout=cfg.timeout,
                        expected_serial=expected)
    if cfg.transport == "serial":
        return Model240.serial(cfg.serial_device(), timeout=cfg.timeout, expected_serial=expected)
    return Model240(VisaTransport(cfg.resource, serial_settings=dict(baud_rate=115200)), timeout=cfg.timeout,
                    expected_serial=expected)


@dataclass
class ChannelPlan:
    """What to read on one input and under which series names."""

    number: str
    name: str
    kelvin: SeriesKey | None
    sensor: SeriesKey | None


class Poller(threading.Thread):
    def __init__(self, cfg: InstrumentConfig, polling: PollingConfig, queue: SampleQueue, store,
                 stop: threading.Event, watchdog=None) -> None:
        super().__init__(name=f"poll-{cfg.name}", daemon=True)
        self.cfg, self.polling, self.queue, self.store, self.stop_event = cfg, polling, queue, store, stop
        self.watchdog = watchdog
        self.health = InstrumentHealth(cfg.name, cfg.model, cfg.transport)
        self.instrument = make_instrument(cfg)
        self.plans: dict[str, ChannelPlan] = {}
        self.pauses: dict[str, int] = {}
        self.rotation: list[list] = []  # 372: [channel, pause, dwell] of each enabled input, in scan order
        self.heater_key: SeriesKey | None = None
        self._active: str | None = None
        self._switched = 0.0
        self._last_snapshot = 0.0
        self._down_since: float | None = None
        self._synced: bool | None = None
        self._sync_checked = 0.0
        self.connected_event = threading.Event()

    # -- life cycle --------------------------------------------------------------
    def run(self) -> None:
        backoff = self.polling.backoff_initial
        while not self.stop_event.is_set():
            try:
                self._connect()
                backoff = self.polling.backoff_initial
                self._poll_until_error()
            except DriverError as exc:
                self._failed(exc)
            except Exception as exc:  # a bug must not end polling forever: log it, count it, retry
                log.exception("%s: unexpected error", self.cfg.name)
                self._failed(exc)
            self._kick()
            if self.stop_event.is_set():
                break
            delay = backoff * random.uniform(0.8, 1.2)
            self.health.next_retry = time.time() + delay
            self.stop_event.wait(delay)
            backoff = min(backoff * 2, self.polling.backoff_max)
        try:
            self.instrument.close()
        except Exception:
            pass

    def _kick(self) -> None:
        if self.watchdog is not None:
            self.watchdog.kick(self.cfg.name)

    def _failed(self, exc: Exception) -> None:
        kind = getattr(exc, "kind", "internal")
        h = self.health
        h.errors[kind] += 1
        h.last_error = f"{kind}: {exc}"
        h.last_error_t = time.time()
        if h.connected or self._down_since is None:
            self._down_since = time.time()
            log.warning("%s: lost (%s); retrying with backoff", self.cfg.name, h.last_error)
            try:
                self.store.event("disconnected", self.cfg.name, h.last_error)
            except Exception:
                log.exception("could not record event")
        else:
            log.info("%s: still down: %s", self.cfg.name, h.last_error)
        h.connected = False
        self.connected_event.clear()
        # A fresh socket after any failure: a late reply can then never answer a later query.
        if isinstance(exc, (ConnectionLost, InstrumentTimeout)) or isinstance(self.instrument.transport, TcpTransport):
            try:
                self.instrument.close()
            except Exception:
                pass

    def _connect(self) -> None:
        ident = self.instrument.connect()
        h = self.health
        h.identity = f"{ident.model} {ident.serial} fw {ident.firmware}"
        self._plan()
        self._take_snapshot()
        h.connected = True
        h.reconnects += 1
        gap = f" after {time.time() - self._down_since:.1f} s down" if self._down_since else ""
        log.info("%s: connected to %s via %s%s", self.cfg.name, h.identity, self.instrument.transport.description, gap)
        self.store.event("connected", self.cfg.name, f"{h.identity}{gap}")
        self._down_since = None
        self._active = None
        self.connected_event.set()

    # -- plans ---------------------------------------------------------------------
    def _configured(self) -> dict[str, object]:
        return {str(c.number): c for c in self.cfg.channel}

    def _plan(self) -> None:
        inst, node = self.instrument, self.cfg.name
        configured = self._configured()
        plans: dict[str, ChannelPlan] = {}
        if isinstance(inst, Model372):
            candidates = list(MEASUREMENT_CHANNELS)
            if self.cfg.read_control_input:
                candidates = ["A"] + candidates
            setups = {}
            for ch in candidates:
                c = configured.get(ch)
                if c is not None and not c.enabled:
                    continue
                if configured and c is None and ch != "A":
                    continue
                setup = setups[ch] = inst.input_setup(ch)
                self.pauses[ch] = setup.pause
                if c is None and ch != "A" and not setup.enabled:
                    continue
                name = (c.name if c is not None and c.name else None) or inst.input_name(ch) or f"Channel {ch}"
                plans[ch] = self._plan_for(ch, name, "Ohm", c)
            # the autoscan visits every enabled input for its pause + dwell: how long until a
            # scanned channel is read again (the front panel's and the alarms' idea of fresh)
            self.rotation = []
            for ch in MEASUREMENT_CHANNELS:
                setup = setups.get(ch) or inst.input_setup(ch)
                if setup.enabled:
                    self.rotation.append([ch, setup.pause, setup.dwell])
            if self.cfg.read_heater:
                self.heater_key = SeriesKey(node, "sample_heater", "%", "sample_heater", "sample heater output",
                                            ocs="sample_heater")
        else:
            for n in range(1, inst.channel_count + 1):
                ch = str(n)
                c = configured.get(ch)
                if (c is not None and not c.enabled) or (configured and c is None):
                    continue
                itype = inst.input_type(n)
                if c is None and not itype.enabled:
                    continue
                name = (c.name if c is not None and c.name else None) or inst.input_name(n) or f"Channel {n}"
                plans[ch] = self._plan_for(ch, name, SENSOR_UNITS.get(itype.sensor, "V"), c)
        self.plans = plans

    def _plan_for(self, ch: str, name: str, sensor_units: str, c) -> ChannelPlan:
        keep = c.keep if c is not None else ["kelvin", "sensor"]
        stem, node = slug(name), self.cfg.name
        desc = f"{self.cfg.model} input {ch} ({name})"
        ocs_t, ocs_s = ocs_names(self.cfg.model, ch, name)
        return ChannelPlan(
            ch, name,
            SeriesKey(node, f"{stem}_t", "K", stem, desc, ocs=ocs_t) if "kelvin" in keep else None,
            SeriesKey(node, f"{stem}_r", sensor_units, stem, desc, ocs=ocs_s) if "sensor" in keep else None,
        )

    def _take_snapshot(self) -> None:
        channels = [p.number for p in self.plans.values()]
        if isinstance(self.instrument, Model240):
            snap = self.instrument.configuration([int(c) for c in channels])
        else:
            snap = self.instrument.configuration(channels)
        snap["fields"] = {p.number: [k.name for k in (p.kelvin, p.sensor) if k] for p in self.plans.values()}
        if self.store.snapshot(self.cfg.name, snap):
            log.info("%s: configuration snapshot recorded", self.cfg.name)
        self._last_snapshot = time.monotonic()

    # -- polling ---------------------------------------------------------------------
    def _flags(self) -> int:
        now = time.monotonic()
        if now - self._sync_checked > 10:
            self._synced = clock_synchronised()
            self._sync_checked = now
        return FLAG_CLOCK_UNSYNCED if self._synced is False else 0

    def _samples(self, plan: ChannelPlan, r: Reading, flags: int) -> list[Sample]:
        out = []
        if plan.kelvin:
            out.append(Sample(plan.kelvin, r.t, r.kelvin, r.status | flags))
        if plan.sensor:
            out.append(Sample(plan.sensor, r.t, r.sensor, r.status | flags))
        return out

    def _poll_until_error(self) -> None:
        h = self.health
        while not self.stop_event.is_set():
            started = time.monotonic()
            samples: list[Sample] = []
            try:
                self.cycle(samples)
            finally:
                # Readings taken before a failure later in the same cycle are real: keep them.
                if samples:
                    self.queue.put_many(samples)
                    h.samples += len(samples)
                    h.last_good = time.time()
            h.cycles += 1
            h.cycle_seconds = time.monotonic() - started
            if h.cycle_seconds > self.cfg.interval:
                h.overruns += 1
            self._kick()
            if time.monotonic() - self._last_snapshot > SNAPSHOT_EVERY:
                self._take_snapshot()
            self.stop_event.wait(max(0.0, self.cfg.interval - (time.monotonic() - started)))

    def cycle(self, out: list[Sample]) -> None:
        """One poll cycle; samples are appended to ``out`` as each exchange succeeds."""
        flags = self._flags()
        inst = self.instrument
        if isinstance(inst, Model372):
            scan = inst.scan()
            now = time.monotonic()
            if scan.channel != self._active:
                self._active, self._switched = scan.channel, now
                self.health.active_channel = scan.channel
                self.health.scan = {"autoscan": scan.autoscan, "channel": scan.channel, "switched": time.time(),
                                    "rotation": self.rotation}
            elif self.health.scan is not None and self.health.scan["autoscan"] != scan.autoscan:
                self.health.scan = dict(self.health.scan, autoscan=scan.autoscan)
            plan = self.plans.get(scan.channel)
            # Inside the change pause the 372 repeats the channel's old value: skip it (socs PR #28).
            if plan is not None and now - self._switched >= self.pauses.get(scan.channel, 3):
                out.extend(self._samples(plan, inst.read(scan.channel), flags))
            if "A" in self.plans:
                out.extend(self._samples(self.plans["A"], inst.read("A"), flags))
            if self.heater_key is not None:
                v = inst.sample_heater_output()
                out.append(Sample(self.heater_key, time.time(), v, flags))
        else:
            for plan in self.plans.values():
                out.extend(self._samples(plan, inst.read(int(plan.number), plan.sensor.units if plan.sensor else "V"),
                                         flags))
