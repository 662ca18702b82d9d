"""One owner, every reader: the instrument's own protocol served on a TCP port of the Pi.

``[instrument.share]`` opens a port that speaks the instrument's line protocol exactly, so
Lake Shore's ``lakeshore`` package, QCoDeS over pyvisa-py (``TCPIP::<pi>::<port>::SOCKET``),
socs' drivers and OCS agents connect to the Pi as to the instrument, while the appliance keeps
polling and the log never breaks. The pieces:

- ``listener.py``: accepts clients up to ``max_clients`` (the next is refused and logged);
- ``session.py``: one client: framing, its waiting lines (``max_queued``), its answers, its own
  status register, the idle timeout;
- ``exchanger.py``: runs on the instrument's poller (its one owner): clients' lines between the
  poller's cycles, fairly, within the time left; the policy, the audit, the replan;
- ``dialect.py``: what the share must know of each model's protocol (declared once per model);
- ``lines.py``: a line's parts as the instrument parses them.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from ..control import Audit
from .dialect import dialect_for
from .exchanger import Exchanger
from .listener import Listener
from .session import ClientSession

log = logging.getLogger("kelvinpi.share")

__all__ = ["Share", "build_shares"]


class Share:
    """One instrument's endpoint: the listener, its sessions and the exchanger on the poller."""

    def __init__(self, poller: Any, store: Any, audit: Audit | None = None) -> None:
        cfg = poller.cfg.share
        self.poller, self.cfg, self.store = poller, cfg, store
        self.name = poller.cfg.name
        # the port first: a share that cannot listen must leave the poller as it was (no observer on its link)
        self.listener = Listener(cfg.bind, cfg.port, self.name, self._admit)
        self.exchanger = Exchanger(poller, cfg, dialect_for(poller.cfg.model), audit or Audit(store), store)
        self.health = self.exchanger.health
        self.address = self.listener.address
        self.health.port = self.address[1]
        self._refusal_logged = -1e9
        poller.share = self.exchanger
        poller.health.share = self.health

    def start(self) -> None:
        self.listener.start()
        log.info(
            "%s: sharing the instrument's protocol on %s:%d (policy %s, at most %d clients)",
            self.name,
            *self.address,
            self.cfg.policy,
            self.cfg.max_clients,
        )

    def _admit(self, conn: socket.socket, peer: tuple) -> bool:
        ex = self.exchanger
        # a client that left with a line under way is still in the rotation until that line ends
        # (max_wait at most): it holds no place
        if sum(1 for s in list(ex.sessions) if s.open) >= self.cfg.max_clients:
            self.health.refused += 1
            now = time.monotonic()
            if now - self._refusal_logged >= 10.0:  # a storm of connections is one line in 10 s, with its count
                log.warning(
                    "%s: share refused %s:%d: %d clients connected (max_clients); %d refused so far",
                    self.name,
                    *peer[:2],
                    self.cfg.max_clients,
                    self.health.refused,
                )
                self._refusal_logged = now
            return False
        s = ClientSession(
            conn,
            peer,
            self.cfg.max_queued,
            self.cfg.idle_timeout,
            ex.arrived,
            self._closed,
            self.health,
            cr_ends=ex.dialect.cr_ends_line,
            terminator=ex.dialect.terminator,
            link_epoch=ex.link_epoch,
        )
        ex.add(s)
        self.health.accepted += 1
        log.info("%s: share client %s connected", self.name, s.address)
        s.start()
        return True

    def _closed(self, s: ClientSession, why: str) -> None:
        self.exchanger.remove(s)
        st = s.stats
        if why.startswith("idle") or "does not read" in why:
            self.health.cut_off += 1
            log.warning("%s: share client %s cut off: %s", self.name, s.address, why)
        else:
            log.info("%s: share client %s left (%s) after %d line(s)", self.name, s.address, why, st.commands)
        self.health.client_list = self.exchanger.client_list()

    def stop(self) -> None:
        self.listener.stop()
        for s in list(self.exchanger.sessions):
            s.close()
        deadline = time.monotonic() + 2
        for s in list(self.exchanger.sessions):
            s.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.poller.share is self.exchanger:
            self.poller.share = None
        self.poller.instrument.observer = None


def build_shares(
    pollers: list, store: Any, audit: Audit | None = None, errors: dict[str, str] | None = None
) -> list[Share]:
    """A share for every poller whose instrument has ``[instrument.share] enabled = true``.

    A share that cannot listen (its port taken, an address the Pi does not have) is left out, logged,
    put on record and named in ``errors``: the instrument is still polled and logged, since a
    reader's endpoint must never cost the log."""
    shares = []
    for p in pollers:
        if not p.cfg.share.enabled:
            continue
        try:
            shares.append(Share(p, store, audit))
        except OSError as exc:  # EADDRINUSE, EADDRNOTAVAIL, a name that does not resolve (gaierror)
            what = f"share on {p.cfg.share.bind}:{p.cfg.share.port} not started: {exc}"
            log.error("%s: %s (the instrument is polled as usual)", p.cfg.name, what)
            store.event("share_failed", p.cfg.name, what)
            if errors is not None:
                errors[p.cfg.name] = what
    return shares
