"""The web side under attack (issue 14), black-box against a running `kelvinpi run` on loopback.

One service for the module (both emulators polled): oversized and repeated Grafana targets,
slowloris connections from other loopback addresses, a forged X-Forwarded-For on a control
request, pre-1970 ISO times, repeated field= lists and over-long request lines. Every request
here is bounded in time; the last test checks the service's peak RSS over all of them.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from firmware_host.emulator import Emulator
from tests.conftest import appliance_config, wait_for

pytestmark = pytest.mark.slow  # hostile clients waited out to their deadlines

TOKEN = "hostile-suite-control-token"
PROXY = "127.0.0.3"  # the one trusted reverse proxy of this service
RSS_LIMIT_MB = 150


HISTORY_DAYS = 7  # of 1 Hz history for one live series: what makes an unbounded answer heavy


def prefill(path: Path, days: float) -> None:
    """``days`` of 1 Hz readings of LSA23JD::mxc_control_t before the service starts (bulk ingest, ~2 s)."""
    from appliance.naming import SeriesKey
    from appliance.samples import Sample
    from appliance.store import Store

    key = SeriesKey("LSA23JD", "mxc_control_t", "K", "mxc_control")
    store = Store(path, raw_retention_days=days + 10)
    end = int(time.time() // 3600 * 3600) - 3600
    try:
        for h in range(int(days * 24), 0, -1):
            t0 = end - h * 3600
            store.write([Sample(key, t0 + i, 0.01 + 1e-6 * (i % 97), 0) for i in range(3600)])
        store.flush()
    finally:
        store.close()


class Service:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict | None = None,
        source: str = "127.0.0.1",
        timeout: float = 5.0,
    ) -> tuple[int, dict, bytes, float]:
        """(status, headers, body, seconds) over a fresh connection from ``source``."""
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(source, 0))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data, time.monotonic() - t0
        finally:
            conn.close()

    def json(self, method: str, path: str, obj=None, **kw) -> tuple[int, object, float]:
        body = None if obj is None else json.dumps(obj).encode()
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        status, _h, data, dt = self.request(method, path, body, headers, **kw)
        return status, json.loads(data), dt

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    e372, e240 = Emulator.ls372(seed=21), Emulator.ls240(seed=22)
    e372.listen_tcp("127.0.0.1", 0)
    e240.listen_pty(str(tmp / "ls240"))
    token = tmp / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    extra = (
        f'request_timeout = 2.0\nmax_connections_per_client = 32\ntrusted_proxies = ["{PROXY}"]\n'
        f'\n[control]\nenabled = true\ntoken_file = "{token}"\nmax_setpoint_kelvin = 1.0\n'
    )
    cfg = tmp / "kelvinpi.toml"
    cfg.write_text(appliance_config(tmp, e372, e240, extra=extra))
    prefill(tmp / "kelvinpi.db", HISTORY_DAYS)
    log = tmp / "service.log"
    out = open(log, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        port = int(wait_for(lambda: _port(log), 20, what="the service's web port"))
        svc = Service(proc, port, log)
        wait_for(lambda: _ready(svc), 20, what="both instruments polled")
        yield svc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
        e372.stop()
        e240.stop()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _port(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        if "front panel on http://" in line:
            return int(line.rsplit(":", 1)[1].strip("/\n "))
    return None


def _ready(svc: Service) -> bool:
    try:
        status, h, _ = svc.json("GET", "/api/v1/health")
    except OSError:
        return False
    return status == 200 and all(i["connected"] for i in h["instruments"]) and h["store"]["written"] > 20


def error_message(obj) -> str:
    assert set(obj) == {"error"} and set(obj["error"]) == {"status", "message"}, obj
    return obj["error"]["message"]


def grafana_body(targets: list[str], max_points=100000, days: float = 30) -> dict:
    now = time.time()
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))  # noqa: E731
    return {
        "range": {"from": iso(now - days * 86400), "to": iso(now)},
        "intervalMs": 1,
        "maxDataPoints": max_points,
        "targets": [{"target": t, "refId": f"R{i}"} for i, t in enumerate(targets)],
    }


# An answer "at once": what these attacks used to cost was 24 s or a refused panel; 3 s tells those
# apart on a CI host loaded by an image build as well as 1 s does on a quiet one (latency aims: make bench-web)
QUICK_S = 3.0


# -- bounded cost --------------------------------------------------------------------------------
def test_the_32_copies_grafana_request_is_one_bounded_series(service):
    """The issue's request (32 copies of one target, 100,000 points, 30 days) took 24 s and 99 MB."""
    status, out, dt = service.json("POST", "/grafana/query", grafana_body(["LSA23JD::mxc_control_t"] * 32))
    assert status == 200 and dt < QUICK_S, (status, dt)
    assert [o["target"] for o in out] == ["LSA23JD::mxc_control_t"]  # repeats collapsed
    assert 0 < len(out[0]["datapoints"]) <= 5000  # maxDataPoints clamped to MAX_POINTS


