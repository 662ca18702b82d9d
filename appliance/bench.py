"""`make bench`: speed and size targets as ratios against baselines measured in the same run.

Data: 24 channels at 1 Hz for BENCH_DAYS days (default 30), generated in one-hour batches.
Meanwhile `kelvinpi run` polls both emulators for BENCH_SERVICE_SECONDS (default 540) and
its RSS and CPU are read at the end. The last line is machine-readable:

    bench: ingest_ratio=R bytes_per_sample=B query_ms=Q query_speedup=S rss_mb=M
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .samples import Sample, SeriesKey
from .store import MIGRATIONS, Store

CHANNELS = 24
HOUR = 3600


def io_write_bytes() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def gen_hour(keys, t0: float, hour: int, rng: random.Random) -> list[Sample]:
    out = []
    base = t0 + hour * HOUR
    vals = [0.01 + 0.001 * i for i in range(len(keys))]
    for s in range(HOUR):
        t = base + s
        for i, k in enumerate(keys):
            vals[i] += rng.gauss(0, 1e-6)
            out.append(Sample(k, t, vals[i], 0))
    return out


def bare_ingest(path: Path, batches_rows: list[list[tuple]]) -> float:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript("BEGIN;" + MIGRATIONS[0] + "COMMIT;")
    t = time.perf_counter()
    for rows in batches_rows:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO raw(series, t, value, status) VALUES (?,?,?,?)", rows)
        conn.execute("COMMIT")
    dt = time.perf_counter() - t
    conn.close()
    return dt


def start_service(work: Path) -> tuple[list[subprocess.Popen], subprocess.Popen]:
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    port = free_port()
    link = work / "ls240"
    py = [sys.executable, "-m", "appliance.cli"]
    emus = [subprocess.Popen(py + ["emulate", "ls372", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL),
            subprocess.Popen(py + ["emulate", "ls240", "--serial-link", str(link)], stdout=subprocess.DEVNULL)]
    for _ in range(100):
        if link.exists():
            break
        time.sleep(0.1)
    cfg = work / "bench.toml"
    cfg.write_text(f"""
