"""Remote-write receivers for tests: Debian's prometheus and victoria-metrics on loopback, started by the
test on free ports with their data in the test's directory, stopped by pid.

``samples()`` reads back every raw sample of the kelvinpi_* series over the server's own HTTP API
(Prometheus: a range-vector instant query, which returns raw samples, not the interpolated steps of
query_range; VictoriaMetrics: /api/v1/export), keyed by (metric name, field label).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

from ..conftest import free_port

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
                out[key].extend(zip(s["timestamps"], (float(v) for v in s["values"]), strict=False))
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


# -- misbehaving webhook and SMTP receivers (raw sockets, for the notification lanes) -------------------


class Arrival:
    """One request (or mail) as it reached a raw receiver."""

    def __init__(self, index: int, head: bytes, body: bytes) -> None:
        self.index = index
        self.head = head
        self.body = body
        lines = head.decode("latin-1").split("\r\n")
        self.request_line = lines[0]
        self.method = self.request_line.split(" ", 1)[0]
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}

    @property
    def notice(self) -> int | None:
        v = self.headers.get("x-kelvinpi-notice")
        return int(v) if v else None


class _RawServer:
    """A loopback listener that runs ``serve(conn, index)`` per connection, each in its own thread, so a
    connection it holds open does not block the next one. ``stop()`` closes everything it opened."""

    def __init__(self) -> None:
        import socket
        import threading

        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.connections = 0
        self._conns: list = []
        self._threads: list = []
        t = threading.Thread(target=self._accept, name="raw-receiver", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        import threading

        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with self.lock:
                index = self.connections
                self.connections += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._handle, args=(conn, index), daemon=True)
            t.start()
            self._threads.append(t)

    def _handle(self, conn, index: int) -> None:
        try:
            self.serve(conn, index)
        except OSError:
            pass  # the client gave up (its deadline) or stop() closed it
        finally:
            conn.close()

    def serve(self, conn, index: int) -> None:
        raise NotImplementedError

    def wait(self, seconds: float) -> None:
        """Sleep that ends at once on stop(): for receivers that hold a connection open."""
        self.stopping.wait(seconds)

    def stop(self) -> None:
        import socket

        self.stopping.set()
        self._listener.close()
        with self.lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=5)


class RawHTTP(_RawServer):
    """A webhook receiver speaking whatever ``answer(conn, arrival, server)`` writes: reads one request
    (headers, then a Content-Length body), records it, and hands the socket to ``answer``."""

    def __init__(self, answer) -> None:
        self.answer = answer
        super().__init__()

    def serve(self, conn, index: int) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        arrival = Arrival(index, head, b"")
        length = int(arrival.headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        arrival.body = body
        with self.lock:
            self.arrivals.append(arrival)
        self.answer(conn, arrival, self)

    def posts(self) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.method == "POST"]


class RawSMTP(_RawServer):
    """An SMTP server that takes every mail (250 after DATA) and then answers QUIT as ``quit`` says:
    a reply line such as ``b"421 closing"``, or ``None`` to hang up without answering."""

    def __init__(self, quit: bytes | None) -> None:
        self.quit = quit
        super().__init__()

    def serve(self, conn, index: int) -> None:
        f = conn.makefile("rb")
        conn.sendall(b"220 raw-smtp ready\r\n")
        while True:
            line = f.readline(4096)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250 raw-smtp\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                conn.sendall(b"250 ok\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                data = b""
                while True:
                    ln = f.readline(65536)
                    if not ln or ln == b".\r\n":
                        break
                    data += ln
                head, _, body = data.partition(b"\r\n\r\n")
                with self.lock:
                    self.arrivals.append(Arrival(index, b"DATA\r\n" + head, body))
                conn.sendall(b"250 queued\r\n")
            elif verb == b"QUIT":
                if self.quit is not None:
                    conn.sendall(self.quit + b"\r\n")
                return
            else:
                conn.sendall(b"502 not implemented\r\n")


def every_uplink_marks() -> list:
    """``pytestmark`` of a test that reconciles every uplink at once: crossbar (sisock, OCS), influxd and
    VictoriaMetrics started, skipped by name where one is missing; slow."""
    import pytest

    from .routers import CROSSBAR

    return [
        pytest.mark.skipif(not CROSSBAR.exists(), reason="crossbar venv missing: run `make test`"),
        pytest.mark.skipif(not VictoriaMetrics.available(), reason="Debian's victoria-metrics is not installed"),
        pytest.mark.crossbar,
        pytest.mark.influxd,
        pytest.mark.victoria,
        pytest.mark.slow,
    ]
