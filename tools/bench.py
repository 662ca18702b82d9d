"""`make bench`: the store's wear, size, query, ingest and memory as ratios against baselines run beside it.

Everything runs in one go (about 8 minutes on 2 cores at the defaults):

* wear: `kelvinpi run` polls three emulated instruments (a 372 on TCP held on one channel,
  control input plus that channel; a 240-8P and a 240-2P on serial ptys: 24 series at 1 Hz)
  for BENCH_WEAR_SECONDS (default 300). Every second the bench asks the service's own API
  (/api/v1/data) for the readings it stored with times in one whole second (3 s back) and
  hands the very same samples to (a) a small process that appends a text line per sample and
  fsyncs once per commit interval (1 s), and (b) InfluxDB 1.x (Debian's influxd, started here on loopback
  ports; one HTTP line-protocol batch per commit interval, laid out as our InfluxDB uplink writes it).
  Bytes written per sample are each process's /proc/<pid>/io write_bytes (what reaches the
  block layer) over the samples it stored, all three over the same window:
  wear_ratio = ours / append-log, influx_wear_ratio = ours / InfluxDB. The window holds
  neither our hourly sealing nor InfluxDB's TSM snapshots (both come later); the ``seal:``
  line gives what sealing an hour adds per sample. RSS of the service is read at the end.
* meanwhile, in this process, on BENCH_DAYS days (default 30) x 24 series of realistic data
  (a slow random walk at 6 significant digits, readings 1 s apart with ms jitter), in
  one-hour batches:
  - ingest: Store.write against bare executemany into a rowid table (same rows, same batches,
    WAL + synchronous=FULL) in a child process on the other core, the two writing hour h at the
    same time; ingest_ratio = bare time / our time (> 1: we are faster);
  - disk: bytes_per_sample = file size after sealing everything and a checkpoint / samples;
  - query: 24 fields over the whole range at ~1000 points each (Store.data, min_stride =
    range / 1000), median ms; query_speedup against the same answer by GROUP BY over the bare
    table's raw rows;
  - retention: a size cap below the store's size, enforce_retention; the longest write-lock
    hold (Store.longest_step, and as measured around the lock itself).

Knobs: BENCH_DAYS, BENCH_WEAR_SECONDS, BENCH_COMMIT_INTERVAL (the service's store.commit_interval,
and the log's and InfluxDB's batch period with it; default 1), BENCH_DIR (a disk-backed directory for the files; default
var/ in the checkout: write_bytes stays 0 on tmpfs). The last line is machine-readable:

    bench: wear_ratio=W influx_wear_ratio=I bytes_per_sample=B query_ms=Q query_speedup=S ingest_ratio=R rss_mb=M
"""

from __future__ import annotations

import collections
import http.client
import itertools
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from pathlib import Path

import numpy as np

from appliance.naming import SeriesKey
from appliance.samples import Sample
from appliance.store import SEAL_DELAY, Store

ROOT = Path(__file__).resolve().parent.parent
SERIES = 24
HOUR = 3600
NAN = float("nan")


# -- small helpers -----------------------------------------------------------------------------
def write_bytes(pid: int | str = "self") -> int:
    """/proc/<pid>/io write_bytes: bytes this process (all its threads) caused to reach the block layer."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def thread_write_bytes() -> int:
    """The calling thread's own write_bytes (the wear run's feeder shares this process)."""
    return write_bytes("thread-self")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return NAN


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fs_type(path: Path) -> str:
    best, kind = "", "?"
    p = str(path.resolve()).rstrip("/") + "/"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mnt, typ = line.split()[:3]
        mnt = mnt.replace("\\040", " ").rstrip("/") + "/"
        if p.startswith(mnt) and len(mnt) >= len(best):
            best, kind = mnt, typ
    return kind


def work_dir() -> Path:
    """A temp dir on a disk-backed file system: /proc/<pid>/io counts nothing for tmpfs."""
    candidates = [Path(os.environ["BENCH_DIR"])] if os.environ.get("BENCH_DIR") else [ROOT / "var", Path("/var/tmp")]
    for base in candidates:
        base.mkdir(parents=True, exist_ok=True)
        kind = fs_type(base)
        if kind not in ("tmpfs", "ramfs"):
            return Path(tempfile.mkdtemp(prefix="bench-", dir=base))
        print(f"bench: {base} is on {kind} (no block-layer writes to count): trying elsewhere")
    print("bench: no disk-backed directory found: the wear ratios will be nan")
    return Path(tempfile.mkdtemp(prefix="kelvinpi-bench-", dir=candidates[0]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else NAN


class Drain(threading.Thread):
    """Reads a child's output pipe so it never blocks (and nothing it logs is written to disk)."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream, self.tail = stream, collections.deque(maxlen=30)
        self.start()

    def run(self) -> None:
        for line in self.stream:
            self.tail.append(line.decode(errors="replace").rstrip())

    def text(self) -> str:
        return "\n".join(self.tail)


