"""`make bench-web`: the web side under a crowd, side by side with the server's own ceiling (not a test).

One run, about two minutes on 2 cores:

* a store holding 30 days (BENCH_WEB_DAYS) of HIST_SERIES series at 1 Hz, written in one-hour
  batches through the store's bulk ingest (``Store.write`` of >= 5000 samples seals straight
  into blocks and rollups), then
* ``kelvinpi run`` on that store, polling a 372 emulator (TCP) and a 240 emulator (pty) at 1 Hz, and
* wrk (Debian's, a C load generator that is not the bottleneck): 50 keep-alive connections for
  20 s (BENCH_WEB_SECONDS) each against a constant-response endpoint (``/api/v1/ping``, or
  ``/api/v1/openapi.json`` on a tree that has no ping: the code before issue 14), then
  ``/api/v1/latest``, ``/metrics`` and a 30-day Grafana query (every HIST series, maxDataPoints
  1000, intervalMs as Grafana sends it for a 1000-pixel panel).

Poll overruns are the pollers' own counter (``/api/v1/health``) over the loaded phases; peak RSS is
the service's VmHWM. ``--root DIR`` runs the service from another checkout (the "before" numbers);
BENCH_WEB_EXTRA adds lines to the service's ``[web]`` section (e.g. ``threads = 4``).
The last line is machine-readable:

    bench-web: latest_rps=R latest_ratio=X latest_p99_ms=P grafana_p99_ms=G overruns=O peak_rss_mb=M

The 50 Grafana clients all send one body: one dashboard on 50 screens, whose answer the server
shares (keyed on the range widened to whole strides, kept up to a stride or 10 s); a line before
the last gives the uncached cost of the same query from one client.

Aims (issue 14): latest_ratio >= 0.8, latest p99 <= 50 ms and <= 2x the constant endpoint's,
grafana p99 <= 250 ms, 0 overruns.
"""

from __future__ import annotations

import argparse
import calendar
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.naming import SeriesKey  # noqa: E402
from appliance.samples import Sample  # noqa: E402
from appliance.store import Store  # noqa: E402

HOUR = 3600
HIST_SERIES = 4
CONNECTIONS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hist_keys() -> list[SeriesKey]:
    keys = []
    for i in range(HIST_SERIES // 2):
        stem = f"channel_{i + 1:02d}"
        keys += [SeriesKey("HIST", f"{stem}_t", "K", stem), SeriesKey("HIST", f"{stem}_r", "Ohm", stem)]
    return keys


def prefill(path: Path, days: float) -> int:
    """``days`` of 1 Hz history for the HIST series, one bulk batch per hour (seconds: tens)."""
    keys = hist_keys()
    rng = np.random.default_rng(7)
    x = np.geomspace(0.01, 1000.0, len(keys))
    hours = int(days * 24)
    end = int(time.time() // HOUR * HOUR)
    store = Store(path, raw_retention_days=days + 10, max_size_mb=1 << 20)
    t0 = time.monotonic()
    for h in range(hours):
        walk = x * np.exp(np.cumsum(rng.normal(0.0, 1e-5, (HOUR, len(keys))), axis=0))
        x = walk[-1]
        base = end - (hours - h) * HOUR
        t = (base + np.arange(HOUR)[:, None] + np.arange(len(keys))[None, :] * 0.01).ravel().tolist()
        values = walk.ravel().tolist()
        store.write([Sample(keys[i % len(keys)], t[i], values[i], 0) for i in range(len(t))])
    store.flush()
    store.close()
    n = hours * HOUR * len(keys)
    print(f"prefill: {n:,} samples ({days:g} days x {len(keys)} series) in {time.monotonic() - t0:.1f} s", flush=True)
    return n


def service_config(work: Path, emu_port: int, link: Path, web_port: int, root: Path) -> Path:
    cfg = work / "bench-web.toml"
    per_client = ""
    if "max_connections_per_client" in (root / "appliance" / "config.py").read_text():  # not before issue 14
        # wrk's 50 clients all come from 127.0.0.1: on a lab network they would be 50 hosts
        per_client = f"max_connections_per_client = {CONNECTIONS + 14}"
    cfg.write_text(f"""
[[instrument]]
model = "372"
name = "LSA23JD"
transport = "tcp"
host = "127.0.0.1"
port = {emu_port}
interval = 1.0
read_heater = true

[[instrument]]
model = "240"
name = "LSA24AZ"
transport = "serial"
device = "{link}"
interval = 1.0

[store]
path = "{work / "kelvinpi.db"}"
raw_retention_days = 60

[web]
bind = "127.0.0.1"
port = {web_port}
{per_client}
{os.environ.get("BENCH_WEB_EXTRA", "")}
""")
    return cfg


def get_json(base: str, path: str) -> object:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def parse_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return math.nan
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def wrk(url: str, seconds: float, script: Path | None = None) -> dict:
    """wrk with CONNECTIONS keep-alive connections on 2 threads; rps, p50, p99 and errors."""
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    res = {"rps": math.nan, "p50": math.nan, "p99": math.nan, "errors": 0, "non2xx": 0}
    for line in out.splitlines():
        s = line.split()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(s[1])
        elif len(s) == 2 and s[0] == "50%":
            res["p50"] = parse_ms(s[1])
        elif len(s) == 2 and s[0] == "99%":
            res["p99"] = parse_ms(s[1])
        elif line.strip().startswith("Socket errors:"):
            res["errors"] = sum(int(n) for n in re.findall(r"\d+", line))
            res["error_kinds"] = line.strip()
        elif line.strip().startswith("Non-2xx"):
            res["non2xx"] = int(s[-1])
    if math.isnan(res["rps"]):
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return res


def grafana_body(days: float) -> dict:
    now = time.time()
    rng = {
        "from": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - days * 86400)),
        "to": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now)),
    }
    body = {
        "range": rng,
        "intervalMs": int(days * 86400 * 1000 / 1000),
        "maxDataPoints": 1000,
        "targets": [{"target": k.name, "refId": chr(65 + i), "type": "timeserie"} for i, k in enumerate(hist_keys())],
    }
    return body


