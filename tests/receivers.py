"""Remote-write receivers for tests: Debian's prometheus and victoria-metrics on loopback, started by the
test on free ports with their data in the test's directory, stopped by pid.

``samples()`` reads back every raw sample of the kelvinpi_* series over the server's own HTTP API
(Prometheus: a range-vector instant query, which returns raw samples, not the interpolated steps of
query_range; VictoriaMetrics: /api/v1/export), keyed by (metric name, field label).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

from .conftest import free_port

SELECTOR = '{__name__=~"kelvinpi_.*"}'


class Receiver:
    BIN = ""
    name = ""

    def __init__(self, workdir: Path, extra: list[str] | None = None, ca_file: Path | None = None) -> None:
        """``extra``: more command-line arguments; ``ca_file``: it serves https with a certificate from that CA."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra = list(extra or [])
        self.context = None
        if ca_file is not None:
            import ssl

            self.context = ssl.create_default_context(cafile=str(ca_file))
        self.proc: subprocess.Popen | None = None

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.BIN) is not None

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}" if self.context else f"http://127.0.0.1:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.base}/api/v1/write"

    def argv(self) -> list[str]:
        raise NotImplementedError

    READY = "/-/ready"

    def start(self, timeout: float = 60) -> None:
        with open(self.workdir / f"{self.name}.log", "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.argv() + self.extra, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.workdir}")
            try:
                with urllib.request.urlopen(self.base + self.READY, timeout=2, context=self.context) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return  # answering, behind basic auth
                # 503 while Prometheus replays its WAL: not ready yet
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def get(self, path: str, params: dict) -> bytes:
        with urllib.request.urlopen(f"{self.base}{path}?{urllib.parse.urlencode(params)}", timeout=30) as r:
            return r.read()

    def samples(self, start: float, end: float) -> dict[tuple[str, str], list[tuple[int, float]]]:
        raise NotImplementedError


class Prometheus(Receiver):
    """prometheus 2.42 (Debian) with the remote-write receiver on and an out-of-order window."""

    BIN = "prometheus"
    name = "prometheus"

    def __init__(self, workdir: Path, ooo_window: str = "30m", **kw) -> None:
        super().__init__(workdir, **kw)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            f"global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: {ooo_window}\n"
        )

    def argv(self) -> list[str]:
        return [
            self.BIN,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ]

    def samples(self, start: float, end: float) -> dict[tuple[str, str], list[tuple[int, float]]]:
        span = max(1, int(end - start) + 1)
        body = json.loads(self.get("/api/v1/query", {"query": f"{SELECTOR}[{span}s]", "time": f"{end:.3f}"}))
        assert body["status"] == "success", body
        out: dict = defaultdict(list)
        for s in body["data"]["result"]:
            key = (s["metric"]["__name__"], s["metric"].get("field", ""))
            out[key].extend((round(float(t) * 1000), float(v)) for t, v in s["values"])
        return {k: sorted(v) for k, v in out.items()}


class VictoriaMetrics(Receiver):
    """victoria-metrics (Debian) single-node, no deduplication: a resent sample would show twice."""

    BIN = "victoria-metrics"
    name = "victoria-metrics"
    READY = "/health"

    def argv(self) -> list[str]:
        return [
            self.BIN,
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=10y",
            "-loggerLevel=ERROR",
            "-search.disableCache",
        ]

    def samples(self, start: float, end: float) -> dict[tuple[str, str], list[tuple[int, float]]]:
        self.get("/internal/force_flush", {})  # recently written samples searchable now, not in ~10 s
        raw = self.get("/api/v1/export", {"match[]": SELECTOR, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        out: dict = defaultdict(list)
        for line in raw.decode().splitlines():
            if line.strip():
                s = json.loads(line)
                key = (s["metric"]["__name__"], s["metric"].get("field", ""))
                out[key].extend(zip(s["timestamps"], (float(v) for v in s["values"])))
        return {k: sorted(v) for k, v in out.items()}


def expected(
    store, start: float, end: float, send_status: bool = True
) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """What a receiver must hold for [start, end]: every stored sample, named as the uplink names it."""
    from appliance.uplinks.remote_write import METRIC_BY_UNITS, OTHER_METRIC, STATUS_METRIC

    out: dict = defaultdict(list)
    for f in store.fields():
        metric = METRIC_BY_UNITS.get(f.units, OTHER_METRIC)
        for _name, t, v, st in store.iter_raw([f.name], start, end):
            t_ms = round(t * 1000)
            if v is not None:
                out[(metric, f.name)].append((t_ms, float(v)))
            if send_status:
                out[(STATUS_METRIC, f.name)].append((t_ms, float(st)))
    return {k: sorted(v) for k, v in out.items()}


def differences(want: dict, got: dict, rel: float = 1e-12) -> dict[tuple[str, str], tuple[int, int, int]]:
    """Per series: (samples wanted, missing or different, extra or duplicated), only where not exact.

    Values compare to a relative ``rel``: VictoriaMetrics keeps a float as a decimal of 12 or more
    significant digits (0.010049000000000001 comes back as 0.010049); times compare exactly.
    """
    import math

    bad = {}
    for key in set(want) | set(got):
        w, g = dict(want.get(key, [])), got.get(key, [])
        seen: dict[int, float] = {}
        extra = 0
        for t, v in g:
            if t in seen or t not in w:
                extra += 1
            seen.setdefault(t, v)
        missing = sum(1 for t, v in w.items() if t not in seen or not math.isclose(seen[t], v, rel_tol=rel, abs_tol=0))
        if missing or extra:
            bad[key] = (len(w), missing, extra)
    return bad
