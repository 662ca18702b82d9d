"""`make run`: a whole fridge emulated, a notification receiver and the appliance; Ctrl-C stops everything.

The fridge: the thermometry (a 372 bridge and a 240 module), the pulse tube's compressor (a CPA over
Modbus TCP), the MaxiGauge and the Bluefors control software's log folder (flow, valves, pumps),
each an emulator in its own process, all in real time (time scale 1: one clock for the plant).

The whole alarm story with nothing to edit: ``appliance/demo.toml`` (tracked) is copied to
``var/devrun/kelvinpi.toml`` with what a demo needs and a repository must not hold: control on,
its token and the panel's acknowledge PIN in fresh 0600 files under ``var/devrun/``, and a
``[[notify]]`` webhook to a receiver on loopback that prints every notification it gets here.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "appliance" / "demo.toml"
BLUEFORS_DIR = ROOT / "var" / "devrun" / "bluefors"  # demo.toml's log_dir (relative to the repository)


@dataclass(frozen=True)
class DemoFiles:
    """What ``write_demo`` wrote: the config to run and the secrets a person types or taps."""

    config: Path
    token_file: Path
    pin_file: Path
    url_file: Path
    token: str
    pin: str


def _secret(path: Path, text: str) -> None:
    """A 0600 file from the start (never readable by others, not even for a moment)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def write_demo(out: Path, receiver_url: str, demo_text: str | None = None) -> DemoFiles:
    """The demo config plus control, an acknowledge PIN and a webhook to ``receiver_url``, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    token, pin = secrets.token_urlsafe(18), f"{secrets.randbelow(10**6):06d}"
    files = DemoFiles(
        config=out / "kelvinpi.toml",
        token_file=out / "control-token",
        pin_file=out / "ack-pin",
        url_file=out / "webhook-url",
        token=token,
        pin=pin,
    )
    _secret(files.token_file, token)
    _secret(files.pin_file, pin)
    _secret(files.url_file, receiver_url)
    text = DEMO.read_text(encoding="utf-8") if demo_text is None else demo_text
    text += f"""
## Added by tools/devrun.py (make run): control with its token, the panel's acknowledge PIN, and a
## webhook to the receiver it runs on loopback, which prints each notification in the terminal.
[control]
enabled = true
token_file = "{files.token_file}"
ack_pin_file = "{files.pin_file}"

[[notify]]
kind = "webhook"
name = "terminal"
url_file = "{files.url_file}"
backoff_initial = 1.0
backoff_max = 10.0
"""
    files.config.write_text(text, encoding="utf-8")
    return files


class Receiver:
    """A webhook receiver on loopback: every POSTed notification goes to ``show`` (one line) and ``got``."""

    def __init__(self, show: Callable[[str], None] = print) -> None:
        self.got: list[dict] = []
        self.show = show
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except ValueError:
                    body = {"unreadable": True}
                outer.got.append(body)
                outer.show(outer.line(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # quiet: the line above says it
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)

    @staticmethod
    def line(body: dict) -> str:
        what = body.get("field") or body.get("instrument") or ""
        value = body.get("value")
        val = f" = {value:.6g}" if isinstance(value, (int, float)) else ""
        by = f" by {body['by']}" if body.get("by") else ""
        return (
            f"  >>> notification: [{str(body.get('severity', '?')).upper()}] {body.get('alarm')} "
            f"{body.get('event')}{by}: {what}{val} · {body.get('detail') or ''} · {body.get('time') or ''}"
        )

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> int:
    var = ROOT / "var" / "run"
    var.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []
    receiver = Receiver(lambda s: print(s, flush=True)).start()
    demo = write_demo(ROOT / "var" / "devrun", receiver.url)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    def spawn(*args: str) -> subprocess.Popen:
        p = subprocess.Popen([py, "-m", "appliance.cli", *args], cwd=ROOT, env=env)
        procs.append(p)
        return p

    try:
        spawn(
            "emulate",
            "ls372",
            "--listen",
            "127.0.0.1:17777",
            "--serial-number",
            "LSA23JD",
            "--control",
            str(var / "ls372.ctl"),
        )
        spawn(
            "emulate",
            "ls240",
            "--serial-link",
            str(var / "ls240"),
            "--serial-number",
            "LSA24AZ",
            "--control",
            str(var / "ls240.ctl"),
        )
        spawn("emulate", "maxigauge", "--serial-link", str(var / "maxigauge"), "--control", str(var / "maxigauge.ctl"))
        spawn("emulate", "cpa", "--listen", "127.0.0.1:15020", "--control", str(var / "cpa.ctl"))
        # the Bluefors PC's log folder, written live (demo.toml's bluefors-logs instrument reads it)
        spawn(
            "emulate",
            "bluefors-logs",
            "--dir",
            str(BLUEFORS_DIR.relative_to(ROOT)),
            "--zone",
            "Europe/Helsinki",
            "--control",
            str(var / "bluefors.ctl"),
        )
        deadline = time.monotonic() + 15

        def ready() -> bool:  # the ptys, and the log writer's first day folder (its first line: <= 10 s)
            return all(p.exists() for p in (var / "ls240", var / "maxigauge")) and any(BLUEFORS_DIR.glob("??-??-??"))

        while not ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        app = spawn("run", "--config", str(demo.config))
        time.sleep(1.5)
        rel = demo.token_file.relative_to(ROOT)
        print(
            "\n  Kelvinpi front panel: http://127.0.0.1:8080/   (the 7-inch kiosk: http://127.0.0.1:8080/?kiosk)\n"
            f"  config: {demo.config.relative_to(ROOT)} (generated from appliance/demo.toml)\n"
            f"  acknowledge PIN for the panel's PIN pad: {demo.pin}\n"
            f'  control token: {rel} (curl -H "Authorization: Bearer $(cat {rel})" ...)\n'
            f"  notifications are printed here (receiver {receiver.url})\n"
            f"  fault injection: .venv/bin/kelvinpi emulate ctl {var.relative_to(ROOT) / 'ls372.ctl'} status\n"
            f"  trip the compressor: .venv/bin/kelvinpi emulate ctl {var.relative_to(ROOT) / 'cpa.ctl'} trip water\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        app.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