def grafana_script(work: Path, body: dict) -> Path:
    script = work / "grafana.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    return script


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def overruns(base: str) -> int:
    return sum(i["overruns"] for i in get_json(base, "/api/v1/health")["instruments"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose `kelvinpi run` is measured")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench-web: wrk is missing (apt-get install wrk)")
        return 2
    days = float(os.environ.get("BENCH_WEB_DAYS", "30"))
    seconds = float(os.environ.get("BENCH_WEB_SECONDS", "20"))
    root = args.root.resolve()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped bench still stops what it started
    work = Path(tempfile.mkdtemp(prefix="kelvinpi-bench-web-"))
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    try:
        prefill(work / "kelvinpi.db", days)
        emu = [sys.executable, "-m", "appliance.cli", "emulate"]
        emu_port, link = free_port(), work / "ls240"
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, env=env)
        procs.append(
            subprocess.Popen(
                emu + ["ls372", "--listen", f"127.0.0.1:{emu_port}", "--serial-number", "LSA23JD", "--seed", "1"],
                **quiet,
            )
        )
        procs.append(
            subprocess.Popen(
                emu
                + ["ls240", "--serial-link", str(link), "--channels", "8", "--serial-number", "LSA24AZ", "--seed", "2"],
                **quiet,
            )
        )
        deadline = time.monotonic() + 30
        while not link.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the 240 emulator did not come up")
            time.sleep(0.1)
        web_port = free_port()
        cfg = service_config(work, emu_port, link, web_port, root)
        log = open(work / "service.log", "w")
        svc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
        )
        procs.append(svc)
        base = f"http://127.0.0.1:{web_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                h = get_json(base, "/api/v1/health")
                if all(i["connected"] for i in h["instruments"]) and h["store"]["written"] > 20:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline or svc.poll() is not None:
                raise RuntimeError("the service did not come up:\n" + (work / "service.log").read_text()[-3000:])
            time.sleep(0.5)
        try:
            urllib.request.urlopen(base + "/api/v1/ping", timeout=5).read()
            const = "/api/v1/ping"
        except urllib.error.HTTPError:
            const = "/api/v1/openapi.json"  # the tree before issue 14 has no constant endpoint of its own
        body = grafana_body(days)
        req = urllib.request.Request(
            base + "/grafana/query", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:  # raises on a 4xx/5xx: the bench would measure errors
            got = json.loads(r.read())
        print(f"grafana query: {len(got)} series, {sum(len(g['datapoints']) for g in got)} points", flush=True)
        over0 = overruns(base)
        results = {}
        for name, path, script in (
            ("const", const, None),
            ("latest", "/api/v1/latest", None),
            ("metrics", "/metrics", None),
            ("grafana", "/grafana/query", grafana_script(work, body)),
        ):
            r = results[name] = wrk(base + path, seconds, script)
            print(
                f"{name:8s} {path:22s} {r['rps']:8.0f} req/s  p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms"
                f"  {r.get('error_kinds', 'socket errors 0')}  non-2xx {r['non2xx']}",
                flush=True,
            )
        # the same query uncached (each range a different key): what one dashboard refresh costs the Pi
        solo = []
        stride = days * 86400 / 1000
        for i in range(1, 11):
            b = json.loads(json.dumps(body))
            for k in ("from", "to"):
                t = calendar.timegm(time.strptime(b["range"][k][:19], "%Y-%m-%dT%H:%M:%S"))
                b["range"][k] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t - i * 3 * stride))
            req = urllib.request.Request(
                base + "/grafana/query", data=json.dumps(b).encode(), headers={"Content-Type": "application/json"}
            )
            t0 = time.perf_counter()
            urllib.request.urlopen(req, timeout=30).read()
            solo.append((time.perf_counter() - t0) * 1000)
        solo.sort()
        print(
            f"grafana uncached, one client, 10 distinct 30-day ranges: median {solo[5]:.1f} ms, max {solo[-1]:.1f} ms"
            " (the 50-client figure above is one dashboard on 50 screens: answers shared for up to a stride, 10 s)"
        )
        over = overruns(base) - over0
        rss = peak_rss_mb(svc.pid)
        lat, con = results["latest"], results["const"]
        ratio = lat["rps"] / con["rps"]
        print(
            f"latest/const: throughput {ratio:.2f}x, p99 {lat['p99'] / con['p99']:.2f}x; poll overruns {over};"
            f" service peak RSS {rss:.0f} MB (root {root})"
        )
        print(
            f"bench-web: latest_rps={lat['rps']:.0f} latest_ratio={ratio:.2f} latest_p99_ms={lat['p99']:.1f}"
            f" grafana_p99_ms={results['grafana']['p99']:.1f} overruns={over} peak_rss_mb={rss:.0f}"
        )
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
