"""`make bench-alarms`: how fast a threshold crossing reaches a person, with a store that writes and
with one that cannot, and how many notices a flapping rule sends in an hour.

Latency: ``kelvinpi run`` and both emulators (``kelvinpi emulate``) as processes, a webhook receiver
on loopback in this process. Twelve ``above`` rules on the 372's control input (thresholds 30 mK
to 350 mK, each 1.25x the last) are raised one by one by a staircase of mixing-chamber heater powers
(the emulator's ``heater`` and ``advance`` words settle each step at once); three staircases give 36
raises. For each raise the clock starts when the emulator's ledger counts the first reading of the
input after the step (the first reading past the threshold; the ledger is polled every few ms and
the clock starts at the last poll that had not counted it, so each figure is an upper bound) and
stops when the receiver has answered 2xx to the notice for that rule. The third raise of a rule within the hour
is its "flapping" notice, sent at once like the first two. The same on a store whose 3 MiB tmpfs
another writer has filled (root only; otherwise p99_store_full_s=nan).

Flapping: 80 rules with the defaults (hold 0, hysteresis 0; half with repeat 60) on a noisy
series for a simulated hour, then a quiet hour in which each settles (the service's clocks
injected, a real store): the most notices any one rule sent within any hour (a sliding window over
both hours), every kind counted, the settled-state notices included.

Last line: ``bench-alarms: p50_s=A p99_s=B p99_store_full_s=C flapping_notices_per_hour=F``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_host.emulator import send_control  # noqa: E402

BASE_MXC = 0.0115  # K: the emulated fridge's mixing chamber at base
MXC_COOLING = 1.0e-2  # W/K^2 (firmware_host.physics)
STEPS = 12
THRESHOLDS = [0.03 * 1.25**k for k in range(STEPS)]
STAIRCASES = 3
POLL = 0.5  # the 372's poll interval in the bench config
WAIT = 15.0  # seconds to wait for one notice before counting it missing


class Hook:
    """Webhook receiver: (monotonic time the 2xx was sent, body) for every POST."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[float, dict]] = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.wfile.flush()
                outer.q.put((time.monotonic(), json.loads(body)))

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, alarm: str, events: tuple[str, ...], timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                t, body = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if body.get("alarm") == alarm and body.get("event") in events:
                return t

    def drain(self) -> None:
        while not self.q.empty():
            self.q.get_nowait()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Proc:
    """A child process whose output is read by a thread (so it never blocks on a full pipe)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", KELVINPI_ASSUME_CLOCK_SYNC="1")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line)

    def wait_line(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no line matching {pattern!r}:\n" + "".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, link: str, db: Path, url_file: Path) -> str:
    text = f"""
[[instrument]]
model = "372"
name = "LSA23JD"
transport = "tcp"
host = "127.0.0.1"
port = {port}
timeout = 1.0
interval = {POLL}

[[instrument]]
model = "240"
name = "LSA24AZ"
transport = "serial"
device = "{link}"
timeout = 1.0
interval = 1.0

[polling]
backoff_initial = 0.2
backoff_max = 1.0

[store]
path = "{db}"

[web]
bind = "127.0.0.1"
port = 0

[[notify]]
kind = "webhook"
name = "hook"
url_file = "{url_file}"
backoff_initial = 0.2
backoff_max = 1.0

