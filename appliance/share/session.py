"""One client of a share: its socket, its waiting lines, its answers, its own status register.

The session's thread reads the socket, frames lines as the instrument does (``lines.Framer``)
and queues them (at most ``max_queued``); the poller's thread carries them out and hands the
answer back with ``answer``, which never blocks: what the socket does not take at once waits in
the session's outbox, which the session's thread sends. A client that does not read its answers
(an outbox past ``OUTBOX_CAP``), stays silent past the idle timeout, or sends a line longer than
``MAX_LINE`` costs the poller nothing: it is cut off or its input dropped, and counted.

Each line is tagged with the link's epoch when it arrives (``link_epoch``: the poller's count of
connections, None while the link is down). A line that arrives while the link is down is dropped
at once, and the exchanger drops a line whose epoch is not the link's any more: a question asked
before an outage is never answered after it, where its client would read the answer as the one
to its next question.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .lines import Framer, printable

log = logging.getLogger("kelvinpi.share")

SNDBUF = 32 * 1024
OUTBOX_CAP = 64 * 1024  # bytes of answers a client may leave unread before it is cut off
ESR_COMMAND_ERROR = 32  # IEEE 488.2 (the 372's *ESR? bit 5): an unknown or refused command
RATE_WINDOW = 10.0  # seconds over which a client's command rate is measured


@dataclass
class ClientStats:
    """What the health and the panel show of one client."""

    address: str
    since: float = field(default_factory=time.time)
    commands: int = 0  # lines carried out
    cached: int = 0  # answered from the poller's reading of this cycle, without the link
    settings: int = 0  # settings carried out (audited)
    refused: int = 0  # settings refused by the policy
    failed: int = 0  # settings the policy let through and the instrument refused (its ESR error bits)
    dropped: int = 0  # lines dropped unanswered: max_queued waiting, from before an outage, past max_wait
    garbage: int = 0  # lines that were not printable ASCII, or too long
    wait_ms: float = 0.0  # from a line's arrival to its answer: the last one
    wait_ms_max: float = 0.0
    times: deque = field(default_factory=lambda: deque(maxlen=1000))

    def rate(self, now: float | None = None) -> float:
        """Lines per second over the last ``RATE_WINDOW`` seconds."""
        now = time.monotonic() if now is None else now
        times = tuple(self.times)  # a copy: the poller's thread appends while the health reads
        return sum(1 for t in times if now - t <= RATE_WINDOW) / RATE_WINDOW

    def as_dict(self, queued: int) -> dict:
        return {
            "address": self.address,
            "since": self.since,
            "commands": self.commands,
            "rate": round(self.rate(), 2),
            "wait_ms": round(self.wait_ms, 2),
            "wait_ms_max": round(self.wait_ms_max, 2),
            "queued": queued,
            "cached": self.cached,
            "settings": self.settings,
            "refused": self.refused,
            "failed": self.failed,
            "dropped": self.dropped,
            "garbage": self.garbage,
        }


class ClientSession:
    """One connected client; ``wake`` tells the exchanger a line is waiting, ``closed`` that it left."""

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple,
        max_queued: int,
        idle_timeout: float,
        wake: Callable[[], None],
        closed: Callable[[ClientSession, str], None],
        health: Any = None,
        *,
        cr_ends: bool = False,
        terminator: bytes = b"\r\n",
        link_epoch: Callable[[], int | None] = lambda: 0,
    ) -> None:
        self.sock, self.peer = sock, peer
        # a fixed send buffer: a client that does not read reaches OUTBOX_CAP soon, not after megabytes
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        self.ip = peer[0]
        self.address = f"{peer[0]}:{peer[1]}"
        self.max_queued, self.idle_timeout = max_queued, idle_timeout
        self._wake, self._closed = wake, closed
        self.stats = ClientStats(self.address)
        self.health = health  # the share's ShareHealth: its dropped and garbage counters include this client's
        self.esr = 0  # this client's own event status register (the share answers its *ESR?)
        self.lines: deque[tuple[str, float, int]] = deque()  # (line, arrival, the link's epoch then)
        self.job: Any = None  # the line the exchanger is carrying out (exchanger.LineJob), step by step
        self.lock = threading.Lock()
        self._outbox = bytearray()
        self._framer = Framer(cr_ends)
        self._terminator = terminator
        self._link_epoch = link_epoch
        self._last_heard = time.monotonic()
        self.open = True
        self.why: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"share-{self.address}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    # -- the poller's side ------------------------------------------------------------
    def next_line(self) -> tuple[str, float, int] | None:
        with self.lock:
            return self.lines.popleft() if self.lines and self.open else None

    def raise_esr(self, bits: int) -> None:
        """Set bits of this client's event status register (from the instrument's, or the share's refusal)."""
        with self.lock:
            self.esr |= bits

    def read_esr(self) -> int:
        """``*ESR?``: the register's value, and the register cleared (IEEE 488.2)."""
        with self.lock:
            value, self.esr = self.esr, 0
        return value

    def pending(self) -> int:
        """Lines waiting, the one being carried out included (0 once the client has left)."""
        return (len(self.lines) + (self.job is not None)) if self.open else 0

    def answer(self, text: str | None, received: float) -> None:
        """The answer to the line received at ``received`` (None: the instrument is silent to it)."""
        now = time.monotonic()
        st = self.stats
        st.commands += 1
        st.times.append(now)
        st.wait_ms = (now - received) * 1000
        st.wait_ms_max = max(st.wait_ms_max, st.wait_ms)
        if text is None:
            return
        data = text.encode("ascii", "replace") + self._terminator
        with self.lock:
            if not self.open:
                return  # the client left mid-answer: the answer goes nowhere
            if not self._outbox:  # the usual case: straight to the socket, no copy
                try:
                    sent = self.sock.send(data, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    return
                data = data[sent:]
                if not data:
                    return
            self._outbox += data
            if len(self._outbox) > OUTBOX_CAP:
                self._outbox.clear()
                self._shut("it does not read its answers")

    # -- the session's own thread -------------------------------------------------------
    def _shut(self, why: str) -> None:
        """Mark closed (any thread); the session's thread closes the socket and reports it."""
        if self.why is None:
            self.why = why
        self.open = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self, why: str = "the share is stopping") -> None:
        with self.lock:
            self._shut(why)

    def _run(self) -> None:
        try:
            while self.open:
                with self.lock:
                    want_write = bool(self._outbox)
                try:
                    r, w, _ = select.select([self.sock], [self.sock] if want_write else [], [], 0.2)
                except (OSError, ValueError):
                    break
                if w:
                    self._flush()
                if r:
                    try:
                        data = self.sock.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        with self.lock:
                            self._shut(self.why or "disconnected")
                        break
                    self._last_heard = time.monotonic()
                    self._feed(data)
                elif time.monotonic() - self._last_heard > self.idle_timeout:
                    with self.lock:
                        self._shut(f"idle for {self.idle_timeout:g} s")
                    break
        finally:
            with self.lock:
                self.open = False
                self.lines.clear()
            with contextlib.suppress(OSError):
                self.sock.close()
            self._closed(self, self.why or "disconnected")

    def _flush(self) -> None:
        with self.lock:
            if not self._outbox:
                return
            try:
                sent = self.sock.send(bytes(self._outbox), socket.MSG_DONTWAIT)
                del self._outbox[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._outbox.clear()

    def _garbage(self) -> None:
        """A line the instrument could not parse: counted, and the command-error bit, as the 372 sets it."""
        with self.lock:
            self.stats.garbage += 1
            self.esr |= ESR_COMMAND_ERROR
        if self.health is not None:
            self.health.garbage += 1

    def drop(self, n: int = 1) -> None:
        """``n`` lines dropped unanswered (too many waiting, the link down, waited too long): counted."""
        self.stats.dropped += n
        if self.health is not None:
            self.health.dropped += n

    def _feed(self, data: bytes) -> None:
        woke = False
        for raw in self._framer.feed(data):
            line = printable(raw) if raw is not None else None
            if line is None:
                self._garbage()
                continue
            epoch = self._link_epoch()
            if epoch is None:  # the link is down: the question is lost, as with the instrument unreachable
                self.drop()
                continue
            with self.lock:
                if len(self.lines) >= self.max_queued:
                    full = True
                else:
                    full = False
                    self.lines.append((line, time.monotonic(), epoch))
            if full:
                self.drop()
                continue
            woke = True
        if woke:
            self._wake()
