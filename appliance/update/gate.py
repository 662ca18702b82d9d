"""The health gate: on a try boot, commit the new slot only once the appliance has shown it works.

Runs in its own thread inside the service (started with the others in ``Appliance.start``). On a
try boot (the firmware's tryboot flag in the device tree) it waits until, since this start:

* the service has signalled READY to systemd,
* every enabled instrument has delivered a reading,
* the store has committed,
* every enabled uplink has connected,

each latched the moment it is first seen (an uplink that connected and dropped again did connect).
Then ``rauc status mark-good booted`` (the image's backend makes the slot the firmware's default),
the event ``update_committed`` with the seconds it took, and the marker goes. If the deadline
(``[update] commit_deadline_s``) passes first, or mark-good fails: the event ``update_failed``
naming exactly what was missing, the reason kept in the marker for the old slot's
``update_rolled_back``, ``rauc status mark-bad booted``, and a normal reboot, which the firmware
boots from the old slot (``autoboot.txt``'s ``[all]`` section was never changed).

The gate judges only a try still on trial (``_closed``): the tryboot flag stays 1 until the next
reboot, so a service restarted after the commit sees a try still, and RAUC's primary (``primary.py``)
is what says it was committed. A committed try is never marked bad and never committed twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..health import UpdateGateStats
from . import marker
from .devicetree import BootInfo
from .install import InstallFailed, UpdateCommands
from .primary import rauc_primary
from .rollback import settle_committed

log = logging.getLogger("kelvinpi.update")

CHECK_EVERY = 0.5  # seconds between looks at the conditions


@dataclass(frozen=True)
class Conditions:
    """What the gate looks at, as callables over the running service (so it imports none of it)."""

    ready: Callable[[], bool]
    instruments: Callable[[], dict[str, bool]]  # enabled instrument -> delivered a reading in this run
    store_committed: Callable[[], bool]
    uplinks: Callable[[], dict[str, bool]]  # enabled uplink -> connected now


class HealthGate:
    """One try boot's verdict. ``start()`` runs it in a thread; ``stats()`` is its health record."""

    def __init__(
        self,
        commands: UpdateCommands,
        boot: BootInfo | None,
        conditions: Conditions,
        record: Callable[[str, str], None],
        deadline_s: float,
        stop: threading.Event,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self.c, self.boot, self.cond, self.record = commands, boot, conditions, record
        self.deadline_s, self.stop_event, self.check_every = deadline_s, stop, check_every
        self.state = "none" if boot is None else ("waiting" if boot.tryboot else "idle")
        self.met: set[str] = set()
        self.missing: list[str] = []
        self.started = _boottime()  # the try's start: see start() (a restarted service keeps the first)
        self.finished: float | None = None
        self.verdict: str | None = None
        self._thread: threading.Thread | None = None

    # -- the conditions ---------------------------------------------------------------
    def look(self) -> list[str]:
        """Latch what is met now; return what is still missing, in words."""
        if self.cond.ready():
            self.met.add("ready")
        if self.cond.store_committed():
            self.met.add("store")
        for name, ok in self.cond.instruments().items():
            if ok:
                self.met.add(f"instrument {name}")
        for name, ok in self.cond.uplinks().items():
            if ok:
                self.met.add(f"uplink {name}")
        missing = []
        if "ready" not in self.met:
            missing.append("the service has not signalled READY")
        missing += [
            f"instrument {n} has delivered no reading"
            for n in self.cond.instruments()
            if f"instrument {n}" not in self.met
        ]
        if "store" not in self.met:
            missing.append("the store has not committed")
        missing += [f"uplink {n} has not connected" for n in self.cond.uplinks() if f"uplink {n}" not in self.met]
        self.missing = missing
        return missing

    # -- the thread -------------------------------------------------------------------
    def start(self) -> None:
        if self.state != "waiting":
            return
        closed = self._closed()
        if closed is not None:
            self.state, self.verdict = closed
            log.warning("try boot of slot %s: not judged: %s", self.boot.slot if self.boot else "?", self.verdict)
            return
        self.started = self._try_started()
        log.warning(
            "try boot of slot %s: committing once healthy (deadline %.0f s)",
            self.boot.slot if self.boot else "?",
            self.deadline_s,
        )
        self._thread = threading.Thread(target=self._run, name="update-gate", daemon=True)
        self._thread.start()

    def _closed(self) -> tuple[str, str] | None:
        """Why this try is not to be judged (the state and the verdict), or None: judge it.

        The firmware's tryboot flag stays 1 until the next reboot, so a service restarted on a try boot
        that has already committed sees a try still; judging it again would mark a committed slot bad
        (the backend then points ``[all]`` at the other slot) and reboot into the old release. The gate
        is open only while the try is uncommitted: RAUC's primary (``autoboot.txt [all]``) is not the
        booted slot; where RAUC cannot say, while an update marker for this slot is there and not
        committed. A marker for another slot: reconcile has recorded that this try is not the update's."""
        assert self.boot is not None
        slot = self.boot.slot
        try:
            pending = marker.read(self.c.state_dir)
        except (marker.MarkerError, OSError):
            pending = None
        if pending is not None and pending.to_slot != slot:
            return "idle", f"a try of slot {slot}, but the update is for slot {pending.to_slot}: not committed"
        primary = rauc_primary(self.c)
        if pending is not None and (primary == slot or (primary is None and pending.committed)):
            # mark-good went through; the event, or the marker's removal, did not
            settle_committed(self.c.state_dir, pending, self.record, "found on a restart of the try boot")
            return "committed", f"committed earlier on this boot (slot {slot} is the primary)"
        if primary == slot:
            return "idle", f"slot {slot} is the primary already: nothing on trial (a committed try is not judged again)"
        if primary is None and pending is None:
            return "idle", "RAUC cannot say whether this try is committed and no update is pending: not judged"
        return None

    def _try_started(self) -> float:
        """When this try began, on the clock that counts from boot: the first start of the service on this
        boot notes it in the marker, and a start after a crash or the watchdog's restart on the same boot
        carries on from there, so a service that keeps failing still meets the deadline and rolls back."""
        now = _boottime()
        try:
            pending = marker.read(self.c.state_dir)
            if pending is None:
                return now
            this_boot = marker.boot_id()
            if pending.try_boot_id == this_boot and pending.try_started is not None:
                return pending.try_started
            marker.update(self.c.state_dir, try_boot_id=this_boot, try_started=now)
        except (marker.MarkerError, OSError) as exc:  # judged from this start, then
            log.error("the try's start could not be kept: %s", exc)
        return now

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            missing = self.look()
            if not missing:
                self._commit()
                return
            if _boottime() - self.started >= self.deadline_s:
                self._fail(f"not healthy within {self.deadline_s:.0f} s: " + "; ".join(missing))
                return
            if self.stop_event.wait(self.check_every):
                return  # the service is stopping: the next start (or the old slot) decides

    def _commit(self) -> None:
        took = _boottime() - self.started
        slot = self.boot.slot if self.boot else "?"
        self.state = "committing"
        try:
            self.c.run([*self.c.rauc, "status", "mark-good", "booted"], "rauc status mark-good booted")
        except InstallFailed as exc:
            self._fail(f"healthy after {took:.1f} s, but the commit failed: {exc}")
            return
        try:
            pending = marker.read(self.c.state_dir)
        except (marker.MarkerError, OSError):
            pending = None
        what = pending.describe() if pending else f"slot {slot}"
        self.record("update_committed", f"committed {what} after {took:.1f} s ({_uptime()})")
        try:  # noted first: a marker that then cannot be removed never makes a second update_committed
            marker.update(self.c.state_dir, committed=True)
            marker.remove(self.c.state_dir)
        except (marker.MarkerError, OSError) as exc:  # the next start or boot settles it (rollback.py)
            log.error("the update marker could not be settled: %s", exc)
        self.state, self.finished, self.verdict = "committed", took, f"committed after {took:.1f} s"
        log.warning("update committed: slot %s after %.1f s", slot, took)

    def _fail(self, reason: str) -> None:
        self.state, self.finished, self.verdict = "failed", _boottime() - self.started, reason
        log.error("update failed: %s; marking slot bad and rebooting into the old slot", reason)
        try:
            marker.update(self.c.state_dir, failure=reason)
        except (marker.MarkerError, OSError) as exc:  # the old slot then gives the generic reason
            log.error("the reason could not be kept in the marker: %s", exc)
        self.record("update_failed", reason)
        for argv, what in (
            ([*self.c.rauc, "status", "mark-bad", "booted"], "rauc status mark-bad booted"),
            (self.c.reboot, "the reboot"),
        ):
            try:
                self.c.run(argv, what)
            except InstallFailed as exc:  # the reboot still runs: the firmware's default is the old slot
                log.error("%s", exc)

    def stats(self) -> UpdateGateStats:
        waited = self.finished if self.finished is not None else _boottime() - self.started
        # a try judged by this start (committed earlier on this boot: no seconds of this start's)
        on_try = self.state in ("waiting", "committing", "failed") or self.finished is not None
        return UpdateGateStats(
            state=self.state,
            slot=self.boot.slot if self.boot else "",
            tryboot=bool(self.boot and self.boot.tryboot),
            missing=list(self.missing) if self.state in ("waiting", "failed") else [],
            missing_count=len(self.missing) if self.state in ("waiting", "failed") else 0,
            seconds=waited if on_try else None,
            deadline_s=self.deadline_s,
            verdict=self.verdict,
        )


def _boottime() -> float:
    """Seconds since boot, suspend included, never stepped by NTP (the Pi has no clock of its own)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _uptime() -> str:
    try:
        with open("/proc/uptime") as f:
            return f"{float(f.read().split()[0]):.1f} s after boot"
    except (OSError, ValueError):
        return "uptime unknown"
