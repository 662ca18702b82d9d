"""The emulators' unix control socket: one fault word a line in, one reply line out.

Every emulator (instrument, CPA compressor, Bluefors log writer) takes its fault words the same
way, so ``kelvinpi emulate ctl`` is one client for all; the socket and the word table's dispatch
live here once, and each emulator brings only its own ``control`` and words.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def dispatch(
    controls: Mapping[str, Callable[[T, list[str]], str | None]],
    target: T,
    line: str,
    *,
    logger: logging.Logger = log,
    list_words: bool = False,
) -> str:
    """Run one fault word of ``controls`` on ``target``; returns ``ok`` / ``error: ...`` / a report.

    An action returns None for "ok" (the change is logged) or its reply (a report or a refusal,
    not logged); IndexError/ValueError from its arguments becomes ``error: <word>: ...``, so a bad
    word never reaches the emulator half-applied. Changes are logged to ``logger``; ``list_words`` names the known words when a word
    is unknown.
    """
    words = line.strip().split()
    if not words:
        return "error: empty command"
    cmd, args = words[0].lower(), words[1:]
    action = controls.get(cmd)
    if action is None:
        known = f" (one of {', '.join(sorted(controls))})" if list_words else ""
        return f"error: unknown command {cmd!r}{known}"
    try:
        reply = action(target, args)
    except (IndexError, ValueError) as exc:
        return f"error: {cmd}: {exc}"
    if reply is not None:
        return reply
    logger.info("fault control: %s", line.strip())
    return "ok"


class ControlSocket:
    """A unix stream socket at ``path`` answering each line with ``handle(line)``.

    One client at a time (the control client sends a word and reads its reply); the serving thread
    is a daemon and ends when ``close`` closes the socket.
    """

    def __init__(self, path: str, handle: Callable[[str], str], name: str = "control"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.path = path
        self._handle = handle
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(4)
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                f = conn.makefile("rwb")
                for raw in f:
                    f.write(self._handle(raw.decode("utf-8", "replace")).encode() + b"\n")
                    f.flush()

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