class TimedLock:
    """Stands in for Store._write_lock (reentrant): the longest outermost hold, and where it was taken."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self.longest, self.where, self._t0, self._who = 0.0, "", 0.0, ""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self._depth += 1
        if self._depth == 1:
            caller = sys._getframe(2) if sys._getframe(1).f_code.co_name == "__enter__" else sys._getframe(1)
            self._t0 = time.monotonic()
            self._who = f"{caller.f_code.co_name}, {Path(caller.f_code.co_filename).name} line {caller.f_lineno}"
            if caller.f_code.co_name.startswith("_w_") and caller.f_back is not None:  # a helper: say who called it
                up = caller.f_back
                self._who += f", from {up.f_code.co_name} line {up.f_lineno}"
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            held = time.monotonic() - self._t0
            if held > self.longest:
                self.longest, self.where = held, self._who
        self._lock.release()

    def __enter__(self) -> TimedLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# -- the wear run ----------------------------------------------------------------------------------
LOG_WRITER = r"""
import os, sys
f = open(sys.argv[1], "ab", buffering=0)
out, batch = sys.stdout.buffer, []
for line in sys.stdin.buffer:
    if line == b"\n":  # end of one commit interval: one append, one fsync, one acknowledgement
        f.write(b"".join(batch))
        os.fsync(f.fileno())
        batch.clear()
        out.write(b"k")
        out.flush()
    else:
        batch.append(line)
"""

INFLUX_CONF = """
reporting-disabled = true
bind-address = "127.0.0.1:{bind_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
"""


def find_influxd() -> str | None:
    path = shutil.which("influxd") or ("/usr/bin/influxd" if os.path.exists("/usr/bin/influxd") else None)
    if path or os.geteuid() != 0:
        return path
    print("influx: influxd not found; installing Debian's influxdb (running as root)...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "install", "-y", "-qq", "influxdb"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "influxdb"],
    ):
        ok = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if ok and cmd[1] == "install":
            break
    return shutil.which("influxd") or ("/usr/bin/influxd" if os.path.exists("/usr/bin/influxd") else None)


class WearRun(threading.Thread):
    """The service, the append-only log and InfluxDB fed the same samples over the same window."""

    def __init__(self, work: Path, seconds: float, commit: float = 1.0) -> None:
        super().__init__(name="wear", daemon=True)
        self.work, self.seconds, self.commit = work / "wear", seconds, commit
        self.work.mkdir()
        self.halt = threading.Event()
        self.procs: list[subprocess.Popen] = []
        self.result: dict = {}
        self.error: str | None = None
        self.notes: list[str] = []

    def run(self) -> None:
        try:
            self._run()
        except BaseException:
            self.error = traceback.format_exc()
        finally:
            self.stop_all()

    def spawn(self, args: list[str], **kw) -> subprocess.Popen:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        p = subprocess.Popen(args, cwd=ROOT, env=env, **kw)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- start-up ----------------------------------------------------------------------------
    def _emulators(self) -> tuple[int, Path, Path]:
        py = [sys.executable, "-m", "appliance.cli", "emulate"]
        port = free_port()
        links = self.work / "ls240a", self.work / "ls240b"
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.spawn(
            py + ["ls372", "--listen", f"127.0.0.1:{port}", "--serial-number", "LSA23JD", "--seed", "1"], **quiet
        )
        self.spawn(
            py
            + ["ls240", "--serial-link", str(links[0]), "--channels", "8", "--serial-number", "LSA24AZ", "--seed", "2"],
            **quiet,
        )
        self.spawn(
            py
            + ["ls240", "--serial-link", str(links[1]), "--channels", "2", "--serial-number", "LSA24B2", "--seed", "3"],
            **quiet,
        )
        deadline = time.monotonic() + 30
        while not all(link.exists() for link in links):
            if time.monotonic() > deadline:
                raise RuntimeError("the 240 emulators did not come up")
            time.sleep(0.1)
        # Hold the 372's scanner on channel 1: its control input and that channel are then read
        # every second (autoscan would read each channel only while it is scanned).
        from drivers.ls372 import Model372

        while True:
            try:
                bridge = Model372.tcp("127.0.0.1", port)
                bridge.connect()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            bridge.set_scan("1", False)
        finally:
            bridge.close()
        return port, *links

    def _service(self, port: int, link_a: Path, link_b: Path) -> subprocess.Popen:
        self.web_port = free_port()
        cfg = self.work / "bench.toml"
        cfg.write_text(f"""
