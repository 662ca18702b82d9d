"""``kelvinpi emulate bluefors-logs --dir DIR``: the emulated Bluefors log writer, running live.

The writer (``bluefors_writer``) writes in simulated time; here a thread keeps it in step with a
``SimClock`` (``--time-scale`` simulated seconds per real second), and a unix control socket takes
its fault words (``stall``, ``rotate``, ``replace``, ``half``, ``set``, ``advance``, plus
``status`` and ``ledger``), the same client as the instrument emulators (``kelvinpi emulate ctl``).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from .bluefors_writer import BlueforsWriter
from .control_socket import ControlSocket
from .sim_clock import SimClock


class LiveWriter:
    """A ``BlueforsWriter`` kept at its clock's time by a thread; faults through ``control``."""

    def __init__(self, root: Path | str, zone: str, time_scale: float = 1.0, seed: int = 0, start: float | None = None):
        start = time.time() if start is None else start
        self.clock = SimClock(time_scale, start)
        self.writer = BlueforsWriter(Path(root), ZoneInfo(zone), start, seed=seed)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._control: ControlSocket | None = None
        self._thread = threading.Thread(target=self._run, name="bluefors-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.step()

    def step(self) -> int:
        """Write every line due up to the clock's time now."""
        with self.lock:
            return self.writer.advance(max(0.0, self.clock.now() - self.writer.now))

    def control(self, line: str) -> str:
        words = line.strip()
        if words == "status":
            w = self.writer
            return json.dumps({"now": w.now, "stalled_until": w.stalled_until, "overrides": w.overrides})
        if words == "ledger":
            with self.lock:
                return json.dumps({"lines": len(self.writer.ledger)})
        if words.startswith("advance"):
            with self.lock:
                reply = self.writer.control(words)
            if reply == "ok":
                self.clock.advance(float(words.split()[1]))
            return reply
        self.step()  # the fault applies at the writer's present
        with self.lock:
            return self.writer.control(words)

    def listen_control(self, path: str) -> str:
        self._control = ControlSocket(path, self.control, name="bluefors-control")
        return path

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._control is not None:
            self._control.close()


def run_live(args: argparse.Namespace) -> int:
    """``kelvinpi emulate bluefors-logs``: write until SIGTERM/SIGINT."""
    import signal
    import sys

    try:
        live = LiveWriter(args.dir, args.zone, args.time_scale, args.seed)
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        print(f"kelvinpi emulate bluefors-logs: bad --zone {args.zone!r}: {exc}", file=sys.stderr)
        return 2
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    live.start()
    where = [f"dir {args.dir}"]
    if args.control:
        where.append(f"control {live.listen_control(args.control)}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"emulated Bluefors log writer ready: {', '.join(where)}", flush=True)
    while not stop.wait(0.5):
        pass
    live.stop()
    return 0
