"""Clients' lines carried out on the instrument's poller, the one owner of its link.

The poller runs its cycle, then serves control requests and share clients until the next cycle
is due (``Poller._serve_requests``). The exchanger joins that queue with a single *turn*
request whenever a client has a line waiting, and in its turn takes one line from each client
in rotation (in order per client, fairly between clients) while the time left before the next
cycle holds another line; a turn that finds no time left serves one line when none was served
since the last cycle, so clients always progress and the cycle is late by one line at most.
A control request waiting ends the turn: the API is not starved by clients.

Each line goes through the instrument driver's exchange discipline (``Instrument.query_raw``:
one exchange at a time, the instrument's pacing, a timed-out exchange resets the link before the
next one), so a late or lost answer reaches neither another client nor the poller, and each answer
is handed to the session whose line it was.

What the share does itself, never the instrument:

- the status register per client: every forwarded line carries ``;*ESR?`` at its end (models with
  one), its bits go to that client's own register, and a client's ``*ESR?`` / ``*CLS`` is answered
  from it; a model without one gets a sentinel query, so a line always has a reply;
- a reading query the poller asked in this cycle (``Dialect.readings``) is answered from the
  poller's own reply while that cycle is the newest; nothing older;
- the policy: a setting the policy refuses is not sent and sets the client's command-error bit,
  as the instrument answers an unknown command (silence and ESR 32); one that reads back already
  as asked changes nothing and passes (Lake Shore's driver sends ``EMUL 0`` on every connect);
- a setting that passes is audited like a control request (``appliance.control.Audit``: who is the
  client's socket address, the old and new value as read back) and forces a snapshot; one that moves
  the scanner or changes the inputs makes the poller plan its acquisition again, an event records
  it, and the scanned readings the change displaced (the new channel's pause) are counted.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any

from drivers.errors import ConnectionLost, InstrumentTimeout

from ..config import ShareConfig
from ..health import ShareHealth
from .dialect import Dialect
from .lines import Part, parse_line, same_value
from .session import ESR_COMMAND_ERROR, ClientSession

log = logging.getLogger("kelvinpi.share")

ESR_ERRORS = 4 | 16 | 32  # query, execution, command error


class Policy:
    """Which settings a client may make: none ("read"), listed ones from listed addresses ("allow"), all."""

    def __init__(self, cfg: ShareConfig) -> None:
        self.kind = cfg.policy
        self.commands = set(cfg.allow_commands)
        self.networks = [ipaddress.ip_network(a, strict=False) for a in cfg.allow_clients]

    def allows(self, mnemonic: str, ip: str) -> bool:
        if self.kind == "full":
            return True
        if self.kind == "read":
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return mnemonic in self.commands and any(addr in n for n in self.networks)


class Exchanger:
    """The share's half that runs on the poller's thread (``poller.share``)."""

    def __init__(self, poller: Any, cfg: ShareConfig, dialect: Dialect, audit: Any, store: Any) -> None:
        self.poller, self.cfg, self.dialect, self.audit, self.store = poller, cfg, dialect, audit, store
        self.node = poller.cfg.name
        self.policy = Policy(cfg)
        self.health = ShareHealth(self.node, policy=cfg.policy)
        self.health.clients_now = self.client_list
        self.sessions: list[ClientSession] = []
        self.lock = threading.Lock()
        self._next = 0  # the rotation's position
        self._token = False  # a turn is queued on the poller
        self._cache: dict[str, str] = {}  # part key -> the poller's answer in the newest cycle
        self._recording = False
        self._in_turn = False  # the exchanges now are the share's own
        self._served = 0  # lines served since the last cycle ended
        self._cycle_start = 0.0
        self._overran = False  # the last cycle ran into the next one's time
        self.line_seconds = 0.002  # a line's link time (moving average): does one more fit before the cycle?
        # a line that waited longer than this (the link was down) is dropped, not answered late
        self.stale_after = max(10.0, 4 * poller.cfg.timeout)
        self._displacing: tuple[float, str, str] | None = None  # (until, who, what) after a scanner move
        self._displaced_now = 0
        poller.instrument.observer = self.observe

    # -- sessions ------------------------------------------------------------------------
    def add(self, session: ClientSession) -> None:
        with self.lock:
            self.sessions.append(session)
            self.health.clients = len(self.sessions)

    def remove(self, session: ClientSession) -> None:
        with self.lock:
            if session in self.sessions:
                self.sessions.remove(session)
            self.health.clients = len(self.sessions)

    def client_list(self) -> list[dict]:
        with self.lock:
            return [s.stats.as_dict(s.pending()) for s in self.sessions]

    # -- the poller's cycle ------------------------------------------------------------
    def observe(self, message: str, reply: bytes) -> None:
        """Every exchange of the driver (``Instrument.observer``): the cycle's readings are kept."""
        if not self._recording:
            if not self._in_turn:
                # a control request between cycles (the API's settings read back after writing): what
                # this cycle read may have changed, so it answers nobody any more
                self._cache.clear()
            return
        parts = parse_line(message)
        answers = reply.decode("ascii", "replace").split(";")
        if len(parts) != len(answers):
            return
        for p, a in zip(parts, answers, strict=True):
            if p.mnemonic in self.dialect.readings:
                self._cache[p.key()] = a

    def cycle_started(self) -> None:
        self._cache.clear()  # "this cycle": the last one's readings are no answer any more
        self._recording = True
        self._cycle_start = time.monotonic()

    def cycle_ended(self, samples: list) -> None:
        self._recording = False
        self._served = 0
        # the cycle left no time before the next one: clients still get one line, so they progress
        self._overran = time.monotonic() - self._cycle_start >= self.poller.interval
        self._count_displaced(samples)
        self.health.client_list = self.client_list()
        if any(s.pending() for s in list(self.sessions)):
            self.wake()

    def _count_displaced(self, samples: list) -> None:
        if self._displacing is None:
            return
        until, who, what = self._displacing
        plans = self.poller.plans
        fixed = {k for ch in ("A",) if ch in plans for k in (plans[ch].kelvin, plans[ch].sensor) if k}
        heater = getattr(self.poller.acquisition, "heater_key", None)
        scanned = [s for s in samples if s.series not in fixed and s.series != heater]
        if not scanned and time.monotonic() < until:
            self._displaced_now += 1
            self.health.displaced += 1
            return
        self._displacement_ends()

    def _displacement_ends(self) -> None:
        """The scanner move's readings are back (or another move begins): the count goes on record."""
        if self._displacing is not None and self._displaced_now:
            _, who, what = self._displacing
            detail = f"{self._displaced_now} scanned reading(s) displaced by {who}'s {what} (the new channel's pause)"
            log.info("%s: %s", self.node, detail)
            self.store.event("share", self.node, detail)
        self._displacing, self._displaced_now = None, 0

    # -- turns -------------------------------------------------------------------------
    def wake(self) -> None:
        """A line waits: queue a turn on the poller unless one is queued (any thread)."""
        with self.lock:
            if self._token:
                return
            self._token = True
        turn = self.poller.nudge(self._turn, "share clients")
        if turn is None:
            with self.lock:
                self._token = False  # the request queue is full: the next cycle's end wakes again
        else:
            turn.add_done_callback(self._turn_ended)

    def _turn_ended(self, turn: Any) -> None:
        """A turn refused before it ran (the link went down): the next one may be queued."""
        if turn.cancelled() or turn.exception() is not None:
            with self.lock:
                self._token = False

    def _pick(self) -> ClientSession | None:
        with self.lock:
            n = len(self.sessions)
            for i in range(n):
                s = self.sessions[(self._next + i) % n]
                if s.pending():
                    self._next = (self._next + i + 1) % n
                    return s
        return None

    def _turn(self, inst: Any) -> None:
        with self.lock:
            self._token = False
        self._in_turn = True
        try:
            self._serve_lines(inst)
        finally:
            self._in_turn = False

    def _serve_lines(self, inst: Any) -> None:
        until = getattr(self.poller, "serve_until", 0.0)
        while not self.poller.stop_event.is_set():
            if self.poller.requests_waiting():
                self.wake()  # behind the control request, in the queue's order
                return
            if time.monotonic() + self.line_seconds > until and (self._served or not self._overran):
                return  # no time left before the cycle: the cycle's end wakes us again
            s = self._pick()
            if s is None:
                return
            item = s.next_line()
            if item is None:
                continue
            line, received = item
            started = time.monotonic()
            if started - received > self.stale_after:
                # waited through an outage: its client gave up long ago, and an answer now would be read
                # as the answer to a later question (a real instrument loses its input when it goes away)
                s.stats.dropped += 1
                self.health.dropped += 1
                continue
            touched = [False]
            try:
                text = self.run_line(inst, s, line, touched)
            except (InstrumentTimeout, ConnectionLost):
                s.answer(None, received)  # silence, as from the instrument; the poller resets the link
                raise
            except Exception:
                log.exception("%s: share client %s: line %r", self.node, s.address, line)
                text = None
            self._served += 1
            took = time.monotonic() - started
            self.health.commands += 1
            self.health.busy_seconds += took
            if touched[0]:
                self.line_seconds = 0.8 * self.line_seconds + 0.2 * took
            s.answer(text, received)

    # -- one line ------------------------------------------------------------------------
    def run_line(self, inst: Any, s: ClientSession, line: str, touched: list) -> str | None:
        """Carry out one client line; its answer as the instrument would give it, or None (silence)."""
        d = self.dialect
        answers: list[str] = []
        batch: list[Part] = []
        for p in parse_line(line):
            if d.has_esr and p.mnemonic == "*ESR?":
                self._flush(inst, s, batch, answers, touched)
                answers.append(d.esr_reply(s.read_esr()))
            elif d.has_esr and p.mnemonic == "*CLS":
                self._flush(inst, s, batch, answers, touched)
                s.read_esr()
            elif not p.is_query:
                self._flush(inst, s, batch, answers, touched)
                touched[0] = True
                self._setting(inst, s, p)
            else:
                batch.append(p)
        self._flush(inst, s, batch, answers, touched)
        return ";".join(answers) if answers else None

    def _exchange(self, inst: Any, text: str) -> tuple[list[str], int]:
        """Send ``text`` with the status query (or sentinel) at its end: its answers, and the ESR bits."""
        tail = "*ESR?" if self.dialect.has_esr else self.dialect.sentinel
        raw = inst.query_raw(f"{text};{tail}")
        got = raw.decode("ascii", "replace").split(";")
        last = got.pop()
        esr = 0
        if self.dialect.has_esr:
            try:
                esr = int(last.strip())
            except ValueError:
                esr = 0
        return got, esr

    def _flush(self, inst: Any, s: ClientSession, batch: list[Part], answers: list[str], touched: list) -> None:
        if not batch:
            return
        keys = [p.key() for p in batch]
        if all(p.mnemonic in self.dialect.readings and k in self._cache for p, k in zip(batch, keys, strict=True)):
            answers.extend(self._cache[k] for k in keys)
            s.stats.cached += 1
            self.health.cached += 1
        else:
            touched[0] = True
            got, esr = self._exchange(inst, ";".join(p.text for p in batch))
            s.raise_esr(esr)
            answers.extend(got)
        batch.clear()

    def _read_back(self, inst: Any, query: str | None) -> str | None:
        if query is None:
            return None
        got, esr = self._exchange(inst, query)
        return ";".join(got) if got and not esr & ESR_ERRORS else None

    def _setting(self, inst: Any, s: ClientSession, p: Part) -> None:
        d = self.dialect
        query = d.readback_query(p.mnemonic, list(p.args))
        if not self.policy.allows(p.mnemonic, s.ip):
            # a setting that changes nothing is no change: it passes silently (vendor drivers send EMUL 0)
            old = self._read_back(inst, query)
            n = d.readback.get(p.mnemonic, 0)
            if old is not None and same_value(old, p.args[n:]):
                return
            s.raise_esr(ESR_COMMAND_ERROR)
            s.stats.refused += 1
            self.health.settings_refused += 1
            log.info(
                "%s: share client %s: setting %r refused (policy %s)", self.node, s.address, p.text, self.policy.kind
            )
            return
        who = f"share client {s.address}"
        what = f"{p.text} (share port {self.health.port})"
        old = self._read_back(inst, query)
        req = self.audit.begin(self.node, who, what, "not read back" if old is None else old)
        try:
            if d.has_esr:
                _, esr = self._exchange(inst, p.text)
                s.raise_esr(esr)
            else:
                inst.write(p.text)
                esr = 0
            new = self._read_back(inst, query)
        except BaseException as exc:
            from ..control import outcome_of

            self.audit.end(req, outcome_of(exc), str(exc))
            raise
        self._cache.clear()  # a reading of before the change is no answer after it
        self.poller.snapshot_due = True
        if esr & ESR_ERRORS:
            self.audit.end(req, "refused", f"the instrument set ESR={esr}")
            return
        s.stats.settings += 1
        self.health.settings += 1
        self.audit.end(req, "applied", f"was {old}, now {new}" if query else "no read-back declared")
        if p.mnemonic in d.replan and hasattr(self.poller, "replan"):
            self.poller.replan(f"{who}: {p.text} (was {old}, now {new}): the acquisition follows")
            self.store.event(
                "share", self.node, f"{who} changed {p.text} (was {old}, now {new}): acquisition replanned"
            )
        if p.mnemonic in d.scanner:
            ch = p.args[0].strip().lstrip("0") if p.args else ""
            pauses = getattr(self.poller.acquisition, "pauses", {})
            pause = pauses.get(ch, max(pauses.values(), default=3))
            self._displacement_ends()
            self._displacing = (time.monotonic() + pause + self.poller.interval, who, p.text)