@pytest.mark.parametrize(
    "variant,status,words",
    [
        ("65 distinct", 400, "limit of 64 series"),
        ("body over 256 KiB", 413, "limit of 262144 bytes"),
        ("maxDataPoints NaN-like", 400, "maxDataPoints"),
        ("pre-1970 range", 400, "1970"),
    ],
)
def test_grafana_variants_over_a_limit_are_refused_fast(service, variant, status, words):
    if variant == "65 distinct":
        body = json.dumps(grafana_body([f"LSA23JD::x{i}" for i in range(65)])).encode()
    elif variant == "body over 256 KiB":
        body = json.dumps(grafana_body(["LSA23JD::mxc_control_t"] * 12000)).encode()
    elif variant == "maxDataPoints NaN-like":
        body = json.dumps(grafana_body(["LSA23JD::mxc_control_t"], max_points=-5)).encode()
    else:
        b = grafana_body(["LSA23JD::mxc_control_t"])
        b["range"]["from"] = "1969-12-31T23:00:00Z"
        body = json.dumps(b).encode()
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", service.port), timeout=5)
    try:  # the head and the first KB: a body over the limit is refused before it is read
        s.sendall(
            b"POST /grafana/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[:1024]
        )
        if len(body) <= 1024 or variant != "body over 256 KiB":
            s.sendall(body[1024:])
        reply = _read_reply(s, until_complete=True)
    finally:
        s.close()
    dt = time.monotonic() - t0
    head, _, data = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status) and dt < QUICK_S, (variant, head, dt, data[:200])
    assert words in error_message(json.loads(data))


