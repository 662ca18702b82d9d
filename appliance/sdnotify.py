"""systemd's notify protocol: one datagram to $NOTIFY_SOCKET.

About fifteen lines of protocol; the PyPI ``sdnotify`` package is unmaintained
since 2017 and ``systemd-python`` needs libsystemd headers to build, so we speak
it directly (sd_notify(3)).
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``; False when not run by systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds, as sd_watchdog_enabled(3) advises; None if disabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
