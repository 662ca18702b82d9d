"""WAMP sessions (autobahn, asyncio) on one event-loop thread of their own.

Every session reconnects forever with capped exponential backoff and jitter, pings the
router from the client side (so a half-open link is noticed), verifies the router's TLS
certificate against the configured CA/cert file, and authenticates with WAMP-CRA when a
secret file is configured. Failures are logged loudly, never in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from autobahn.asyncio.component import Component

if TYPE_CHECKING:
    from ..health import UplinkHealth

log = logging.getLogger("kelvinpi.wamp")

RETRY = dict(
    max_retries=-1, initial_retry_delay=1.0, max_retry_delay=60.0, retry_delay_growth=2.0, retry_delay_jitter=0.2
)


def tls_context(url: str, ca_file: Path | None, verify_hostname: bool = True) -> ssl.SSLContext | None:
    """Verified TLS for wss:// (the router's self-signed cert or its CA); None for ws://."""
    if urlparse(url).scheme != "wss":
        return None
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.check_hostname = verify_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def make_component(
    url: str,
    realm: str,
    *,
    authid: str | None = None,
    secret: str | None = None,
    ca_file: Path | None = None,
    label: str = "",
    health: UplinkHealth | None = None,
) -> Component:
    """``health`` (an UplinkHealth) gets every connect failure, so the front panel says why."""
    parsed = urlparse(url)
    transport: dict = {
        "type": "websocket",
        "url": url,
        "options": {
            "auto_ping_interval": 10,
            "auto_ping_timeout": 5,
            "open_handshake_timeout": 10,
            "close_handshake_timeout": 5,
            "max_message_payload_size": 16 * 1024 * 1024,
        },
        **RETRY,
    }
    ctx = tls_context(url, ca_file)
    transport["endpoint"] = {
        "type": "tcp",
        "host": parsed.hostname,
        "port": parsed.port or (443 if parsed.scheme == "wss" else 80),
        "timeout": 10,
    }
    if ctx is not None:
        transport["endpoint"]["tls"] = ctx
    auth = {"wampcra": {"authid": authid, "secret": secret}} if secret else None
    comp = Component(transports=[transport], realm=realm, authentication=auth)

    @comp.on_connectfailure
    def _failed(_comp, exc):
        reason = str(exc) or type(exc).__name__
        if health is not None:
            health.connected = False
            health.errors["connect"] += 1
            health.last_error = f"cannot connect to {url}: {reason}"
        if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in reason:
            log.error(
                "%s: REFUSING router %s: its TLS certificate does not verify against %s: %s",
                label,
                url,
                ca_file or "the system CAs",
                reason,
            )
        else:
            log.warning("%s: cannot connect to %s: %s (retrying with backoff)", label, url, reason)

    return comp


class WampRuntime:
    """One asyncio loop thread running every WAMP component of the appliance.

    An uplink runner itself: the builder puts it after the WAMP uplinks, so the service stops it
    (and with it every session) last; it has no health of its own, each uplink reports its sessions.
    """

    health: None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="wamp", daemon=True)
        self.components: list[Component] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        if not self.thread.is_alive():
            self.thread.start()

    def add(self, comp: Component) -> None:
        self.components.append(comp)
        self.start()

        def _start():
            fut = comp.start(loop=self.loop)

            def done(f):
                if not f.cancelled() and f.exception():
                    log.error("WAMP component ended: %s", f.exception())

            asyncio.ensure_future(fut, loop=self.loop).add_done_callback(done)

        self.loop.call_soon_threadsafe(_start)

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float = 5.0) -> None:
        async def _stop():
            for c in self.components:
                try:
                    r = c.stop()
                    if asyncio.isfuture(r) or asyncio.iscoroutine(r):
                        await asyncio.wait_for(asyncio.ensure_future(r), timeout)
                except Exception:
                    pass

        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.submit(_stop()).result(timeout + 1)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