def test_thirty_two_distinct_series_share_the_point_budget(service):
    """32 real series at maxDataPoints 100,000: each gets MAX_RESPONSE_POINTS / 32 at most."""
    _s, fields, _ = service.json("GET", "/api/v1/fields")
    names = [f["field"] for f in fields["fields"]][:32]
    status, _h, data, dt = service.request(
        "POST", "/grafana/query", json.dumps(grafana_body(names, days=1)).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200 and dt < 5.0, (status, dt)
    out = json.loads(data)
    assert len(out) == len(names) and all(len(o["datapoints"]) <= 100000 // len(names) for o in out)


def test_repeated_fields_collapse_and_long_lists_are_refused(service):
    one = "field=LSA23JD::mxc_control_t"
    status, out, dt = service.json("GET", "/api/v1/data?" + "&".join([one] * 60) + "&start=-30")
    assert status == 200 and list(out["fields"]) == ["LSA23JD::mxc_control_t"] and dt < QUICK_S
    status, out, _ = service.json("GET", "/api/v1/data?" + "&".join([one] * 101))
    assert status == 400 and "limit of 100" in error_message(out)
    status, out, _ = service.json("GET", "/api/v1/data?" + "&".join([one] * 300))  # ~8.7 KB of query
    assert status == 400 and "limit of 8192 bytes" in error_message(out)
    many = "&".join(f"field=LSA23JD::f{i}" for i in range(70))
    status, out, _ = service.json("GET", "/api/v1/data?" + many)
    assert status == 400 and "limit of 64 series" in error_message(out)


def test_a_long_raw_read_goes_in_windows_and_keeps_its_stride(service):
    """Three hours of history at a 2 s stride: raw reads an hour at a time, the seams still >= stride."""
    end = time.time() // 3600 * 3600 - 2 * 3600
    status, out, dt = service.json(
        "GET", f"/api/v1/data?field=LSA23JD::mxc_control_t&start={end - 10800}&end={end}&min_stride=2"
    )
    assert status == 200 and dt < 5.0
    d = out["fields"]["LSA23JD::mxc_control_t"]
    stride = 10800 / 5000  # the range over MAX_POINTS: wider than the 2 s asked
    gaps = [b - a for a, b in zip(d["t"], d["t"][1:], strict=False)]
    assert d["tier"] == 0 and len(d["t"]) <= 5000 and min(gaps) >= stride - 0.001, (len(d["t"]), min(gaps))
    assert d["t"][0] < end - 10800 + 5 and d["t"][-1] > end - 5
    # the same as the three hours asked one by one (each a single read), but for a point at a seam
    hours = 0
    for h in range(3):
        a = end - 10800 + h * 3600
        _s, one, _ = service.json(
            "GET", f"/api/v1/data?field=LSA23JD::mxc_control_t&start={a}&end={a + 3600}&min_stride={stride}"
        )
        hours += len(one["fields"]["LSA23JD::mxc_control_t"]["t"])
    assert abs(len(d["t"]) - hours) <= 2, (len(d["t"]), hours)


def test_over_long_request_lines_and_heads_get_431(service):
    s = socket.create_connection(("127.0.0.1", service.port), timeout=5)
    try:
        s.sendall(b"GET /api/v1/latest?" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _read_reply(s)
    finally:
        s.close()
    assert reply.split(b" ", 2)[1] == b"431", reply[:200]  # (HTTP/1.0: the request line was never read)
    assert "limit of 16384 bytes" in error_message(json.loads(reply.split(b"\r\n\r\n", 1)[1]))
    status, _h, data, _ = service.request("GET", "/api/v1/latest", headers={"X-Junk": "b" * 20000})
    assert status == 431 and b"MAX_HEAD" in data


def _read_reply(s: socket.socket, until_complete: bool = False) -> bytes:
    """What the server sends until it closes (or, ``until_complete``, until its Content-Length is in)."""
    reply = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        head, sep, body = reply.partition(b"\r\n\r\n")
        if until_complete and sep:
            length = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                break
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        reply += chunk
    return reply


# -- times ---------------------------------------------------------------------------------------
def test_pre_1970_iso_is_refused_and_numbers_keep_their_meaning(service):
    status, out, _ = service.json("GET", "/api/v1/data?field=LSA23JD::mxc_control_t&start=1969-12-31T23:00Z")
    assert status == 400 and "1970" in error_message(out)
    status, out, _ = service.json("GET", "/api/v1/events?since=1900-01-01T00:00:00")
    assert status == 400 and "1970" in error_message(out)
    # a negative *number* is seconds before now; a positive one is UNIX seconds
    status, out, _ = service.json("GET", "/api/v1/data?field=LSA23JD::mxc_control_t&start=-3600&end=0")
    assert status == 200 and time.time() - 3700 < out["start"] < out["end"] <= time.time() + 1
    status, out, _ = service.json("GET", "/api/v1/data?field=LSA23JD::mxc_control_t&start=3600&end=7200")
    assert status == 200 and out["start"] == 3600 and out["fields"]["LSA23JD::mxc_control_t"]["t"] == []


# -- audit ----------------------------------------------------------------------------------------
def _control_events(service) -> list[str]:
    _s, ev, _ = service.json("GET", "/api/v1/events?since=-600")
    return [e["detail"] for e in ev["events"] if e["kind"] == "control"]


def test_a_forged_forwarded_for_is_not_what_the_audit_records(service):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, out, _ = service.json(
        "POST",
        "/api/v1/control/LSA23JD/setpoint",
        {"output": 0, "kelvin": 0.011},
        headers={**auth, "X-Forwarded-For": "6.6.6.6"},
    )
    assert status == 200, out
    detail = wait_for(lambda: [d for d in _control_events(service) if "0.011 K" in d], 10, what="the audit event")
    assert detail[0].endswith("(by 127.0.0.1)") and "6.6.6.6" not in detail[0]
    # through the trusted proxy, the hop it saw is the client (not what the client wrote before it)
    status, out, _ = service.json(
        "POST",
        "/api/v1/control/LSA23JD/setpoint",
        {"output": 0, "kelvin": 0.012},
        headers={**auth, "X-Forwarded-For": "6.6.6.6, 10.20.30.40"},
        source=PROXY,
    )
    assert status == 200, out
    detail = wait_for(lambda: [d for d in _control_events(service) if "0.012 K" in d], 10, what="the audit event")
    assert detail[0].endswith("(by 10.20.30.40)")


# -- slow clients ---------------------------------------------------------------------------------
class Slowloris(threading.Thread):
    """``n`` connections from ``source``, each sending a request head one byte every ``every`` s."""

    def __init__(self, port: int, source: str, n: int, every: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.source, self.n, self.every, self.seconds = port, source, n, every, seconds
        self.socks: list[socket.socket] = []
        self.refused = 0  # answered 503 at once (over the per-client limit)
        self.closed_by_server: list[float] = []  # seconds after its first byte each was closed
        self.ready = threading.Event()

    def run(self) -> None:
        head = b"GET /api/v1/latest HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        started = {}
        for _ in range(self.n):
            s = socket.socket()
            s.bind((self.source, 0))
            s.settimeout(2)
            s.connect(("127.0.0.1", self.port))
            s.setblocking(False)
            self.socks.append(s)
        t_end = time.monotonic() + self.seconds
        self.ready.set()
        i = 0
        live = list(self.socks)
        while live and time.monotonic() < t_end:
            for s in list(live):
                try:
                    data = s.recv(4096)
                    if data.startswith(b"HTTP/1.1 503"):
                        self.refused += 1
                    elif data:
                        continue
                    if not data.startswith(b"HTTP/1.1 503"):
                        self.closed_by_server.append(time.monotonic() - started.get(s, time.monotonic()))
                    live.remove(s)
                    continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_by_server.append(time.monotonic() - started.get(s, time.monotonic()))
                    live.remove(s)
                    continue
                try:
                    s.send(head[i % len(head) : i % len(head) + 1])
                    started.setdefault(s, time.monotonic())
                except OSError:
                    self.closed_by_server.append(time.monotonic() - started.get(s, time.monotonic()))
                    live.remove(s)
            i += 1
            time.sleep(self.every)
        self.alive_at_end = len(live)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def test_fifty_slowloris_connections_do_not_block_the_panel(service):
    # 50 connections from five other "hosts", each sending a request head a byte every 0.5 s
    attackers = [Slowloris(service.port, f"127.0.0.{10 + k}", 10, 0.5, 8.0) for k in range(5)]
    for a in attackers:
        a.start()
    for a in attackers:
        assert a.ready.wait(10)
    try:
        times = []
        t_end = time.monotonic() + 6.0
        while time.monotonic() < t_end:  # the panel's client, over the whole attack
            status, _h, data, dt = service.request("GET", "/api/v1/latest", timeout=5)
            assert status == 200 and json.loads(data), status
            times.append(dt)
            time.sleep(0.1)
        assert len(times) >= 20 and max(times) < QUICK_S, (len(times), max(times))
        for a in attackers:
            a.join(15)
        # the request deadline (2 s here) closed every one of them, none answered
        closed = [c for a in attackers for c in a.closed_by_server]
        assert len(closed) == 50 and sum(a.refused for a in attackers) == 0
        assert max(closed) < 2.0 + 3.0, max(closed)
    finally:
        for a in attackers:
            a.close()


def test_one_client_gets_at_most_its_share_of_connections(service):
    hog = Slowloris(service.port, "127.0.0.30", 40, 0.5, 3.0)
    hog.start()
    assert hog.ready.wait(10)
    try:
        status, _h, _d, dt = service.request("GET", "/api/v1/latest")
        assert status == 200 and dt < QUICK_S
        hog.join(15)
        assert hog.refused == 40 - 32, hog.refused  # web.max_connections_per_client
        # its 32 admitted connections end at the request deadline (counted whatever ran before on this service)
        h = wait_for(
            lambda: (h := service.json("GET", "/api/v1/health")[1])["web"]["timed_out"] >= 32 and h,
            10,
            what="the hog's connections timed out",
        )
        assert h["web"]["refused"] >= 8
    finally:
        hog.close()


def test_a_busy_keep_alive_connection_outlives_the_deadline(service):
    """The deadline is per request: a panel's connection asking every 0.3 s stays open."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5, source_address=("127.0.0.41", 0))
    try:
        conn.request("GET", "/api/v1/ping")
        conn.getresponse().read()
        sock = conn.sock
        t_end = time.monotonic() + 2.0 + 4.0  # request_timeout + maintenance passes and a margin
        while time.monotonic() < t_end:
            conn.request("GET", "/api/v1/latest")
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read())
            time.sleep(0.3)
        assert conn.sock is sock  # never reconnected
    finally:
        conn.close()


def test_an_idle_connection_is_closed_at_the_deadline(service):
    s = socket.create_connection(("127.0.0.1", service.port), timeout=10, source_address=("127.0.0.40", 0))
    t0 = time.monotonic()
    try:
        assert s.recv(100) == b""  # never sent a byte: closed after request_timeout
        assert 1.0 < time.monotonic() - t0 < 2.0 + 3.0
    finally:
        s.close()


# -- memory, over everything above ---------------------------------------------------------------
def test_peak_rss_stays_bounded(service):
    for _ in range(3):  # the request again, three times
        status, _o, dt = service.json("POST", "/grafana/query", grafana_body(["LSA23JD::mxc_control_t"] * 32))
        assert status == 200
    status, _h, _d, _ = service.request("GET", "/api/v1/export.csv?start=-86400")
    assert status == 200
    peak = service.peak_rss_mb()
    print(f"hostile suite: service peak RSS {peak:.0f} MB")
    assert peak < RSS_LIMIT_MB