[[alarm]]
kind = "store_not_writing"
name = "store-stuck"
seconds = 5
"""
    for k, th in enumerate(THRESHOLDS):
        text += (
            f'\n[[alarm]]\nkind = "above"\nname = "mxc-{k}"\nfield = "LSA23JD::mxc_control_t"\n'
            f"threshold = {th:.6f}\nrepeat = 0\n"
        )
    return text


def ledger_count(ctl: str) -> int:
    return int(json.loads(send_control(ctl, "ledger"))["delivered"].get("A/kelvin", 0))


def set_level(ctl: str, kelvin: float) -> None:
    """Hold the mixing chamber at ``kelvin`` (through the heater) and let it settle at once."""
    watts = max(1e-12, MXC_COOLING * (kelvin**2 - BASE_MXC**2))
    for word in (f"heater {watts:.6g}", "advance 900"):
        reply = send_control(ctl, word)
        if reply != "ok":
            raise RuntimeError(f"emulator control {word!r}: {reply}")


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as r:
        return json.loads(r.read())


def staircases(ctl: str, hook: Hook) -> tuple[list[float], int]:
    """Latencies (s) of every raise; and how many notices never came within WAIT."""
    out: list[float] = []
    missing = 0
    for _ in range(STAIRCASES):
        for k, th in enumerate(THRESHOLDS):
            hook.drain()
            before = ledger_count(ctl)
            set_level(ctl, th * 1.1)
            last_unseen = time.monotonic()
            # the reading left the emulator between the last ledger poll that had not counted it and
            # the first that had: timing from the former gives an upper bound of the latency
            first = None
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                polled = time.monotonic()
                if ledger_count(ctl) > before:
                    first = last_unseen
                    break
                last_unseen = polled
                time.sleep(0.002)
            got = hook.wait(f"mxc-{k}", ("raised", "flapping"), WAIT)
            if first is None or got is None:
                missing += 1
                if missing >= 3 and not out:  # nothing arrives at all (an old checkout on a full disk)
                    return out, STAIRCASES * STEPS - len(out)
                continue
            out.append(got - first)
        set_level(ctl, BASE_MXC)  # back to base: every rule clears
        hook.wait(f"mxc-{STEPS - 1}", ("cleared",), WAIT)
        time.sleep(2 * POLL)
    return out, missing


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def run_mode(root: Path, work: Path, port: int, link: str, ctl: str, hook: Hook, full: bool) -> tuple[list[float], int]:
    disk = work / ("disk" if full else "store")
    disk.mkdir()
    if full:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "kelvinpi-bench", str(disk)], check=True)
    url_file = work / f"hook-url-{int(full)}"
    url_file.write_text(hook.url + "\n")
    os.chmod(url_file, 0o600)
    cfg = work / f"kelvinpi-{int(full)}.toml"
    cfg.write_text(config_text(port, link, disk / "kelvinpi.db", url_file))
    app = Proc(["run", "--config", str(cfg)], root)
    filler = disk / "filler"
    try:
        web = int(app.wait_line(r"front panel on http://127\.0\.0\.1:(\d+)/", 30).group(1))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not health(web)["store"]["written"]:
            time.sleep(0.2)
        if full:
            with open(filler, "wb", buffering=0) as f:  # another writer eats the card
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not health(web)["store"]["write_errors"]:
                time.sleep(0.2)
            if not health(web)["store"]["write_errors"]:
                raise RuntimeError("the store did not fail to write on the full tmpfs")
        time.sleep(3)  # every instrument connected, the rules at rest
        lat, missing = staircases(ctl, hook)
        if full:
            assert health(web)["store"]["writing"] is False, "the store wrote again during the full-disk run"
        return lat, missing
    finally:
        app.stop()
        if full:
            filler.unlink(missing_ok=True)
            subprocess.run(["umount", "-l", str(disk)], check=False)


def most_in_any_hour(times: list[float]) -> int:
    """The most of ``times`` within any hour (a window [t, t + 3600) starting at each of them)."""
    ts = sorted(times)
    return max((bisect.bisect_left(ts, t + 3600.0) - i for i, t in enumerate(ts)), default=0)


def flapping_notices_per_hour(work: Path, rules: int = 80) -> int:
    """The most notices one of ``rules`` rules sent within any hour: a noisy hour, then a quiet one."""
    from appliance import config
    from appliance.alarm_service import AlarmService
    from appliance.latest import LatestReadings
    from appliance.naming import SeriesKey
    from appliance.samples import Sample
    from appliance.store import Store

    text = '[[instrument]]\nmodel = "372"\nname = "N"\ntransport = "tcp"\nhost = "h"\n'
    for i in range(rules):
        text += f'\n[[alarm]]\nkind = "above"\nname = "r{i}"\nfield = "N::mxc_t"\nthreshold = {0.05 + (i - 40) * 1e-4:.6f}\n'
        if i % 2:
            text += "repeat = 60\n"
    clock = {"t": 0.0}
    store = Store(work / "flap.db")
    latest = LatestReadings(lambda: clock["t"])
    svc = AlarmService(
        config.parse(text),
        store,
        latest=latest,
        wall=lambda: 1_780_000_000.0 + clock["t"],
        mono=lambda: clock["t"],
    )
    key = SeriesKey("N", "mxc_t", "K", "mxc")
    rng = random.Random(21)
    import logging

    logging.getLogger("kelvinpi.alarms").setLevel(logging.ERROR)
    for second in range(7200):  # noisy for an hour, then settled cold: the settled notices count too
        value = 0.05 * (1 + rng.gauss(0, 0.05)) if second < 3600 else 0.01
        latest.update([Sample(key, 1_780_000_000.0 + clock["t"], value, 0)])
        svc.tick(svc.observe())
        if second % 20 == 0:
            store.write([])
        clock["t"] += 1.0
    store.write([])
    _states, notices = store.alarm_load()
    store.close()
    per_rule: dict[str, list[float]] = {}
    for n in notices:
        per_rule.setdefault(n["alarm"], []).append(n["t"])
    return max((most_in_any_hour(ts) for ts in per_rule.values()), default=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose kelvinpi runs (default: this one)")
    args = ap.parse_args()
    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-alarms-"))
    hook = Hook()
    port = free_port()
    ctl372, ctl240, link = str(work / "ls372.ctl"), str(work / "ls240.ctl"), str(work / "ls240")
    emus = [
        Proc(["emulate", "ls372", "--listen", f"127.0.0.1:{port}", "--control", ctl372, "--seed", "1"], root),
        Proc(["emulate", "ls240", "--serial-link", link, "--control", ctl240, "--seed", "3"], root),
    ]
    try:
        for e in emus:
            e.wait_line(r"ready:", 20)
        t0 = time.monotonic()
        lat, miss = run_mode(root, work, port, link, ctl372, hook, full=False)
        print(
            f"writable store: {len(lat)} raises, {miss} missing, p50 {percentile(lat, 0.5):.3f} s, "
            f"p99 {percentile(lat, 0.99):.3f} s, max {max(lat, default=math.nan):.3f} s ({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
        if os.geteuid() == 0 and shutil.which("mount"):
            t0 = time.monotonic()
            full, fmiss = run_mode(root, work, port, link, ctl372, hook, full=True)
            print(
                f"full store: {len(full)} raises, {fmiss} missing, p50 {percentile(full, 0.5):.3f} s, "
                f"p99 {percentile(full, 0.99):.3f} s ({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
        else:
            print("full store: skipped (mounting a tmpfs needs root)")
            full, fmiss = [], 0
        flap = flapping_notices_per_hour(work)
        from appliance.alarms import NOTICES_PER_HOUR

        print(
            f"flapping: 80 rules on a noisy series for a simulated hour, then a quiet one: at most {flap} "
            f"notices per rule in any hour, all kinds (cap {NOTICES_PER_HOUR})"
        )
    finally:
        for e in emus:
            e.stop()
        hook.stop()
        shutil.rmtree(work, ignore_errors=True)
    p99 = percentile(lat, 0.99) if not miss else math.inf
    p99_full = percentile(full, 0.99) if full and not fmiss else (math.inf if fmiss else math.nan)
    print(
        f"bench-alarms: p50_s={percentile(lat, 0.5):.3f} p99_s={p99:.3f} p99_store_full_s={p99_full:.3f} "
        f"flapping_notices_per_hour={flap}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
