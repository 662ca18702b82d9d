"""`make run`: both emulators and the appliance on the demo config; Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    var = ROOT / "var" / "run"
    var.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []

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
        deadline = time.monotonic() + 15
        while not (var / "ls240").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        app = spawn("run", "--config", str(ROOT / "appliance" / "demo.toml"))
        time.sleep(1.5)
        print(
            "\n  Kelvinpi front panel: http://127.0.0.1:8080/\n"
            f"  fault injection: .venv/bin/kelvinpi emulate ctl {var / 'ls372.ctl'} status\n"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