[[instrument]]
model = "372"
name = "LSA23JD"
transport = "tcp"
host = "127.0.0.1"
port = {port}
interval = 0.5
read_heater = true
[[instrument]]
model = "240"
name = "LSA24AZ"
transport = "serial"
device = "{link}"
[store]
path = "{work / 'service.db'}"
[web]
bind = "127.0.0.1"
port = 0
""")
    svc = subprocess.Popen(py + ["run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return emus, svc


def proc_stats(pid: int) -> tuple[float, float]:
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, cpu


def wamp_bench(work: Path, store: Store, keys, start: float, end: float, stride: float) -> tuple[float, float]:
    """get_data through the router (median ms) and OCS backfill rate after a 24 h outage (samples/s)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".venv-crossbar" / "bin" / "crossbar").exists():
        print("wamp: skipped (no .venv-crossbar; `make test` builds it)")
        return float("nan"), float("nan")
    sys.path.insert(0, str(root))
    from tests.routers import Consumer, Crossbar, Hub, Loop

    from .config import OcsUplink, SisockUplink
    from .ocs import OcsUplinkRunner
    from .sisock import SisockUplinkRunner
    from .wamp import WampRuntime

    class Inst:
        name, model, description = "BENCH", "372", "bench data node"

    secret = work / "secret"
    secret.write_text("bench-secret")
    os.chmod(secret, 0o600)
    router = Crossbar(work / "crossbar", "bench-secret", "bench-consumer")
    router.start()
    loop = Loop()
    runtime = WampRuntime()
    try:
        Hub(loop, router).joined.wait(30)
        node = SisockUplinkRunner(SisockUplink(kind="sisock", url=router.wss_url, secret_file=secret,
                                               ca_file=router.cert), 0, store, [Inst], runtime)
        node.start()
        consumer = Consumer(loop, router)
        for _ in range(300):
            if any(n["name"] == "BENCH" for n in consumer.nodes()):
                break
            time.sleep(0.2)
        fields = [k.field for k in keys]
        times = []
        for _ in range(5):
            t = time.perf_counter()
            consumer.get_data("BENCH", fields, start, end, min_stride=stride)
            times.append(time.perf_counter() - t)
        wamp_ms = statistics.median(times) * 1000
        # backfill: every series' cursor 24 h before the end of the data
        ocs = OcsUplinkRunner(OcsUplink(kind="ocs", url=router.ws_url, batch=2000, rejoin_delay=0), 1, store, [Inst],
                              runtime)
        ids = {f.name: f.id for f in store.fields()}
        ocs.outbox._save({ids[k.name]: int((end - 86400) * 1000) for k in keys})
        n = CHANNELS * 86400
        ocs_start = time.perf_counter()
        ocs.start()
        deadline = time.monotonic() + 300
        last, last_t = -1, time.perf_counter()
        while time.monotonic() < deadline and ocs.health.sent < n - CHANNELS:  # the range's end is exclusive
            time.sleep(0.2)
            if ocs.health.sent != last:
                last, last_t = ocs.health.sent, time.perf_counter()
            elif time.perf_counter() - last_t > 10:
                break  # stalled: report what went through
        return wamp_ms, ocs.health.sent / (max(last_t, time.perf_counter()) - ocs_start)
    finally:
        runtime.stop()
        loop.stop()
        router.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM (a `timeout`, Ctrl-C from make) must still run the finally blocks that stop what we started
    signal.signal(signal.SIGTERM, _interrupt)
    days = float(os.environ.get("BENCH_DAYS", "30"))
    service_seconds = float(os.environ.get("BENCH_SERVICE_SECONDS", "540"))
    compare_hours = int(os.environ.get("BENCH_COMPARE_HOURS", "24"))
    work = Path(tempfile.mkdtemp(prefix="kelvinpi-bench-"))
    started = time.monotonic()
    emus, svc = start_service(work)
    try:
        keys = [SeriesKey("BENCH", f"channel_{i:02d}_t", "K", f"channel_{i:02d}", ocs=f"Channel_{i:02d}_T")
                for i in range(CHANNELS)]
        t0 = time.time() - days * 86400
        hours = int(days * 24)
        rng = random.Random(42)

        # 1. ingest: the same generated hours through our writer and through bare executemany
        store = Store(work / "kelvinpi.db", raw_retention_days=days + 10, max_size_mb=1 << 20)
        compare = [gen_hour(keys, t0, h, rng) for h in range(min(compare_hours, hours))]
        ids = {k.name: i + 1 for i, k in enumerate(keys)}
        bare_rows = [[(ids[s.series.name], int(s.t * 1000 + 0.5), s.value, s.status) for s in b] for b in compare]
        bare_s = bare_ingest(work / "bare.db", bare_rows)
        del bare_rows
        io0 = io_write_bytes()
        t = time.perf_counter()
        for b in compare:
            store.write(b)
        ours_s = time.perf_counter() - t
        n_compare = sum(len(b) for b in compare)
        del compare
        for h in range(min(compare_hours, hours), hours):
            store.write(gen_hour(keys, t0, h, rng))
        n_total = hours * HOUR * CHANNELS
        written = io_write_bytes() - io0
        store._wconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ingest_ratio = (n_compare / ours_s) / (n_compare / bare_s)
        bytes_per_sample = store.file_bytes() / n_total
        print(f"ingest: ours {n_compare / ours_s:,.0f} samples/s, bare executemany {n_compare / bare_s:,.0f}"
              f" samples/s over {n_compare:,} samples -> ratio {ingest_ratio:.2f} (aim >= 0.8)")
        print(f"size: {store.file_bytes() / 1e6:.1f} MB for {n_total:,} samples = {bytes_per_sample:.1f} bytes/sample"
              f" incl. rollups (aim <= 24); written {written / max(1, n_total):.1f} bytes/sample (/proc/self/io)")

        # 2. query: 24 fields, whole range, ~1000 points each; vs the same answer by GROUP BY over raw
        names = [k.name for k in keys]
        start, end = t0, t0 + days * 86400
        stride = (end - start) / 1000
        times = []
        for _ in range(5):
            q = time.perf_counter()
            ours = store.data(names, start, end, min_stride=stride)
            times.append(time.perf_counter() - q)
        query_ms = statistics.median(times) * 1000
        group = int(stride // 3600 + 1) * 3600 if stride > 600 else int(stride // 600 + 1) * 600
        conn = sqlite3.connect(str(work / "kelvinpi.db"))
        q = time.perf_counter()
        base = {}
        for i, name in enumerate(names):
            base[name] = conn.execute(
                "SELECT ((t/1000)/?)*? AS g, avg(value) FROM raw WHERE series=? AND t>=? AND t<? GROUP BY g ORDER BY g",
                (group, group, i + 1, int(start * 1000), int(end * 1000))).fetchall()
        base_ms = (time.perf_counter() - q) * 1000
        points = statistics.mean(len(d.t) for d in ours.values())
        speedup = base_ms / query_ms
        print(f"query: 24 fields x {days:g} days at ~{points:.0f} points each: {query_ms:.1f} ms (aim < 50),"
              f" GROUP BY over raw {base_ms:.0f} ms -> {speedup:.0f}x (aim >= 100x)")

        # 3. over WAMP through a real crossbar router (when `make test` has built its venv)
        wamp_ms, backfill_rate = wamp_bench(work, store, keys, start, end, stride)

        # 4. the running service
        remaining = service_seconds - (time.monotonic() - started)
        if remaining > 0:
            print(f"waiting {remaining:.0f} s more for the service's {service_seconds:.0f} s run...", flush=True)
            time.sleep(remaining)
        rss_mb, cpu_s = proc_stats(svc.pid)
        ran = time.monotonic() - started
        print(f"service: RSS {rss_mb:.1f} MB after {ran:.0f} s (aim <= 80), CPU {cpu_s:.1f} s"
              f" = {cpu_s / ran * 3600:.0f} CPU-s per hour of polling")
        print(f"wamp: get_data of 24 fields over {days:g} days at 1000-point stride through crossbar:"
              f" median {wamp_ms:.0f} ms; OCS backfill after a 24 h outage: {backfill_rate:,.0f} samples/s")
        print(f"bench: ingest_ratio={ingest_ratio:.2f} bytes_per_sample={bytes_per_sample:.1f} query_ms={query_ms:.1f}"
              f" query_speedup={speedup:.0f} rss_mb={rss_mb:.1f}")
    finally:
        for p in [svc] + emus:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [svc] + emus:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
