"""One worker thread per instrument: connect, snapshot, poll forever, reconnect with backoff.

This life cycle is the same for every model; what a 372 and a 240 do differently (which inputs
to read, the 372's scanner, what one cycle asks) is the instrument's ``Acquisition``
(``appliance.acquisition``), picked once from the model.

A stuck or unplugged instrument only ever blocks its own thread, bounded by the
driver's timeout; the others keep polling.

The poller is the one owner of its link: a control request (a setpoint, a curve upload)
is queued with ``Poller.call`` and carried out by the poller's own thread between poll
cycles, so no two threads ever interleave exchanges on one link, and a timeout on a
control request resets the link (through a reconnect) like a timeout in a cycle does.

Owning the link is holding ``Poller.link``: the poller's thread holds it always (connecting, its
cycle, each queued request, the backoff) except while it waits idle for a request between cycles.
Only then may a share client's thread take it (``Poller.try_link``, never blocking) and carry out a
client's line itself with the share's own code, saving the hand-over to the poller's thread; the
poller takes the link back (waiting at most for that one step) when a request arrives or the next
cycle is due, and a link error met there is handed to the poller (``Poller.link_failed``), whose
own failure path resets the link and reconnects, once.
"""

from __future__ import annotations

import contextlib
import logging
import queue as _queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers import DriverError
from drivers.errors import ConnectionLost, InstrumentTimeout
from drivers.transport import TcpTransport

from .acquisition import ChannelPlan
from .clock import clock_synchronised
from .config import InstrumentConfig, PollingConfig
from .health import InstrumentHealth
from .models import acquisition_for
from .naming import SeriesKey, ocs_names, slug, unique_names
from .samples import FLAG_CLOCK_UNSYNCED, Sample, SampleQueue

if TYPE_CHECKING:
    from .config import ChannelConfig
    from .health import SystemdWatchdogPinger
    from .store import Store

log = logging.getLogger("kelvinpi.poller")

SNAPSHOT_EVERY = 600.0


class LinkUnavailable(Exception):
    """A control request could not be carried out: the instrument is not connected, or busy too long."""


@dataclass
class LinkRequest:
    """A job for the link owner: ``fn(instrument)`` run on the poller's thread; its result in ``future``."""

    fn: Callable[[Any], Any]
    what: str
    future: Future
    deadline: float = 0.0  # monotonic time the caller stops waiting
    long: bool = True  # may run long (a curve upload): the watchdog is kicked while it runs