[[instrument]]
model = "372"
name = "LSA23JD"
transport = "tcp"
host = "127.0.0.1"
port = {port}
interval = 1.0
read_heater = false
[[instrument.channel]]
number = 1

[[instrument]]
model = "240"
name = "LSA24AZ"
transport = "serial"
device = "{link_a}"
interval = 1.0

[[instrument]]
model = "240"
name = "LSA24B2"
transport = "serial"
device = "{link_b}"
interval = 1.0

[store]
path = "{self.work / "service.db"}"
commit_interval = {self.commit}

[web]
bind = "127.0.0.1"
port = {self.web_port}
""")
        svc = self.spawn(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.svc_log = Drain(svc.stderr)
        return svc

    def _influx(self) -> tuple[subprocess.Popen | None, http.client.HTTPConnection | None]:
        binary = find_influxd()
        if binary is None:
            self.notes.append(
                "influx: skipped: no influxd (Debian's influxdb; `sudo make bench` or"
                " `sudo apt-get install influxdb` installs it) -> influx_wear_ratio=nan"
            )
            return None, None
        http_port, bind_port = free_port(), free_port()
        conf = self.work / "influxdb.conf"
        conf.write_text(INFLUX_CONF.format(bind_port=bind_port, http_port=http_port, d=self.work / "influx"))
        proc = self.spawn([binary, "-config", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.influx_log = Drain(proc.stderr)
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
                conn.request(
                    "POST",
                    "/query",
                    urllib.parse.urlencode({"q": "CREATE DATABASE bench"}),
                    {"Content-Type": "application/x-www-form-urlencoded"},
                )
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    return proc, conn
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                self.notes.append(f"influx: influxd did not start -> influx_wear_ratio=nan\n{self.influx_log.text()}")
                return None, None
            time.sleep(0.3)

    # -- the window ----------------------------------------------------------------------------
    def _run(self) -> None:
        port, link_a, link_b = self._emulators()
        svc = self._service(port, link_a, link_b)
        influx, iconn = self._influx()
        logger = self.spawn(
            [sys.executable, "-B", "-c", LOG_WRITER, str(self.work / "append.log")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        web = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=10)

        def get(path: str, query: list[tuple[str, object]] = ()) -> dict:
            web.request("GET", f"/api/v1/{path}?{urllib.parse.urlencode(query)}")
            resp = web.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"kelvinpi run: GET /api/v1/{path}: {resp.status} {body[:200]!r}")
            return json.loads(body)

        deadline = time.monotonic() + 60
        while True:  # the front panel's API up: everything the service has committed, by time
            try:
                get("health")
                break
            except (OSError, http.client.HTTPException):
                if svc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"kelvinpi run did not start:\n{self.svc_log.text()}") from None
                web.close()
                time.sleep(0.3)
        fields: dict[str, tuple[str, str]] = {}
        per_second: collections.Counter = collections.Counter()  # samples stored, by the second they were taken
        fed = {"log": 0, "influx": 0}
        lag = 2 + math.ceil(self.commit)  # seconds: a reading is committed within about one commit interval
        cursor = int(time.time()) - lag

        def feed() -> None:
            """Every sample the service stored with a time in the next whole second(s): to the log and InfluxDB."""
            nonlocal cursor
            hi = int(time.time()) - lag
            if hi <= cursor:
                return
            if len(fields) < SERIES:
                for f in get("fields")["fields"]:
                    fields[f["field"]] = (f["node"], f["name"])
            got = get("data", [("field", n) for n in fields] + [("start", cursor), ("end", hi)])["fields"]
            cursor = hi
            lines, points = [], {}
            for name, d in got.items():
                node, field = fields[name]
                for t, v, st in zip(d["t"], d["value"], d["status"], strict=False):
                    t_ms = int(round(t * 1000))
                    per_second[t_ms // 1000] += 1
                    lines.append((t_ms, f"{name} {t_ms} {v!r} {st}\n"))
                    if v is not None:
                        points.setdefault((node, t_ms), []).append(f"{field}={float(v)!r}")
            lines.sort()
            logger.stdin.write("".join(text for _t, text in lines).encode() + b"\n")
            logger.stdin.flush()
            if logger.stdout.read(1) != b"k":
                raise RuntimeError("the append-log writer died")
            fed["log"] += len(lines)
            if iconn is not None and points:
                body = "".join(
                    f"observatory.{node},feed=temperatures {','.join(f)} {t}\n"
                    for (node, t), f in sorted(points.items(), key=lambda kv: (kv[0][1], kv[0][0]))
                )
                iconn.request(
                    "POST", "/write?db=bench&precision=ms", body.encode(), {"Content-Type": "text/plain; charset=utf-8"}
                )
                resp = iconn.getresponse()
                text = resp.read()
                if resp.status != 204:
                    raise RuntimeError(f"influxd refused a write: {resp.status} {text[:200]!r}")
                fed["influx"] += sum(len(f) for f in points.values())

        def mark() -> dict:
            return {
                "t": time.time(),
                "log": fed["log"],
                "influx": fed["influx"],
                "cpu_s": cpu_seconds(svc.pid),
                "svc_io": write_bytes(svc.pid),
                "log_io": write_bytes(logger.pid),
                "influx_io": write_bytes(influx.pid) if influx is not None else 0,
            }

        def tick(until: float) -> None:
            while time.time() < until and not self.halt.is_set():
                time.sleep(min(0.25, max(0.0, until - time.time())))
            feed()
            if svc.poll() is not None:
                raise RuntimeError(f"kelvinpi run exited:\n{self.svc_log.text()}")

        # warm-up: every series stored, then a few seconds more
        warm_until = time.time() + 90
        steady = 0
        while steady < 5 and time.time() < warm_until and not self.halt.is_set():
            tick(math.floor(time.time()) + 1.2)
            steady = steady + 1 if len(fields) >= SERIES else 0
        if len(fields) != SERIES:
            self.notes.append(f"wear: {len(fields)} series after warm-up (expected {SERIES})")
        start = mark()
        while time.time() - start["t"] < self.seconds and not self.halt.is_set():
            tick(math.floor(time.time()) + self.commit + 0.2)  # the log and InfluxDB commit as often as we do
        end = mark()
        rss = rss_mb(svc.pid)
        while cursor <= end["t"] and not self.halt.is_set():  # the samples taken before the end mark
            tick(math.floor(time.time()) + 1.2)
        stored = sum(n for sec, n in per_second.items() if start["t"] <= sec + 0.5 < end["t"])
        self.result = dict(
            start=start, end=end, stored=stored, series=len(fields), influx=influx is not None, rss_mb=rss
        )
        web.close()


def wear_report(w: WearRun) -> tuple[float, float, float]:
    if w.error:
        print(f"wear: failed:\n{w.error}")
        return NAN, NAN, NAN
    for note in w.notes:
        print(note)
    r = w.result
    if not r:
        print("wear: interrupted")
        return NAN, NAN, NAN
    s, e = r["start"], r["end"]
    secs = e["t"] - s["t"]
    n_svc, n_log, n_inf = r["stored"], e["log"] - s["log"], e["influx"] - s["influx"]

    def per(io: str, n: int) -> float:
        return (e[io] - s[io]) / n if n else NAN

    ours, log_bps, inf_bps = per("svc_io", n_svc), per("log_io", n_log), per("influx_io", n_inf)
    if not r["influx"]:
        inf_bps = NAN
    cpu = e["cpu_s"] - s["cpu_s"]
    print(
        f"wear: {r['series']} series, {n_svc:,} samples stored in {secs:.0f} s ({n_svc / secs:.1f}/s), commits every"
        f" {w.commit:g} s: kelvinpi run {ours:,.0f} B/sample ({(e['svc_io'] - s['svc_io']) / secs / 1024:.1f} KiB/s),"
        f" fsynced append-only log {log_bps:,.0f} B/sample ({n_log:,} lines), InfluxDB 1.x {inf_bps:,.0f} B/sample"
        f" ({n_inf:,} points) (/proc/<pid>/io write_bytes over the same window)"
    )
    print(
        f"service: RSS {r['rss_mb']:.1f} MB at the end of the wear run (aim <= 80); CPU {cpu / secs * 100:.1f} %"
        f" of a core while polling ({cpu / secs * 3600:.0f} CPU-s per hour)"
    )
    if ours == 0 and log_bps == 0:
        print("wear: no block-layer writes counted (tmpfs, or no I/O accounting?): ratios are meaningless")
        return NAN, NAN, r["rss_mb"]
    return ratio(ours, log_bps), ratio(ours, inf_bps), r["rss_mb"]


# -- data ----------------------------------------------------------------------------------------
def bench_keys() -> list[SeriesKey]:
    keys = []
    for i in range(SERIES // 2):
        stem = f"channel_{i + 1:02d}"
        keys.append(SeriesKey("BENCH", f"{stem}_t", "K", stem, ocs=f"Channel_{i + 1:02d}_T"))
        keys.append(SeriesKey("BENCH", f"{stem}_r", "Ohm", stem, ocs=f"Channel_{i + 1:02d}_R"))
    return keys


class Generator:
    """A slow random walk per series at 6 significant digits; a channel's two series share a time."""

    def __init__(self, seed: int = 42) -> None:
        self.rng = np.random.default_rng(seed)
        kelvin = np.geomspace(0.008, 300.0, SERIES // 2)
        ohms = np.geomspace(800.0, 80_000.0, SERIES // 2)
        self.x = np.ravel(np.column_stack([kelvin, ohms]))  # t, r, t, r, ...
        self.offset = np.repeat(np.arange(SERIES // 2) * 40, 2)  # each channel read ~40 ms after the last

    def hour(self, base_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(t_ms, value) for one hour, second by second, series by series."""
        walk = self.x * np.exp(np.cumsum(self.rng.normal(0.0, 1e-5, (HOUR, SERIES)), axis=0))
        self.x = walk[-1]
        scale = 10.0 ** (5 - np.floor(np.log10(np.abs(walk))))  # exact powers of ten for these magnitudes
        values = np.round(walk * scale) / scale  # float(f"{x:.6g}"), vectorised
        jitter = np.repeat(self.rng.integers(0, 10, (HOUR, SERIES // 2)), 2, axis=1)
        t = base_ms + np.arange(HOUR)[:, None] * 1000 + self.offset[None, :] + jitter
        return t.ravel(), values.ravel()


def make_samples(keys, t_ms: np.ndarray, values: np.ndarray) -> list[Sample]:
    return list(map(Sample, itertools.cycle(keys), (t_ms / 1000).tolist(), values.tolist(), itertools.repeat(0)))


BARE_SCHEMA = (
    "CREATE TABLE raw (series INTEGER NOT NULL, t INTEGER NOT NULL, value REAL, status INTEGER NOT NULL DEFAULT 0)"
)
BARE_GROUP_BY = (
    "SELECT series, (t/1000)/? AS g, count(value), avg(value), min(value), max(value) FROM raw"
    " WHERE t>=? AND t<? GROUP BY series, g"
)


def bare_child(path: str, t0: int, hours: int) -> int:
    """`python -m tools.bench --bare PATH T0 HOURS`: the baseline, on the other core.

    Writes the same hours as the parent (same generator, same seed) into a bare rowid table,
    one hour per line the parent sends as it starts that hour, then answers GROUP BY requests.
    """
    bare = sqlite3.connect(path, isolation_level=None)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute("PRAGMA synchronous=FULL")
    bare.execute(BARE_SCHEMA)
    gen = Generator()
    ids = list(range(1, SERIES + 1))  # our store numbers the series in this order too
    spent = 0.0
    for h in range(hours):
        if not sys.stdin.readline():
            return 1  # the parent went away
        t_ms, values = gen.hour((t0 + h * HOUR) * 1000)
        rows = list(zip(itertools.cycle(ids), t_ms.tolist(), values.tolist(), itertools.repeat(0)))
        t = time.perf_counter()
        bare.execute("BEGIN")
        bare.executemany("INSERT INTO raw(series, t, value, status) VALUES (?,?,?,?)", rows)
        bare.execute("COMMIT")
        spent += time.perf_counter() - t
    bare.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(json.dumps({"seconds": spent, "bytes": os.path.getsize(path)}), flush=True)
    for line in sys.stdin:
        q = json.loads(line)
        times, rows = [], []
        while len(times) < 3 and sum(times) < 5:
            t = time.perf_counter()
            rows = bare.execute(BARE_GROUP_BY, (q["group"], q["lo_ms"], q["hi_ms"])).fetchall()
            times.append(time.perf_counter() - t)
        print(json.dumps({"ms": statistics.median(times) * 1000, "rows": rows}), flush=True)
    return 0


class Bare:
    """The parent's end of bare_child."""

    def __init__(self, path: Path, t0: int, hours: int) -> None:
        self.path = path
        args = [sys.executable, "-m", "tools.bench", "--bare", str(path), str(t0), str(hours)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.bytes = 0

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the bare-SQLite baseline exited ({self.proc.wait()})")
        return json.loads(line)

    def hour(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def done(self) -> dict:
        return self._reply()

    def group_by(self, group: int, lo_ms: int, hi_ms: int) -> dict:
        self.proc.stdin.write(json.dumps({"group": group, "lo_ms": lo_ms, "hi_ms": hi_ms}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def ingest(work: Path, keys, days: float) -> tuple[Store, Bare, float, float, int, float]:
    """Every hour through Store.write here and through bare executemany in a child, in lockstep.

    The two run side by side on the two cores, hour h in both at once (the child, faster, then
    waits for the next hour), so both are timed under the same load.
    Returns (store, bare, start, end, samples, bare time / our time).
    """
    hours = max(2, int(days * 24))
    end = int(time.time() // HOUR * HOUR)
    t0 = end - hours * HOUR
    store = Store(work / "kelvinpi.db", raw_retention_days=days + 10, max_size_mb=1 << 20)
    bare = Bare(work / "bare.db", t0, hours)
    gen = Generator()
    ours_s = 0.0
    io_ours = 0
    for h in range(hours):
        bare.hour()
        t_ms, values = gen.hour((t0 + h * HOUR) * 1000)
        samples = make_samples(keys, t_ms, values)
        io0 = thread_write_bytes()
        t = time.perf_counter()
        store.write(samples)
        ours_s += time.perf_counter() - t
        io_ours += thread_write_bytes() - io0
        if h == 0:
            fmap = store.field_map()
            if [fmap[k.name].id for k in keys] != list(range(1, SERIES + 1)):
                raise RuntimeError("the store numbered the series unlike the bare table")
        if (h + 1) % 168 == 0:
            print(f"  ... {h + 1}/{hours} hours written", flush=True)
    got = bare.done()
    bare_s, bare.bytes = got["seconds"], got["bytes"]
    n = hours * HOUR * SERIES
    ratio_ = bare_s / ours_s
    print(
        f"ingest: Store.write {n / ours_s:,.0f} samples/s, bare executemany into a rowid table {n / bare_s:,.0f}"
        f" samples/s, {hours} one-hour batches of {HOUR * SERIES:,} -> ratio {ratio_:.2f} (> 1: we are faster);"
        f" our writes {io_ours / n:.2f} B/sample"
    )
    return store, bare, float(t0), float(end), n, ratio_


def checkpoint(store: Store) -> None:
    """Journaled readings (if the store journals) into SQLite, and the WAL into the file."""
    flush = getattr(store, "flush", None)
    if callable(flush):
        flush()
    with store._write_lock:
        store._wconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def disk(store: Store, bare: Bare, end: float, n: int) -> float:
    checkpoint(store)
    t = time.perf_counter()
    store.seal(now=end + SEAL_DELAY + 2 * HOUR, budget=300)  # the hot tail too: everything in blocks
    seal_s = time.perf_counter() - t
    checkpoint(store)
    kept = store.count_by_seq(set(range(1, SERIES + 1)), 0, store.next_seq())
    if kept != n:
        print(f"disk: STORE LOST OR DUPLICATED SAMPLES: {kept:,} kept of {n:,} written")
    try:
        blob = store.reader().execute("SELECT total(length(data)) FROM block").fetchone()[0]
        payload = f"; block payloads {blob / n:.2f}"
    except sqlite3.Error:
        payload = ""
    bps = store.file_bytes() / n
    print(
        f"disk: {store.file_bytes() / 1e6:.1f} MB for {n:,} samples = {bps:.2f} B/sample all-in"
        f" ({store.used_bytes() / n:.2f} in use{payload}; the rest rollups, indexes, free pages;"
        f" final seal {seal_s:.1f} s); bare rowid table {bare.bytes / n:.1f} B/sample"
    )
    return bps


def query(store: Store, bare: Bare, keys, start: float, end: float) -> tuple[float, float]:
    names = [k.name for k in keys]
    stride = (end - start) / 1000
    times, ours = [], None
    for _ in range(7):
        q = time.perf_counter()
        ours = store.data(names, start, end, min_stride=stride)
        times.append(time.perf_counter() - q)
    query_ms = statistics.median(times) * 1000
    tier = store.choose_tier(stride)
    group = max(tier, int(math.ceil(stride / tier)) * tier) if tier else max(1, int(stride))
    g_lo = int(math.ceil(start / group) * group)
    reply = bare.group_by(group, g_lo * 1000, int(end * 1000))
    base_ms, base = reply["ms"], reply["rows"]
    # the two answers must agree
    want: dict[int, dict[float, float]] = {}
    for sid, g, _n, mean, _mn, _mx in base:
        want.setdefault(sid, {})[float(g * group)] = mean
    worst, mismatched = 0.0, []
    for i, name in enumerate(names):
        got = dict(zip(ours[name].t, ours[name].value, strict=False)) if name in ours else {}
        exp = want.get(i + 1, {})
        if got.keys() != exp.keys():
            mismatched.append(f"{name}: {len(got)} points, GROUP BY {len(exp)}")
            continue
        for g, v in exp.items():
            worst = max(worst, abs(got[g] - v) / max(abs(v), 1e-300))
    points = statistics.mean(len(d.t) for d in ours.values())
    agree = (
        f"answers agree (largest relative difference of a mean {worst:.1e})"
        if not mismatched
        else f"ANSWERS DIFFER: {'; '.join(mismatched[:3])}"
    )
    speedup = base_ms / query_ms
    print(
        f"query: {len(names)} fields x {(end - start) / 86400:g} days at ~{points:.0f} points each"
        f" ({group} s buckets from the {tier} s tier): median {query_ms:.1f} ms of {len(times)};"
        f" GROUP BY over the bare table's raw rows {base_ms:,.0f} ms -> {speedup:,.0f}x; {agree}"
    )
    return query_ms, speedup


def seal_wear(work: Path, keys) -> None:
    """What sealing one hour of 24 series adds to the wear: its blocks, rollups and deletes, checkpointed."""
    store = Store(work / "seal.db")
    try:
        gen = Generator(seed=7)
        base = int((time.time() - SEAL_DELAY) // HOUR - 1) * HOUR  # an hour already due for sealing
        t_ms, values = gen.hour(base * 1000)
        samples = make_samples(keys, t_ms, values)
        io0 = thread_write_bytes()
        for i in range(0, len(samples), SERIES):  # as the service commits: a second's readings at a time
            store.write(samples[i : i + SERIES])
        checkpoint(store)
        io1 = thread_write_bytes()
        sealed = store.seal(budget=30)
        checkpoint(store)
        io2 = thread_write_bytes()
        n = len(samples)
        print(
            f"seal: one hour of {SERIES} series ({n:,} samples) committed a second at a time in this process:"
            f" {(io1 - io0) / n:,.0f} B/sample; sealing it ({sealed} blocks) then adds {(io2 - io1) / n:,.1f}"
            f" B/sample (neither in wear_ratio's window)"
        )
    finally:
        store.close()


def retention(store: Store) -> None:
    used = store.used_bytes()
    store.max_bytes = int(used * 0.6)
    store.longest_step = 0.0
    lock = TimedLock()
    store._write_lock = lock  # nothing else uses this store now
    t = time.perf_counter()
    deleted = store.enforce_retention()
    took = time.perf_counter() - t
    wal = os.path.getsize(f"{store.path}-wal") if os.path.exists(f"{store.path}-wal") else 0
    print(
        f"retention: {used / 1e6:.0f} MB in use, cap {store.max_bytes / 1e6:.0f} MB: {deleted['raw_size']:,}"
        f" samples deleted in {took:.1f} s; longest step (Store.longest_step) {store.longest_step * 1000:.0f} ms,"
        f" longest write-lock hold {lock.longest * 1000:.0f} ms ({lock.where}); after: {store.used_bytes() / 1e6:.0f}"
        f" MB in use, file {os.path.getsize(store.path) / 1e6:.0f} MB + WAL {wal / 1e6:.0f} MB"
    )


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM (a `timeout`, Ctrl-C from make) must still run the finally blocks that stop what we started
    signal.signal(signal.SIGTERM, _interrupt)
    days = float(os.environ.get("BENCH_DAYS", "30"))
    wear_seconds = float(os.environ.get("BENCH_WEAR_SECONDS", "300"))
    commit = float(os.environ.get("BENCH_COMMIT_INTERVAL", "1"))
    work = work_dir()
    print(
        f"bench: {days:g} days x {SERIES} series; wear run {wear_seconds:g} s, commits every {commit:g} s; files in {work}"
        f" ({fs_type(work)})",
        flush=True,
    )
    started = time.monotonic()
    wear = WearRun(work, wear_seconds, commit)
    wear.start()
    store = bare = None
    try:
        keys = bench_keys()
        store, bare, start, end, n, ingest_ratio = ingest(work, keys, days)
        bytes_per_sample = disk(store, bare, end, n)
        query_ms, speedup = query(store, bare, keys, start, end)
        bare.close()
        os.unlink(bare.path)
        seal_wear(work, keys)
        retention(store)
        if wear.is_alive():
            print("waiting for the wear run to finish...", flush=True)
        wear.join()
        wear_ratio, influx_ratio, rss = wear_report(wear)
        print(f"bench took {(time.monotonic() - started) / 60:.1f} min")
        print(
            f"bench: wear_ratio={wear_ratio:.2f} influx_wear_ratio={influx_ratio:.2f}"
            f" bytes_per_sample={bytes_per_sample:.2f} query_ms={query_ms:.1f} query_speedup={speedup:.0f}"
            f" ingest_ratio={ingest_ratio:.2f} rss_mb={rss:.1f}"
        )
    finally:
        wear.halt.set()
        wear.join(60)
        wear.stop_all()
        if bare is not None:
            bare.close()
        if store is not None:
            store.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare"]:
        sys.exit(bare_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    sys.exit(main())
