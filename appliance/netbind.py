"""Listening on an address the Pi does not have yet: the web server's and the shares' sockets.

The service starts without waiting for the network (a fridge must be logged and its panel shown
whether or not the lab's cable or DHCP server is there), so a lab that sets ``[web] bind`` or
``[instrument.share] bind`` to the Pi's own LAN address would find that address missing at start:
``bind`` then fails with EADDRNOTAVAIL, and the share was dropped for the whole run. Linux's
``IP_FREEBIND`` lets a socket bind an address before any interface has it; connections arrive as
soon as the address comes (a DHCP lease, a cable plugged in). The wildcard needs none of this.
"""

from __future__ import annotations

import contextlib
import logging
import socket

log = logging.getLogger("kelvinpi.net")

# <linux/in.h>: IP_FREEBIND = 15 (Python names it only on some builds); SOL_IP = IPPROTO_IP = 0.
# It applies to IPv6 sockets too (the kernel's IPv6 bind checks the same flag).
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
WILDCARDS = {"", "0.0.0.0", "::"}


def is_local(host: str) -> bool:
    """True when this machine has ``host`` now (a bind without IP_FREEBIND would succeed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def bind_early(sock: socket.socket, host: str, what: str) -> None:
    """Before ``bind``: allow ``host`` to be an address this machine does not have yet, and say so.

    A name that does not resolve or an address of the wrong form still fails at ``bind``, with the
    error naming it: only an address that could become the Pi's is accepted early."""
    if host in WILDCARDS:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    if not is_local(host):
        log.warning(
            "%s: %s is not an address of this machine yet; listening for when it comes "
            "(a DHCP lease, a cable; check the config's bind if it never does)",
            what,
            host,
        )
