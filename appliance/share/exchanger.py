"""Clients' lines carried out on the instrument's poller, the one owner of its link.

The poller runs its cycle, then serves control requests and share clients until the next cycle
is due (``Poller._serve_requests``). When a client's line arrives while the poller waits idle
with nothing queued, the client's session thread takes the poller's link itself
(``Poller.try_link``) and runs the turn there (``Exchanger.arrived``): the owner of the link is
whoever holds ``Poller.link``, never two at once, and this saves waking a second thread per line.
Otherwise the exchanger joins the poller's queue with a single *turn*
request whenever a client has a line waiting, and in its turn (either way) takes one *step* of a line
(``job.py``: a run of queries, or one setting) from each client in rotation (in order per client,
fairly between clients) while the time left before the next cycle holds another exchange (its
link time is measured per exchange, not per line, so one long line cannot inflate it). A turn
that finds no time left still serves one step when none was served since the last cycle and
that cycle overran, or when no step was served for two intervals: clients always progress and
a cycle is late by one step at most. A control request waiting ends the turn: the API is not
starved by clients.

Each line goes through the instrument driver's exchange discipline (``Instrument.query_raw``:
one exchange at a time, the instrument's pacing, a timed-out exchange resets the link before the
next one), so a late or lost answer reaches neither another client nor the poller, and each answer
is handed to the session whose line it was.

What the share does itself, never the instrument:

- the status register per client: every forwarded exchange carries ``;*ESR?`` at its end (models
  with one), and ``*ESR?;`` at its start too unless the share's own last exchange was the last on
  the link (the poller, the API, a reconnect or the power-on bit may have set bits since): the bits
  read before are nobody's and are dropped, the bits read after go to that client's own register,
  and a client's ``*ESR?`` / ``*CLS`` is answered from it; a model without one gets a sentinel
  query, so an exchange always has a reply;
- a client's exchange the instrument does not answer within its timeout: silence for that client,
  the link reset (the driver's discipline) and the instrument asked what it always answers; only
  when that fails too is it the instrument's timeout (the poller reconnects);
- a line from before an outage (its epoch is not the link's) or that waited longer than
  ``max_wait`` before it could begin is dropped unanswered: its client has given up, and a late answer would be read as
  the answer to its next question;
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
from .job import LineJob, Step, steps_of
from .lines import Part, parse_line, same_value
from .session import ESR_COMMAND_ERROR, ClientSession

log = logging.getLogger("kelvinpi.share")

ESR_ERRORS = 4 | 16 | 32  # query, execution, command error


def client_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address as the policy compares it: an IPv4-mapped IPv6 one (``::ffff:10.0.0.5``, what a
    dual-stack socket reports for an IPv4 client) is the IPv4 address it carries."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def policy_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An ``allow_clients`` entry as the policy compares it: an IPv4-mapped IPv6 network
    (``::ffff:10.0.0.0/104``) is the IPv4 network it carries, as a client's address is (``client_ip``)."""
    net = ipaddress.ip_network(entry, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    return net


class Policy:
    """Which settings a client may make: none ("read"), listed ones from listed addresses ("allow"), all."""

    def __init__(self, cfg: ShareConfig) -> None:
        self.kind = cfg.policy
        self.commands = set(cfg.allow_commands)
        self.networks = [policy_network(a) for a in cfg.allow_clients]

    def allows(self, mnemonic: str, ip: str) -> bool:
        if self.kind == "full":
            return True
        if self.kind == "read":
            return False
        addr = client_ip(ip)
        if addr is None:
            return False
        return mnemonic in self.commands and any(addr.version == n.version and addr in n for n in self.networks)


class Exchanger:
    """The share's half that uses the link (``poller.share``): on whichever thread holds the poller's
    link, the poller's own or, while the poller is idle, a client's session thread (``arrived``)."""

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
        self._served = 0  # steps served since the last cycle ended
        self._last_step = time.monotonic()  # when a step was last served (the starvation guard)
        self._cycle_start = 0.0
        self._overran = False  # the last cycle ran into the next one's time
        # one exchange's link time (moving average): does one more fit before the cycle? Measured per
        # exchange, so a line of many parts cannot make it so large that no client is served again
        self.exchange_seconds = 0.001
        # the instrument's status register holds only bits the share has read: its last exchange
        # ended with *ESR? and nothing has been on the link since (else the next one reads it first)
        self._esr_clean = False
        self.max_wait = cfg.max_wait
        self._displacing: tuple[float, str, str] | None = None  # (until, who, what) after a scanner move
        self._displaced_now = 0
        self.inline_turns = 0  # turns run on a client's session thread holding the link (``_inline``)
        poller.instrument.observer = self.observe

    # -- sessions ------------------------------------------------------------------------
    def link_epoch(self) -> int | None:
        """The link's epoch (its count of connections), None while it is down: a line is carried out
        only in the epoch it arrived in (any thread)."""
        h = self.poller.health
        return h.reconnects if h.connected else None

    def add(self, session: ClientSession) -> None:
        with self.lock:
            self.sessions.append(session)
            self.health.clients = self._open_count()

    def _open_count(self) -> int:
        """Clients connected now (a left client's line may still run: it is not one); under ``lock``."""
        return sum(1 for s in self.sessions if s.open)

    def remove(self, session: ClientSession) -> None:
        """A client left. A line it had begun still runs to its end, as the instrument carries out a
        whole line it received (issue 26, F3): its session stays in the rotation until then (its
        answer goes nowhere), so every part is carried out and audited, never half a line unrecorded."""
        with self.lock:
            if session in self.sessions and session.job is None:
                self.sessions.remove(session)
            self.health.clients = self._open_count()
        if session.job is not None:
            self.wake()

    def client_list(self) -> list[dict]:
        with self.lock:
            return [s.stats.as_dict(s.pending()) for s in self.sessions if s.open]

    # -- the poller's cycle ------------------------------------------------------------
    def observe(self, message: str, reply: bytes) -> None:
        """Every exchange of the driver (``Instrument.observer``): the cycle's readings are kept."""
        if self._in_turn:
            return  # the share's own: it keeps its register and cache itself
        self._esr_clean = False  # the poller's or the API's exchange may have set status bits
        if not self._recording:
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
        self._esr_clean = False
        self._cycle_start = time.monotonic()

    def cycle_ended(self, samples: list) -> None:
        self._recording = False
        self._served = 0
        # the cycle left no time before the next one: clients still get one step, so they progress
        self._overran = time.monotonic() - self._cycle_start >= self.poller.interval
        self._count_displaced(samples)
        self.health.client_list = self.client_list()
        if any(s.pending() or s.job is not None for s in list(self.sessions)):
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
    def arrived(self) -> None:
        """A client's line waits (its session's thread): carried out right here when the poller is
        idle between cycles with nothing queued (this thread then holds the link as its owner, and a
        second thread's wake-up is saved), else queued as a turn on the poller."""
        if not self._inline():
            self.wake()

    def _inline(self) -> bool:
        """A turn on the calling thread, holding the poller's link (``Poller.try_link``): the same
        rotation, budget, status-register and timeout handling as a queued turn. It ends at the step
        under way when the poller wants the link back or a request is queued (``_serve``), so the next
        cycle waits for one step at most; a link error goes to the poller, which reconnects once."""
        p = self.poller
        if not p.try_link():
            return False
        try:
            self.inline_turns += 1
            self._in_turn = True
            try:
                self._serve(p.instrument)
            except (InstrumentTimeout, ConnectionLost) as exc:
                p.link_failed(exc)  # the poller's own failure path: the link reset, one reconnect
            except Exception:
                log.exception("%s: share clients' turn", self.node)  # as a queued turn's error: polling goes on
            finally:
                self._in_turn = False
        finally:
            p.link.release()
        return True

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
        """A turn refused before it ran (the link went down): the next one may be queued, and what
        waits is from before the outage, so it is dropped now (never answered after it)."""
        if turn.cancelled() or turn.exception() is not None:
            with self.lock:
                self._token = False
            self._drop_stale(self.link_epoch())

    def _drop_stale(self, epoch: int | None) -> None:
        """Drop every line (and a line under way) that arrived in another epoch of the link."""
        for s in list(self.sessions):
            with s.lock:
                stale = [item for item in s.lines if item[2] != epoch]
                for item in stale:
                    s.lines.remove(item)
            job = s.job
            if job is not None and job.epoch != epoch:
                s.job = None
                stale.append(job)
                self._stopped(job, "the link went down")
            if stale:
                s.drop(len(stale))

    def _turn(self, inst: Any) -> None:
        with self.lock:
            self._token = False
        self._in_turn = True
        try:
            self._serve(inst)
        finally:
            self._in_turn = False

    def _may_serve(self, now: float, until: float) -> bool:
        if now + self.exchange_seconds <= until:
            return True
        # no time left before the cycle: one step still, after an overrun or when none went for two intervals
        return self._served == 0 and (self._overran or now - self._last_step >= 2 * self.poller.interval)

    def _serve(self, inst: Any) -> None:
        until = self.poller.serve_until
        epoch = self.link_epoch()
        while not self.poller.stop_event.is_set():
            if self.poller.requests_waiting():
                self.wake()  # behind the control request, in the queue's order
                return
            now = time.monotonic()
            if not self._may_serve(now, until):
                return  # the cycle's end wakes us again
            job = self._next_job(now, epoch)
            if job is None:
                return
            self._step(inst, job)

    def _next_job(self, now: float, epoch: int | None) -> LineJob | None:
        """The next client in rotation with a line under way or waiting, and that line."""
        with self.lock:
            sessions = list(self.sessions)
        n = len(sessions)
        for i in range(n):
            k = (self._next + i) % n
            job = self._job_of(sessions[k], now, epoch)
            if job is not None:
                self._next = (k + 1) % n
                return job
        return None

    def _job_of(self, s: ClientSession, now: float, epoch: int | None) -> LineJob | None:
        """The session's line under way, else its next line that is still worth answering."""
        job = s.job
        if job is not None:
            if job.epoch != epoch:
                s.job = None  # the link went down since: no answer from another connection's instrument
                s.drop()
                self._stopped(job, "the link went down")
            elif now - job.received > self.max_wait:
                # its client has given up (issue 26, F2): an answer now would be read as the answer
                # to its next question. What is applied stays applied (each setting is audited).
                s.job = None
                s.drop()
                self._stopped(job, f"it waited past max_wait ({self.max_wait:g} s)")
            else:
                # begun in time: it runs to its end, as the instrument carries out a whole line,
                # its client gone or not (``remove`` keeps it in the rotation until then)
                return job
        while True:
            # the line is taken and marked under way under the exchanger's lock, which ``remove`` holds
            # too: a client leaving in between cannot take its session out of the rotation with a line
            # taken but not yet under way (that line's later steps would never run, unrecorded)
            with self.lock:
                item = s.next_line()
                if item is None:
                    return None
                line, received, line_epoch = item
                stale = line_epoch != epoch or now - received > self.max_wait
                job = None if stale else LineJob(s, line, received, line_epoch, steps_of(line, self.dialect.has_esr))
                if job is not None and job.steps:
                    s.job = job
            if job is None:
                # asked before an outage, or waited past max_wait: its client has given up, and an
                # answer now would be read as the answer to its next question
                s.drop()
                continue
            if not job.steps:
                s.answer(None, received)
                continue
            return job

    def _step(self, inst: Any, job: LineJob) -> None:
        """One step of a client's line on the link; the answer when it was the line's last."""
        step = job.steps.popleft()
        started = time.monotonic()
        try:
            exchanges = self._run_step(inst, job, step)
        except InstrumentTimeout:
            self._finish(job, silent=True)
            self._client_timeout(inst, job, step)
            return
        except ConnectionLost:
            self._finish(job, silent=True)  # silence, as from the instrument; the poller reconnects
            raise
        except Exception:
            log.exception("%s: share client %s: line %r", self.node, job.session.address, job.line)
            self._finish(job, silent=True)
            return
        took = time.monotonic() - started
        # every step counts, one answered without the link too: past the cycle's due time one step
        # goes, whatever it was, so a flood of local answers cannot hold the cycle back (issue 26, F1)
        self._served += 1
        self._last_step = started + took
        if exchanges:
            self.health.busy_seconds += took
            self.exchange_seconds = 0.8 * self.exchange_seconds + 0.2 * (took / exchanges)
        if not job.steps:
            self._finish(job)

    def _stopped(self, job: LineJob, why: str) -> None:
        """A line begun and then stopped unanswered: on record when it had applied a setting, since
        the instrument holds part of a line its client never saw answered."""
        self._release(job.session)
        if not job.applied:
            return
        detail = (
            f"share client {job.session.address}'s line {job.line!r} stopped after {len(job.applied)} "
            f"setting(s) applied ({'; '.join(job.applied)}) and {len(job.steps)} step(s) not carried out: {why}"
        )
        log.warning("%s: %s", self.node, detail)
        self.store.event("share", self.node, detail)

    def _release(self, s: ClientSession) -> None:
        """A client that left with a line under way stays in the rotation until the line has ended."""
        if not s.open and s.job is None:
            with self.lock:
                if s in self.sessions:
                    self.sessions.remove(s)
                self.health.clients = self._open_count()

    def _finish(self, job: LineJob, silent: bool = False) -> None:
        s = job.session
        if s.job is job:
            s.job = None
        self._release(s)
        self.health.commands += 1
        s.answer(None if silent or not job.answers else ";".join(job.answers), job.received)

    def _client_timeout(self, inst: Any, job: LineJob, step: Step) -> None:
        """A client's exchange the instrument did not answer in time: its client's affair, unless the
        instrument does not answer the share's sentinel query either (then the poller reconnects)."""
        self.health.timeouts += 1
        self._esr_clean = False
        what = ";".join(p.text for p in step.parts)
        # the driver has dropped the link's late input (a new TCP connection, or a quiet serial line)
        # before this exchange: the late answer can reach nobody
        inst.query_raw(self.dialect.sentinel)
        log.warning(
            "%s: share client %s: %r got no answer within %g s; the link was reset and the instrument "
            "answers, so polling goes on",
            self.node,
            job.session.address,
            what,
            inst.timeout,
        )

    # -- one step ------------------------------------------------------------------------
    def _run_step(self, inst: Any, job: LineJob, step: Step) -> int:
        """Carry out one step; the link exchanges it took."""
        s = job.session
        if step.kind == "esr":
            job.answers.append(self.dialect.esr_reply(s.read_esr()))
            return 0
        if step.kind == "cls":
            s.read_esr()
            return 0
        if step.kind == "setting":
            return self._setting(inst, job, step.parts[0])
        keys = [p.key() for p in step.parts]
        cache, readings = self._cache, self.dialect.readings
        if all(p.mnemonic in readings and k in cache for p, k in zip(step.parts, keys, strict=True)):
            job.answers.extend(cache[k] for k in keys)
            s.stats.cached += 1
            self.health.cached += 1
            return 0
        got, esr = self._exchange(inst, ";".join(p.text for p in step.parts))
        s.raise_esr(esr)
        job.answers.extend(got)
        return 1

    def _exchange(self, inst: Any, text: str) -> tuple[list[str], int]:
        """Send ``text`` with the status query (or sentinel) at its end: its answers, and the ESR bits it
        caused. Bits set before it (by the poller, the API, the power-on) are read first and dropped."""
        if not self.dialect.has_esr:
            got = inst.query_raw(f"{text};{self.dialect.sentinel}").decode("ascii", "replace").split(";")
            got.pop()
            return got, 0
        clean = self._esr_clean
        self._esr_clean = False  # until this exchange has been answered
        raw = inst.query_raw(f"{text};*ESR?" if clean else f"*ESR?;{text};*ESR?")
        got = raw.decode("ascii", "replace").split(";")
        last = got.pop()
        if not clean and got:
            got.pop(0)  # the bits from before this exchange: nobody's
        self._esr_clean = True
        try:
            return got, int(last.strip())
        except ValueError:
            return got, 0

    def _read_back(self, inst: Any, query: str | None) -> str | None:
        if query is None:
            return None
        got, esr = self._exchange(inst, query)
        return ";".join(got) if got and not esr & ESR_ERRORS else None

    def _setting(self, inst: Any, job: LineJob, p: Part) -> int:
        d, s = self.dialect, job.session
        query = d.readback_query(p.mnemonic, list(p.args))
        if not self.policy.allows(p.mnemonic, s.ip):
            # a setting that changes nothing is no change: it passes silently (vendor drivers send EMUL 0)
            old = self._read_back(inst, query)
            n = d.readback.get(p.mnemonic, 0)
            if old is not None and same_value(old, p.args[n:]):
                return 1
            s.raise_esr(ESR_COMMAND_ERROR)
            s.stats.refused += 1
            self.health.settings_refused += 1
            log.info(
                "%s: share client %s: setting %r refused (policy %s)", self.node, s.address, p.text, self.policy.kind
            )
            return 1 if query else 0
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
            s.stats.failed += 1
            self.health.settings_failed += 1
            self.audit.end(req, "refused", f"the instrument set ESR={esr}")
            return 3 if query else 1
        s.stats.settings += 1
        self.health.settings += 1
        job.applied.append(p.text)
        self.audit.end(req, "applied", f"was {old}, now {new}" if query else "no read-back declared")
        if p.mnemonic in d.replan and hasattr(self.poller, "replan"):
            self.poller.replan(f"{who}: {p.text} (was {old}, now {new}): the acquisition follows")
            self.store.event(
                "share", self.node, f"{who} changed {p.text} (was {old}, now {new}): acquisition replanned"
            )
            self._esr_clean = False  # the replan's exchanges were the poller's
        if p.mnemonic in d.scanner:
            ch = p.args[0].strip().lstrip("0") if p.args else ""
            pauses = getattr(self.poller.acquisition, "pauses", {})
            pause = pauses.get(ch, max(pauses.values(), default=3))
            self._displacement_ends()
            self._displacing = (time.monotonic() + pause + self.poller.interval, who, p.text)
        return 3 if query else 1