class Poller(threading.Thread):
    KICK_EVERY = 5.0  # seconds between kicks of the watchdog pinger while a long control request runs

    def __init__(
        self,
        cfg: InstrumentConfig,
        polling: PollingConfig,
        queue: SampleQueue,
        store: Store,
        stop: threading.Event,
        watchdog_pinger: SystemdWatchdogPinger | None = None,
    ) -> None:
        super().__init__(name=f"poll-{cfg.name}", daemon=True)
        self.cfg, self.polling, self.queue, self.store, self.stop_event = cfg, polling, queue, store, stop
        self.watchdog_pinger = watchdog_pinger  # health.SystemdWatchdogPinger, or None (no systemd watchdog)
        self.health = InstrumentHealth(cfg.name, cfg.model, cfg.transport)
        self.acquisition = acquisition_for(cfg, self.health)  # what differs between models
        self.instrument = self.acquisition.instrument
        attach = getattr(self.acquisition, "attach_store", None)
        if attach is not None:  # an acquisition that keeps state in the store (a log follower's positions)
            attach(store)
        self.plans: dict[str, ChannelPlan] = {}
        self._last_snapshot = 0.0
        self._down_since: float | None = None
        self._synced: bool | None = None
        self._sync_checked = 0.0
        self.connected_event = threading.Event()
        self._requests: _queue.Queue[LinkRequest] = _queue.Queue(maxsize=16)
        self.snapshot_due = False  # set by a request that changed configuration (a curve upload)
        self.interval = cfg.interval  # effective: shortened below the 372's shortest scanner pause
        self._renames_recorded: set[tuple[str, str]] = set()
        self.share = None  # appliance.share's Exchanger when [instrument.share] is on: its clients' lines run here
        self.serve_until = 0.0  # monotonic time the next cycle is due (what a share turn may use)
        # the link's owner holds this: the poller's thread, except while it waits idle between cycles
        self.link = threading.Lock()
        self._idle = False  # the poller waits for a request with the link released: another may take it
        self._wanted = False  # the poller waits to take the link back: whoever holds it ends its step
        self._fault: BaseException | None = None  # a link error met by another holder: the poller's to handle

    # -- the link owner's job queue ------------------------------------------------
    def call(self, fn: Callable[[Any], Any], what: str, timeout: float = 30.0) -> Any:
        """Run ``fn(instrument)`` on the poller's thread between cycles and return its result.

        Raises ``LinkUnavailable`` when the instrument is not connected or the request did not
        finish within ``timeout`` (it is then cancelled if it has not started); any error of
        ``fn`` (a ``DriverError``, a ``ValueError``) is raised here, in the caller's thread.
        """
        if not self.health.connected or not self.is_alive():
            raise LinkUnavailable(f"{self.cfg.name} is not connected: {self.health.last_error or 'connecting'}")
        req = LinkRequest(fn, what, Future(), time.monotonic() + timeout)
        try:
            self._requests.put_nowait(req)
        except _queue.Full:
            raise LinkUnavailable(f"{self.cfg.name}: too many control requests waiting") from None
        try:
            return req.future.result(timeout)
        except FutureTimeout:
            req.future.cancel()
            raise LinkUnavailable(f"{self.cfg.name}: {what} did not finish within {timeout:g} s") from None

    def nudge(self, fn: Callable[[Any], Any], what: str) -> Future | None:
        """Queue ``fn(instrument)`` on the poller without waiting for it (a share's turn); None when full.

        The future ends when ``fn`` has run, or with ``LinkUnavailable`` when the link went down first."""
        req = LinkRequest(fn, what, Future(), time.monotonic() + 30.0, long=False)
        try:
            # a share's turn ends before the next cycle is due: no watchdog kicker thread for it
            self._requests.put_nowait(req)
        except _queue.Full:
            return None
        return req.future

    def requests_waiting(self) -> bool:
        """A request is queued, or the poller waits for the link: its holder ends its turn now."""
        return self._wanted or not self._requests.empty()

    # -- the link taken by another thread while the poller is idle ---------------------------
    def try_link(self) -> bool:
        """Take the link (never waiting) when the poller is idle between cycles with nothing queued
        and no link error pending; the caller then holds ``self.link`` and must release it."""
        if not self.link.acquire(blocking=False):
            return False
        if self._idle and not self._wanted and self._fault is None and self._requests.empty():
            return True
        self.link.release()
        return False

    def link_failed(self, exc: BaseException) -> None:
        """A link error (timeout, connection lost) met by a thread holding the link in the poller's
        place: the poller raises it as its own once it takes the link back, so its ordinary failure
        path resets the link and reconnects, exactly once. Called with the link held."""
        if self._fault is None:
            self._fault = exc
        # wake the idle poller now rather than at its next poll of the queue; a full queue wakes it anyway
        with contextlib.suppress(_queue.Full):
            self._requests.put_nowait(LinkRequest(lambda _inst: None, "link error", Future(), long=False))

    def _next_request(self, until: float) -> LinkRequest | None:
        """The next queued request; waiting for it until the monotonic time ``until`` (or the stop) with
        the link released (idle: a share client's thread may use it meanwhile), and held again on return."""
        if until <= time.monotonic():
            try:
                return self._requests.get_nowait()
            except _queue.Empty:
                return None
        req: LinkRequest | None = None
        self._idle = True
        self.link.release()
        try:
            while not self.stop_event.is_set():
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    req = self._requests.get(timeout=min(remaining, 0.2))  # the stop is seen within 0.2 s
                    break
                except _queue.Empty:
                    continue
        finally:
            self._idle = False
            self._wanted = True  # the holder (if any) ends its turn after the step under way
            self.link.acquire()
            self._wanted = False
        fault, self._fault = self._fault, None
        if fault is not None:
            # the link is broken: the request just taken is refused like those still queued will be
            if req is not None and req.future.set_running_or_notify_cancel():
                req.future.set_exception(LinkUnavailable(f"{self.cfg.name}: link lost: {fault}"))
            raise fault
        return req

    def _serve_requests(self, until: float) -> None:
        """Until the monotonic time ``until`` (the next cycle), run queued requests as they come.

        A timeout or lost link in a request is re-raised after its caller has been told, so the
        poller's ordinary failure path closes the link and reconnects before the next exchange.
        """
        self.serve_until = until
        while not self.stop_event.is_set():
            # Past the deadline (an overrunning cycle) still serve one request that is waiting, and
            # only one: a stream of requests (share turns queued as fast as they end) must not hold
            # the next cycle back
            late = until <= time.monotonic()
            req = self._next_request(until)
            if req is None:
                if late:
                    return
                continue
            if not req.future.set_running_or_notify_cancel():
                if late:
                    return
                continue
            done = threading.Event()
            if self.watchdog_pinger is not None and req.long:
                threading.Thread(
                    target=self._kick_while, args=(done, req.deadline), daemon=True, name=f"kick-{self.cfg.name}"
                ).start()
            try:
                result = req.fn(self.instrument)
            except (InstrumentTimeout, ConnectionLost) as exc:
                req.future.set_exception(exc)
                raise
            except Exception as exc:  # the caller gets every error, the poller goes on
                req.future.set_exception(exc)
            else:
                req.future.set_result(result)
            finally:
                done.set()
            if late:
                return

    def _kick_while(self, done: threading.Event, deadline: float) -> None:
        """Feed the watchdog while a long request (a 200-point curve upload takes about 30 s on a
        372) runs, but never past the caller's own deadline: a request stuck longer still starves it."""
        while not done.wait(self.KICK_EVERY) and time.monotonic() < deadline:
            self._kick()

    def _refuse_pending(self, why: str) -> None:
        while True:
            try:
                req = self._requests.get_nowait()
            except _queue.Empty:
                return
            if req.future.set_running_or_notify_cancel():
                req.future.set_exception(LinkUnavailable(f"{self.cfg.name}: {why}"))

    # -- life cycle --------------------------------------------------------------
    def run(self) -> None:
        with self.link:  # released only while idle between cycles (``_next_request``)
            self._run()

    def _run(self) -> None:
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
            self._refuse_pending(f"link lost: {self.health.last_error}")
            if self.stop_event.is_set():
                break
            delay = backoff * random.uniform(0.8, 1.2)
            self.health.next_retry = time.time() + delay
            self.stop_event.wait(delay)
            backoff = min(backoff * 2, self.polling.backoff_max)
        self._refuse_pending("the poller is stopping")
        with contextlib.suppress(Exception):
            self.instrument.close()

    def _kick(self) -> None:
        """This poller made progress (a cycle, a connection attempt): systemd's watchdog may be pinged."""
        if self.watchdog_pinger is not None:
            self.watchdog_pinger.kick(self.cfg.name)

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
        # A fresh socket after any failure: a late reply can then never answer a later query. (After a
        # timeout a serial port stays open: the driver waits for a quiet line before the next exchange.)
        if isinstance(exc, ConnectionLost) or isinstance(self.instrument.transport, TcpTransport):
            with contextlib.suppress(Exception):
                self.instrument.close()

    def _connect(self) -> None:
        ident = self.instrument.connect()
        h = self.health
        h.identity = f"{ident.model} {ident.serial} fw {ident.firmware}"
        self._plan()
        self._take_snapshot()
        # the new connection's count first: a share client's line tagged in between (its epoch, the
        # count while connected) must carry this connection's, never the last one's (issue 26, F5)
        h.reconnects += 1
        h.connected = True
        gap = f" after {time.time() - self._down_since:.1f} s down" if self._down_since else ""
        log.info("%s: connected to %s via %s%s", self.cfg.name, h.identity, self.instrument.transport.description, gap)
        self.store.event("connected", self.cfg.name, f"{h.identity}{gap}")
        self._down_since = None
        self.acquisition.connected()
        self.connected_event.set()

    # -- plans ---------------------------------------------------------------------
    def _plan(self) -> None:
        """Which series each input writes into, after each connect (names may have changed)."""
        node = self.cfg.name
        found = self.acquisition.discover_inputs()
        names, renamed = unique_names({ch: i.name for ch, i in found.items()})
        for ch, old, new in renamed:
            # Two inputs named alike on the instrument ("4K plate", "4k Plate") would write into one
            # series: the later one gets its channel number, and the rename is on record (once).
            if (ch, new) in self._renames_recorded:
                continue
            self._renames_recorded.add((ch, new))
            detail = f"input {ch} is named {old!r} like another input: its fields use {new!r}"
            log.warning("%s: %s", node, detail)
            self.store.event("renamed", node, detail)
        self.interval, why = self.acquisition.poll_interval()
        if why is not None:
            log.warning("%s: %s", node, why)
            self.store.event("interval", node, why)
        self.plans = {ch: self._plan_for(ch, names[ch], i.sensor_units, i.config) for ch, i in found.items()}

    def replan(self, why: str) -> None:
        """Plan again after a setting changed the inputs (enable, pause, units, the scanner).

        Runs holding the poller's link (inside the request or the share's turn that changed them;
        a share's turn may run on a client's thread while the poller is idle): the acquisition
        learns the inputs only here and on connect, and with an old plan a newly enabled input was
        never read and a longer pause let the 372's held value through as fresh readings.
        """
        self._plan()
        self.acquisition.connected()  # the scanner position is seen afresh: its pause counts from now
        self.store.event("replanned", self.cfg.name, why)

    def _plan_for(self, ch: str, name: str, sensor_units: str, c: ChannelConfig | None) -> ChannelPlan:
        own = getattr(self.acquisition, "plan_for", None)  # a model naming its own series (gauges: p1-p6)
        if own is not None:
            return own(ch, name, sensor_units)
        keep = c.keep if c is not None else ["kelvin", "sensor"]
        stem, node = slug(name), self.cfg.name
        desc = f"{self.cfg.model} input {ch} ({name})"
        ocs_t, ocs_s = ocs_names(self.cfg.model, ch, name)
        return ChannelPlan(
            ch,
            name,
            SeriesKey(node, f"{stem}_t", "K", stem, desc, ocs=ocs_t) if "kelvin" in keep else None,
            SeriesKey(node, f"{stem}_r", sensor_units, stem, desc, ocs=ocs_s) if "sensor" in keep else None,
        )

    def _take_snapshot(self) -> None:
        snap = self.acquisition.configuration([p.number for p in self.plans.values()])
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

    def _poll_until_error(self) -> None:
        h = self.health
        while not self.stop_event.is_set():
            started = time.monotonic()
            samples: list[Sample] = []
            if self.share is not None:
                self.share.cycle_started()
            try:
                self.cycle(samples)
            finally:
                if self.share is not None:
                    self.share.cycle_ended(samples)
                # Readings taken before a failure later in the same cycle are real: keep them.
                if samples:
                    self.queue.put_many(samples)
                    h.samples += len(samples)
                    h.last_good = time.time()
            h.cycles += 1
            h.cycle_seconds = time.monotonic() - started
            if h.cycle_seconds > self.interval:
                h.overruns += 1
            self._kick()
            if time.monotonic() - self._last_snapshot > SNAPSHOT_EVERY or self.snapshot_due:
                self.snapshot_due = False
                self._take_snapshot()
            self._serve_requests(until=started + self.interval)

    def cycle(self, out: list[Sample]) -> None:
        """One poll cycle; samples are appended to ``out`` as each exchange succeeds."""
        self.acquisition.cycle(self.plans, self._flags(), out)
