"""Alarm routes: ``GET /api/v1/alarms`` (every rule's state, active first) and
``POST /api/v1/alarms/<name>/ack`` (acknowledge: repeats stop).

Acknowledging is a change from the network, so it is authenticated one of two ways:

* ``Authorization: Bearer <control token>``, like every change (refused unless control is enabled);
* ``Authorization: PIN <digits>``, the acknowledge PIN from ``control.ack_pin_file``: what the
  kiosk's touch PIN pad sends, so a screen with no keyboard can acknowledge. The PIN can do
  nothing else. Wrong PINs are rate-limited per client address and in all (``AckPin``).

Either way the acknowledgement is audited with the socket's peer (a proxy's header only from
``web.trusted_proxies``), never a name the client wrote.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bottle import Bottle, HTTPError, request, response

from ..config import read_secret
from ..control import ControlRefused
from .common import API
from .control import ControlAccess

if TYPE_CHECKING:
    from ..alarm_service import AlarmService

log = logging.getLogger("kelvinpi.web")
PIN_RE = re.compile(r"^[0-9]{4,12}$")
PEER_WRONG = 5  # wrong PINs from one address before it is locked out
PEER_LOCK = 60.0  # seconds of the first lockout; each further one doubles, up to PEER_LOCK_MAX
PEER_LOCK_MAX = 900.0
ALL_WRONG = 20  # wrong PINs from everyone within ALL_WINDOW seconds before PIN acks stop for everyone
ALL_WINDOW = 600.0
OWN_SCREEN = frozenset({"127.0.0.1", "::1"})  # the Pi's own display: never stopped by others' guesses


class PinLocked(ControlRefused):
    """A PIN refused for a while: ``retry_after`` whole seconds, the same number the message gives."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(429, message.format(s=retry_after))
        self.retry_after = retry_after


@dataclass
class PeerTries:
    """One client address's wrong PINs since its last success, and its lockout (monotonic times)."""

    wrong: int = 0
    lockouts: int = 0
    locked_until: float = 0.0


@dataclass
class AckPin:
    """The acknowledge PIN (None: not configured, or unreadable and ``error`` says why) and its rate limit.

    Guessing is bounded: after ``PEER_WRONG`` wrong PINs an address is refused (429, even with the
    right PIN) for ``PEER_LOCK`` seconds, doubling per lockout; ``ALL_WRONG`` wrong PINs in
    ``ALL_WINDOW`` seconds from anyone stop PIN acknowledgements for that window (the control token
    still works), so many addresses cannot share the guessing, except from the Pi's own screen
    (``OWN_SCREEN``, loopback): anyone on the network could otherwise lock the kiosk out of
    acknowledging with 20 wrong PINs. Loopback keeps its own per-address limit. Monotonic time throughout.
    """

    pin: str | None = None
    error: str | None = None
    peers: dict[str, PeerTries] = field(default_factory=dict)
    recent: list[float] = field(default_factory=list)  # monotonic times of wrong PINs, the last window
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, path: Path | None) -> AckPin:
        """The PIN from its 0600 file; a missing, open or malformed file keeps the reason, not the PIN."""
        if path is None:
            return cls(error="no acknowledge PIN is configured (control.ack_pin_file)")
        try:
            pin = read_secret(path, "control.ack_pin_file")
        except (PermissionError, OSError, UnicodeDecodeError) as exc:
            log.error("acknowledging with a PIN is off: %s", exc)
            return cls(error=str(exc))
        if not PIN_RE.match(pin):
            log.error("acknowledging with a PIN is off: control.ack_pin_file %s must hold 4 to 12 digits", path)
            return cls(error=f"control.ack_pin_file: {path} must hold 4 to 12 digits")
        return cls(pin=pin)

    def check(self, given: str, peer: str) -> None:
        """Accept the right PIN from an address that is not locked out; ``ControlRefused`` otherwise."""
        if self.pin is None:
            raise ControlRefused(403, f"acknowledging with a PIN is off: {self.error}")
        now = time.monotonic()
        with self.lock:
            self.recent = [t for t in self.recent if now - t < ALL_WINDOW]
            tries = self.peers.setdefault(peer, PeerTries())
            if tries.locked_until > now:
                raise PinLocked("too many wrong PINs: try again in {s} s", math.ceil(tries.locked_until - now))
            if len(self.recent) >= ALL_WRONG and peer not in OWN_SCREEN:
                wait = ALL_WINDOW - (now - self.recent[0])
                raise PinLocked("too many wrong PINs on this appliance: try again in {s} s", math.ceil(wait))
            if hmac.compare_digest(given.strip().encode(), self.pin.encode()):
                self.peers.pop(peer, None)
                return
            self.recent.append(now)
            tries.wrong += 1
            if tries.wrong >= PEER_WRONG:
                tries.wrong = 0
                tries.locked_until = now + min(PEER_LOCK_MAX, PEER_LOCK * 2**tries.lockouts)
                tries.lockouts += 1
            if len(self.peers) > 1000:  # bounded: forget the oldest addresses that are not locked out
                for k in [k for k, v in self.peers.items() if v.locked_until <= now][:500]:
                    del self.peers[k]
        raise ControlRefused(401, "wrong PIN")


def install(app: Bottle, *, alarms: AlarmService, access: ControlAccess, pin: AckPin | None = None) -> None:
    ack_pin = pin if pin is not None else AckPin.load(None)

    @app.get(f"{API}/alarms")
    def alarms_route():
        rows = alarms.alarms()
        rows.sort(key=lambda a: (not a["active"], a["acked"], a["name"]))
        return {"alarms": rows, "active": sum(1 for a in rows if a["active"])}

    @app.post(f"{API}/alarms/<name>/ack")
    def ack(name):
        scheme, _, given = (request.get_header("Authorization") or "").partition(" ")
        who = access.who()  # the socket's peer, never a header it wrote
        try:
            if scheme.lower() == "pin":
                ack_pin.check(given, who)
                who += " (PIN)"
            else:
                access.authorize("acknowledging needs instrument control or the acknowledge PIN")
        except ControlRefused as exc:
            if exc.status == 429:  # the one error shape (common.py has no handler for 429)
                response.status = 429
                retry = exc.retry_after if isinstance(exc, PinLocked) else 60
                response.set_header("Retry-After", str(retry))  # the seconds the message gives
                return {"error": {"status": 429, "message": str(exc)}}
            raise HTTPError(exc.status, str(exc)) from None
        try:
            return alarms.ack(name, who)
        except KeyError:
            raise HTTPError(404, f"no alarm named {name!r} (see /api/v1/alarms)") from None
