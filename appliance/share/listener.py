"""The share's TCP listener: accepts clients up to ``max_clients``; the next is refused and logged."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

log = logging.getLogger("kelvinpi.share")


class Listener:
    """Accepts connections on (bind, port), an IPv4 or IPv6 address; ``admit(sock, peer)`` returns False to refuse one."""

    def __init__(self, bind: str, port: int, name: str, admit: Callable[[socket.socket, tuple], bool]) -> None:
        self.name, self.admit = name, admit
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "::" takes IPv4 clients too; they show as ::ffff:a.b.c.d (the policy reads them as a.b.c.d)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind((bind, port))
        self.sock.listen(16)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"share-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.2)
                if not r:
                    continue
                conn, peer = self.sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)  # EMFILE and the like: do not spin
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self.admit(conn, peer):
                refuse(conn)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.thread.join(timeout=2)


def refuse(conn: socket.socket) -> None:
    """Close with a reset, as the 372 refuses a third connection."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError:
        pass
