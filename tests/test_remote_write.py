"""Prometheus remote-write uplink against real receivers from Debian: prometheus 2.42 (remote-write
receiver on, out-of-order window in its config file) and victoria-metrics, each started by the test on
loopback. What arrived is read back over the receivers' own query APIs and compared, sample by sample,
with the SQLite store the uplink reads (real files through appliance.store.Store); the end-to-end test
reconciles the emulated instruments' ledgers with the store and both receivers.

VictoriaMetrics runs without deduplication, so a sample sent twice shows twice: "no duplicates" is
checked there. Prometheus is the receiver that refuses old samples (too old for its window).
"""

from __future__ import annotations

import http.server
import os
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from appliance import config as _config
from appliance.config import RemoteWriteUplink
from appliance.naming import SeriesKey
from appliance.samples import Sample, SampleQueue
from appliance.store import Store
from appliance.uplinks import FailedUplink, build_uplinks
from appliance.uplinks.remote_write import RemoteWriteUplinkRunner, Sender, points

from .conftest import appliance_config, start_appliance, wait_for
from .support.receivers import Prometheus, VictoriaMetrics, differences, expected
from .support.reconcile import quiesce, reconcile
from .test_influxdb_outbox import Gate

NODE = "LSA23JD"
T_KEY = SeriesKey(NODE, "mxc_control_t", "K", "mxc_control", "mixing chamber", ocs="control_T")
R_KEY = SeriesKey(NODE, "mxc_control_r", "Ohm", "mxc_control", "mixing chamber", ocs="control_R")
P_KEY = SeriesKey(NODE, "heater_p", "W", "heater", "sample heater", ocs="heater_P")
RECEIVERS = {"prometheus": Prometheus, "victoria-metrics": VictoriaMetrics}


def rows(key: SeriesKey, t0: float, n: int, step: float = 0.01, status: int = 0) -> list[Sample]:
    return [Sample(key, t0 + i * step, 0.01 + i * 1e-6, status) for i in range(n)]


def now0() -> float:
    return float(int(time.time()) - 120)


@pytest.fixture(params=list(RECEIVERS))
def receiver(request, tmp_path):
    cls = RECEIVERS[request.param]
    if not cls.available():
        pytest.skip(f"Debian's {cls.BIN} is not installed (`make ci-deps` as root installs it)")
    r = cls(tmp_path / cls.name)
    yield r
    r.stop()


@pytest.fixture
def prometheus(tmp_path):
    if not Prometheus.available():
        pytest.skip("Debian's prometheus is not installed (`make ci-deps` as root installs it)")
    r = Prometheus(tmp_path / "prometheus", ooo_window="10m")
    yield r
    r.stop()


@pytest.fixture
def stores():
    made: list[Store] = []

    def open_store(path) -> Store:
        s = Store(path, commit_interval=0.2)
        s.start(SampleQueue(100_000))
        made.append(s)
        return s

    yield open_store
    for s in reversed(made):
        s.stop()
        s.close()


@pytest.fixture
def runners():
    made: list[RemoteWriteUplinkRunner] = []

    def start(store: Store, url: str, batch: int = 2000, **kw) -> RemoteWriteUplinkRunner:
        r = RemoteWriteUplinkRunner(
            RemoteWriteUplink(kind="remote_write", url=url, batch=batch, **kw), 0, store, [SimpleNamespace(name=NODE)]
        )
        r.start()
        made.append(r)
        return r

    yield start
    for r in made:
        r.stop()
        assert not r.is_alive(), "runner did not stop"


def wait_exact(store, receiver, start: float, end: float, what: str, timeout: float = 60) -> dict:
    """Until the receiver holds exactly what the store holds in [start, end); returns it."""
    want = expected(store, start, end)
    assert want, "nothing stored"
    deadline = time.monotonic() + timeout
    while True:
        got = receiver.samples(start, end)
        bad = differences(want, got)
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not bad, f"{what} ({receiver.name}): (wanted, missing, extra) per series: {bad}"
    return got


def test_every_sample_arrives_named_as_on_metrics(tmp_path, receiver, stores, runners):
    """Kelvin, ohm, other-unit and flagged (NULL) readings: each value and each status arrives once,
    at its millisecond, under the /metrics names (kelvinpi_temperature_kelvin{node, field} ...)."""
    receiver.start()
    store = stores(tmp_path / "kelvinpi.db")
    runner = runners(store, receiver.write_url, labels={"site": "lab2"})
    t0 = now0()
    batch = rows(T_KEY, t0, 200) + rows(R_KEY, t0, 200) + rows(P_KEY, t0, 5)
    batch.append(Sample(T_KEY, t0 + 5, None, 0x81))  # a flagged reading: status only
    assert store.write(batch) == 406
    got = wait_exact(store, receiver, t0 - 1, t0 + 10, "every sample")
    assert len(got[("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t")]) == 200
    assert len(got[("kelvinpi_resistance_ohms", "LSA23JD::mxc_control_r")]) == 200
    assert len(got[("kelvinpi_value", "LSA23JD::heater_p")]) == 5
    t_flag, st_flag = got[("kelvinpi_reading_status", "LSA23JD::mxc_control_t")][-1]
    assert t_flag == round((t0 + 5) * 1000) and int(st_flag) & 0x81 == 0x81  # (the store adds its INVALID flag)
    assert t_flag not in {t for t, _ in got[("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t")]}
    # the extra label and the units label are on the series
    if isinstance(receiver, Prometheus):
        import json

        body = json.loads(receiver.get("/api/v1/series", {"match[]": 'kelvinpi_value{node="LSA23JD"}'}))
        assert body["data"] == [
            {
                "__name__": "kelvinpi_value",
                "field": "LSA23JD::heater_p",
                "node": "LSA23JD",
                "site": "lab2",
                "units": "W",
            }
        ]
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
    assert runner.health.sent == 406 and not runner.health.errors


def test_two_outages_during_one_backfill_no_gaps_no_duplicates(tmp_path, receiver, stores, runners):
    """The link goes down; 1500 rows are stored; it comes back for two requests of the backfill (each
    backfill plus the newest rows), goes down again while 300 more are stored, then comes back:
    the receiver ends with exactly the store's samples, none missing, none twice."""
    receiver.start()
    gate = Gate(receiver.port)
    gate.open()
    try:
        store = stores(tmp_path / "kelvinpi.db")
        runner = runners(store, gate.url + "/api/v1/write", batch=300)
        t0 = now0()
        store.write(rows(T_KEY, t0, 10))
        wait_exact(store, receiver, t0 - 1, t0 + 60, "before the outage")
        gate.close()
        store.write(rows(T_KEY, t0 + 1, 1500))
        wait_for(lambda: runner.health.errors["connection"] >= 1, 20, what="the uplink noticed outage 1")
        through = gate.passed
        gate.open(budget=2)
        wait_for(lambda: gate.passed == through + 2 and not gate.is_open, 30, what="two backfill requests through")
        before = sum(runner.health.errors.values())
        wait_for(lambda: sum(runner.health.errors.values()) > before, 20, what="the uplink noticed outage 2")
        store.write(rows(T_KEY, t0 + 20, 300))
        gate.open()
        got = wait_exact(store, receiver, t0 - 1, t0 + 60, "after two outages")
        assert len(got[("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t")]) == 1810
        wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
        assert runner.is_alive() and not runner.health.errors["refused"]
    finally:
        gate.close()


def test_restart_of_the_appliance_during_an_outage_loses_nothing(tmp_path, receiver, stores, runners):
    """Delivered; the receiver goes away; more is stored; the appliance stops and starts again (new
    Store and runner on the same file) while the receiver is still away; then it comes back."""
    receiver.start()
    path = tmp_path / "kelvinpi.db"
    store = stores(path)
    runner = runners(store, receiver.write_url)
    t0 = now0()
    store.write(rows(T_KEY, t0, 50) + rows(R_KEY, t0, 50))
    wait_exact(store, receiver, t0 - 1, t0 + 60, "before the outage")
    receiver.stop()
    store.write(rows(T_KEY, t0 + 1, 40) + rows(R_KEY, t0 + 1, 40))
    wait_for(lambda: runner.health.errors["connection"] >= 1, 20, what="the uplink noticed the outage")
    runner.stop()
    store.stop()
    store.close()
    store = stores(path)  # the reboot
    runner = runners(store, receiver.write_url)
    store.write(rows(T_KEY, t0 + 5, 30) + rows(R_KEY, t0 + 5, 30))
    receiver.start()
    got = wait_exact(store, receiver, t0 - 1, t0 + 60, "across the restart")
    assert len(got[("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t")]) == 120
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")


def test_samples_too_old_for_prometheus_are_counted_reported_and_skipped(tmp_path, prometheus, stores, runners):
    """Prometheus with a 10-minute out-of-order window: samples two hours old (a clock stepped back)
    are refused ("too old sample", a 500 in 2.42), never retried: counted, named in one event, the
    cursor moves on; samples within the window, before and after, are delivered."""
    prometheus.start()
    store = stores(tmp_path / "kelvinpi.db")
    runner = runners(store, prometheus.write_url)
    t0 = now0()
    store.write(rows(T_KEY, t0, 20) + rows(R_KEY, t0, 20))
    wait_exact(store, prometheus, t0 - 1, t0 + 60, "live rows")
    old = t0 - 7200
    before = runner.sender.requests
    store.write(rows(T_KEY, old, 100) + rows(R_KEY, old, 100) + rows(T_KEY, t0 + 2, 30))

    def refused():
        return [e for e in store.events() if e["kind"] == "uplink_refused"]

    events = wait_for(refused, 30, what="an uplink_refused event")
    assert runner.health.errors["refused"] == 400  # 200 values + 200 statuses
    detail = events[0]["detail"]
    assert "refused 400 sample(s)" in detail and "too old sample" in detail, detail
    assert "kelvinpi_temperature_kelvin{field='LSA23JD::mxc_control_t'}: 100" in detail, detail
    used = runner.sender.requests - before
    assert used <= 60, f"{used} requests to find 400 refused samples (bisection per series, not per sample)"
    store.write(rows(T_KEY, t0 + 5, 10))
    wait_exact(store, prometheus, t0 - 1, t0 + 60, "rows within the window after the refusal")
    got = prometheus.samples(old - 10, old + 60)
    assert not got, f"Prometheus holds old samples: {got}"
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0 (the cursor moved past the refused)")
    assert runner.is_alive() and len(refused()) == 1
    print(f"too old: 400 refused samples found with {used} requests")


@pytest.mark.prometheus
def test_prometheus_without_an_out_of_order_window_refuses_the_backfill_behind_live_data(tmp_path, stores, runners):
    """No out-of-order window (Prometheus' default): after an outage longer than one batch, the first
    request carries the oldest backlog and the newest rows; once those are in, the rest of the backlog
    is older than them, "out of order sample" (a 400): counted, reported, skipped, as docs/uplinks.md warns.
    Nothing is retried forever and live data keeps flowing."""
    if not Prometheus.available():
        pytest.skip("Debian's prometheus is not installed")
    prom = Prometheus(tmp_path / "prom-no-ooo", ooo_window="0s")
    prom.start()
    try:
        store = stores(tmp_path / "kelvinpi.db")
        runner = runners(store, prom.write_url, batch=100, send_status=False)
        t0 = now0()
        store.write(rows(T_KEY, t0, 10))
        wait_exact_n = lambda n: (
            len(
                prom.samples(t0 - 1, t0 + 60).get(  # noqa: E731
                    ("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t"), []
                )
            )
            == n
        )
        wait_for(lambda: wait_exact_n(10), 30, what="first rows")
        prom.stop()
        store.write(rows(T_KEY, t0 + 1, 300))
        wait_for(lambda: runner.health.errors["connection"] >= 1, 20, what="the outage noticed")
        prom.start()
        wait_for(lambda: runner.outbox.backlog() == 0, 60, what="the cursor past the backlog")
        refused = runner.health.errors["refused"]
        got = len(prom.samples(t0 - 1, t0 + 60)[("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t")])
        assert refused > 0 and got + refused == 310, (got, refused)
        ev = [e for e in store.events() if e["kind"] == "uplink_refused"]
        assert ev and all("out of order sample" in e["detail"] for e in ev)
        store.write(rows(T_KEY, t0 + 10, 5))
        wait_for(lambda: wait_exact_n(got + 5), 30, what="live rows after the refusals")
        print(f"no out-of-order window: {got} of 310 delivered, {refused} refused as out of order")
    finally:
        prom.stop()


@pytest.mark.prometheus
def test_prometheus_without_an_out_of_order_window_takes_a_strictly_ordered_backfill(tmp_path, stores, runners):
    """The same outage with ``live_during_backfill = false``: the backlog goes oldest first, so every row
    is newer than the last one Prometheus has: all 310 delivered, none refused."""
    if not Prometheus.available():
        pytest.skip("Debian's prometheus is not installed")
    prom = Prometheus(tmp_path / "prom-no-ooo", ooo_window="0s")
    prom.start()
    try:
        store = stores(tmp_path / "kelvinpi.db")
        runner = runners(store, prom.write_url, batch=100, send_status=False, live_during_backfill=False)
        t0 = now0()
        store.write(rows(T_KEY, t0, 10))
        wait_for(lambda: runner.health.sent == 10, 30, what="first rows")
        prom.stop()
        store.write(rows(T_KEY, t0 + 1, 300))
        wait_for(lambda: runner.health.errors["connection"] >= 1, 20, what="the outage noticed")
        prom.start()
        wait_for(lambda: runner.outbox.backlog() == 0, 60, what="the backlog sent")
        got = prom.samples(t0 - 1, t0 + 60)[("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t")]
        assert len(got) == 310 and not runner.health.errors["refused"]
    finally:
        prom.stop()


@pytest.mark.prometheus
def test_a_resend_after_a_crash_loses_no_new_sample_on_a_receiver_without_an_out_of_order_window(tmp_path):
    """kill -9 after a batch's 2xx but before its cursor move is committed: the next start resends it
    ahead of new rows, and Prometheus without a window refuses the resent ones as out of order. Every
    new row must still arrive (bisecting on newer suffixes committed a newer row first: 5 of 20 lost)."""
    if not Prometheus.available():
        pytest.skip("Debian's prometheus is not installed")
    prom = Prometheus(tmp_path / "prom-no-ooo", ooo_window="0s")
    prom.start()
    db = tmp_path / "kelvinpi.db"

    def runner(store: Store) -> RemoteWriteUplinkRunner:
        cfg = RemoteWriteUplink(kind="remote_write", url=prom.write_url, send_status=False, live_during_backfill=False)
        r = RemoteWriteUplinkRunner(cfg, 0, store, [SimpleNamespace(name=NODE)])
        r.outbox.start_from_now()
        return r

    def one_round(r: RemoteWriteUplinkRunner) -> int:  # what the runner's loop does once, without its thread
        batch = r.outbox.take()
        r.deliver(batch)
        r.outbox.ack(batch)
        return len(batch)

    try:
        t0 = now0()
        store = Store(db)
        r = runner(store)
        store.write([Sample(T_KEY, t0 + i, 1.0 + i, 0) for i in range(10)])
        assert one_round(r) == 10 and store.records_queued() == 1  # delivered; the cursor move not yet durable
        store._journal._f.close()  # kill -9: nothing more reaches the disk
        store._wconn.close()
        store = Store(db)
        r = runner(store)
        assert r.outbox.backlog() == 10  # the delivered batch is due again
        store.write([Sample(T_KEY, t0 + 10 + i, 11.0 + i, 0) for i in range(20)])
        assert one_round(r) == 30
        series = ("kelvinpi_temperature_kelvin", T_KEY.name)
        got = wait_for(
            lambda: (lambda g: g if len(g) >= 30 else None)(prom.samples(t0 - 1, t0 + 60).get(series, [])),
            30,
            what="all 30 rows in Prometheus",
        )
        assert sorted(v for _t, v in got) == [1.0 + i for i in range(30)]
        assert r.outbox.backlog() == 0 and 1 <= r.health.errors["refused"] <= 10  # only resent rows refused
        store.close()
    finally:
        prom.stop()


def test_malformed_series_refused_alone_by_halving(tmp_path, prometheus, stores, runners):
    """A refusal that is not about age (a 400 for a duplicate timestamp with another value) is narrowed
    down to the one sample; the others of the request are delivered."""
    prometheus.start()
    store = stores(tmp_path / "kelvinpi.db")
    runner = runners(store, prometheus.write_url, send_status=False)
    t0 = now0()
    store.write(rows(T_KEY, t0, 10))
    wait_exact_values = lambda: (
        len(
            prometheus.samples(t0 - 1, t0 + 60).get(  # noqa: E731
                ("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t"), []
            )
        )
        == 10
    )
    wait_for(wait_exact_values, 30, what="first rows")
    # another writer's sample at the time of our next one, with another value
    t_dup = round((t0 + 1) * 1000)
    cfg = RemoteWriteUplink(kind="remote_write", url=prometheus.write_url)
    from appliance.uplinks.remote_write import Point, series_labels

    fi = next(f for f in store.fields() if f.name == T_KEY.name)
    Sender(cfg, "other").post([Point(t_dup, series_labels(fi, {}), 99.0)])
    store.write(rows(T_KEY, t0 + 1, 20))
    ev = wait_for(lambda: [e for e in store.events() if e["kind"] == "uplink_refused"], 30, what="refused event")
    assert runner.health.errors["refused"] == 1 and "duplicate sample for timestamp" in ev[0]["detail"]
    got = prometheus.samples(t0 - 1, t0 + 60)[("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t")]
    assert len(got) == 30 and (t_dup, 99.0) in got


NGINX_PAGE = (
    "<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


# a Java gateway's error page (its route table broken): the exception's text says "out of bounds"
JAVA_PAGE = (
    b"<html><body><h1>HTTP Status 500 - Internal Server Error</h1><p><b>Exception</b></p>"
    b"<pre>java.lang.ArrayIndexOutOfBoundsException: Index 3 out of bounds for length 3\n"
    b"\tat com.example.gateway.RouteTable.lookup(RouteTable.java:42)</pre></body></html>"
)
# a gateway's HTML 400 whose help text links a troubleshooting page about "out of order sample"
DOC_PAGE = (
    b"<html><head><title>400 Bad Request</title></head><body><h1>Bad Request</h1>"
    b"<p>The gateway could not route /api/v1/write. If your client reports 'out of order sample' see "
    b"<a href='https://example.org/docs/remote-write#out-of-order-sample'>the docs</a>.</p></body></html>"
)


class RouteProxy:
    """An HTTP reverse proxy on loopback in front of a receiver, whose route can be wrong.

    ``mode``: "forward" (to ``/api/v1/write`` upstream, answer relayed), "wrong-path" (forwarded to a
    path the receiver does not serve, its answer relayed: VictoriaMetrics' 400 "unsupported path
    requested"), or a status the proxy answers itself: "401", "405", "413", "html-400" (nginx's pages).
    Every request is decoded and its sample count kept with the status it got (``answered``).
    """

    def __init__(self, upstream: str, mode: str) -> None:
        import cramjam

        from appliance.uplinks.remote_write import WriteRequest

        self.upstream, self.mode = upstream, mode
        self.retry_after = "300"  # what a 429 asks for
        self.answered: list[tuple[int, int]] = []  # (status, samples in the request)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
                n = sum(len(ts.samples) for ts in req.timeseries)
                status, ctype, answer = proxy.answer(body, self.headers)
                proxy.answered.append((status, n))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(answer)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="metrics"')
                if status == 429:
                    self.send_header("Retry-After", proxy.retry_after)
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: bytes, headers) -> tuple[int, str, bytes]:
        mode = self.mode
        if mode in ("forward", "wrong-path"):
            path = "/api/v1/write" if mode == "forward" else "/insert/0/prometheus/api/v1/write"
            fwd = {k: headers[k] for k in ("Content-Type", "Content-Encoding", "X-Prometheus-Remote-Write-Version")}
            req = urllib.request.Request(self.upstream + path, data=body, headers=fwd, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, "text/plain", r.read()
            except urllib.error.HTTPError as exc:
                return exc.code, "text/plain", exc.read()
        if mode == "401":
            return 401, "text/plain", b"Unauthorized\n"
        if mode == "405":
            return 405, "text/plain", b"Method Not Allowed\n"
        if mode == "429":
            return 429, "text/plain", b"rate limited\n"
        if mode == "java-500":
            return 500, "text/html", JAVA_PAGE
        if mode == "doc-400":
            return 400, "text/html; charset=utf-8", DOC_PAGE
        title = {"413": "413 Request Entity Too Large", "html-400": "400 Bad Request"}[mode]
        return int(title[:3]), "text/html", NGINX_PAGE.format(title).encode()

    def refused_requests(self) -> int:
        return sum(1 for status, _n in self.answered if status >= 300)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.victoria
@pytest.mark.parametrize(
    "mode,shown",
    [
        ("wrong-path", 'HTTP 400: remoteAddr: "127.0.0.1:'),
        ("401", "HTTP 401: Unauthorized"),
        ("405", "HTTP 405: Method Not Allowed"),
        ("413", "HTTP 413: 413 Request Entity Too Large 413 Request Entity Too Large nginx"),
        ("html-400", "HTTP 400: 400 Bad Request 400 Bad Request nginx"),
        ("java-500", "HTTP 500: HTTP Status 500 - Internal Server Error Exception java.lang."),
        ("doc-400", "HTTP 400: 400 Bad Request Bad Request The gateway could not route"),
    ],
)
def test_an_answer_about_the_route_keeps_every_sample(tmp_path, stores, runners, mode, shown):
    """A proxy in front of VictoriaMetrics answers for a while with an error that is not about the samples
    (a wrong path, 401, 405, 413, its own HTML 400): nothing is refused, nothing halved, the answer is in
    the health, the batch is retried with backoff; readings taken meanwhile wait too. Once the route is
    fixed, every stored sample arrives, exactly once (VictoriaMetrics without deduplication)."""
    if not VictoriaMetrics.available():
        pytest.skip("Debian's victoria-metrics is not installed")
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    proxy = RouteProxy(vm.base, mode)
    try:
        store = stores(tmp_path / "kelvinpi.db")
        runner = runners(store, proxy.url + "/api/v1/write", batch=100)
        t0 = now0()
        store.write(rows(T_KEY, t0, 150) + rows(R_KEY, t0, 150))
        wait_for(lambda: proxy.refused_requests() >= 2, 20, what="two answers from the wrong route")
        store.write(rows(T_KEY, t0 + 5, 50) + rows(R_KEY, t0 + 5, 50))  # readings taken meanwhile
        wait_for(lambda: proxy.refused_requests() >= 3, 20, what="a third answer from the wrong route")
        wait_for(lambda: runner.outbox.backlog() == 400, 10, what="all 400 rows waiting")
        bad = [n for status, n in proxy.answered if status >= 300]
        assert len(set(bad)) == 1, f"requests were cut down (halving): {bad[:20]}"  # the same whole batch, retried
        refused_events = lambda: [e for e in store.events() if e["kind"] == "uplink_refused"]  # noqa: E731
        assert runner.health.errors["refused"] == 0 and not refused_events()
        wait_for(lambda: runner.health.errors["http"] >= 3, 10, what="three answers in the health")  # after the proxy's
        assert not runner.health.connected
        assert runner.health.last_error.startswith(shown), runner.health.last_error
        assert "<" not in runner.health.last_error
        if mode == "wrong-path":
            assert 'unsupported path requested: "/insert/0/prometheus/api/v1/write"' in runner.health.last_error
        if mode == "413":  # what fixes it: the same batch is refused forever
            assert "lower `batch` for this uplink, now 100" in runner.health.last_error
        proxy.mode = "forward"
        got = wait_exact(store, vm, t0 - 1, t0 + 60, f"after the route is fixed ({mode})", timeout=60)
        assert len(got[("kelvinpi_temperature_kelvin", "LSA23JD::mxc_control_t")]) == 200
        assert len(got[("kelvinpi_reading_status", "LSA23JD::mxc_control_r")]) == 200
        wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
        assert runner.health.errors["refused"] == 0 and not refused_events()
        print(
            f"{mode}: {len(bad)} requests answered {bad and proxy.answered[0][0]}, 0 samples refused;"
            f" all {sum(len(v) for v in got.values())} delivered once"
        )
    finally:
        proxy.close()
        vm.stop()


def test_which_answers_refuse_samples():
    """The receivers' own texts (cited in remote_write.py) refuse samples; a route's answers do not."""
    from appliance.uplinks.remote_write import refusal

    assert refusal("too old sample") == "age"  # Prometheus 2.42, a 500
    assert refusal("out of bounds") == "age"
    assert refusal("out of order sample") == "age"
    assert (
        refusal(
            "the sample has been rejected because another sample with a more recent timestamp has already been"
            " ingested and out-of-order samples are not allowed (err-mimir-sample-out-of-order). The affected"
            " sample has timestamp 1970-01-19T05:30:43.969Z and is from series test"
        )
        == "age"
    )
    assert (
        refusal("the sample has been rejected because its timestamp is too old (err-mimir-sample-timestamp-too-old)")
        == "age"
    )
    assert refusal("duplicate sample for timestamp") == "sample"
    assert refusal("received a series with an invalid label: 'x' series: 'y' (err-mimir-label-invalid)") == "sample"
    # as the receivers write them, wrapped (newer Prometheus, Thanos' 409) or not
    assert refusal("too old sample\n", 500, "text/plain; charset=utf-8") == "age"
    assert refusal("out of order sample\n", 400, "text/plain; charset=utf-8") == "age"
    assert refusal("store locally for endpoint 127.0.0.1:1: add 3 samples: out of bounds", 409) == "age"
    assert refusal("duplicate sample for timestamp 17; overrides not allowed: existing 1, new value 2") == "sample"
    # a phrase quoted by somebody else: an HTML page, an exception's text, a 5xx that is not Prometheus'
    assert refusal(JAVA_PAGE.decode(), 500, "text/html") is None
    assert refusal(JAVA_PAGE.decode(), 400, "application/octet-stream") is None  # HTML, whatever it is labelled
    assert refusal(DOC_PAGE.decode(), 400, "text/html") is None
    assert refusal("java.lang.ArrayIndexOutOfBoundsException: Index 3 out of bounds for length 3", 400) is None
    assert refusal("panic: runtime error: index out of bounds [3] with length 3", 400) is None
    assert refusal("upstream said: out of order sample", 502) is None
    for route in (
        'remoteAddr: "127.0.0.1:1"; requestURI: /x; unsupported path requested: "/x"',
        NGINX_PAGE.format("400 Bad Request"),
        "Unauthorized",
        "cannot decompress request with length 1: snappy: corrupt input",
        "the request has been rejected because the tenant exceeded the ingestion rate limit"
        " (err-mimir-tenant-max-ingestion-rate)",
    ):
        assert refusal(route) is None, route


@pytest.mark.victoria
@pytest.mark.slow
def test_basic_auth_and_tls_verified(tmp_path, stores, runners):
    """victoria-metrics over https with basic auth: delivered with the right CA and password (from a
    0600 file); a wrong password is an error kept for retry (401), a CA that did not sign the
    certificate fails verification; a password file others can read stops the uplink, named."""
    from .support.routers import make_cert

    if not VictoriaMetrics.available():
        pytest.skip("Debian's victoria-metrics is not installed")
    key, cert = make_cert(tmp_path / "tls")
    _, other_ca = make_cert(tmp_path / "other", "other")
    vm = VictoriaMetrics(
        tmp_path / "vm",
        ca_file=cert,
        extra=[
            "-tls",
            f"-tlsCertFile={cert}",
            f"-tlsKeyFile={key}",
            "-httpAuth.username=kelvin",
            "-httpAuth.password=s3cret pass",
        ],
    )
    try:
        vm.start()
        url = vm.base
        pw = tmp_path / "password"
        pw.write_text("s3cret pass\n")
        os.chmod(pw, 0o600)
        bad_pw = tmp_path / "bad-password"
        bad_pw.write_text("wrong\n")
        os.chmod(bad_pw, 0o600)
        store = stores(tmp_path / "kelvinpi.db")
        good = runners(store, url + "/api/v1/write", username="kelvin", password_file=pw, ca_file=cert)
        wrong_pw = runners(store, url + "/api/v1/write?x=1", username="kelvin", password_file=bad_pw, ca_file=cert)
        wrong_ca = runners(store, url + "/api/v1/write?x=2", username="kelvin", password_file=pw, ca_file=other_ca)
        store.write(rows(T_KEY, now0(), 25))
        wait_for(lambda: good.health.sent == 25, 30, what="delivered over verified TLS with basic auth")
        wait_for(
            lambda: wrong_pw.health.errors["http"] >= 1 and wrong_ca.health.errors["connection"] >= 1,
            30,
            what="the wrong password and the wrong CA both failing",
        )
        assert "401" in wrong_pw.health.last_error and "CERTIFICATE_VERIFY_FAILED" in wrong_ca.health.last_error
        assert wrong_pw.outbox.backlog() == 25 and wrong_ca.outbox.backlog() == 25  # kept, not dropped
        assert "s3cret" not in wrong_pw.health.last_error
        # a secret others can read: that uplink does not start, the appliance does
        os.chmod(pw, 0o644)
        cfg = _config.parse(
            appliance_config(tmp_path, None, None).replace(
                "[polling]",
                '[[instrument]]\nmodel = "372"'
                '\nname = "X"\ntransport = "tcp"\nhost = "127.0.0.1"\nenabled = false\n\n[polling]',
            )
            + f'\n[[uplink]]\nkind = "remote_write"\nurl = "{url}/api/v1/write"\nusername = "kelvin"\n'
            f'password_file = "{pw}"\n'
        )
        built = build_uplinks(cfg.uplink, store, [i for i in cfg.instrument if i.enabled])
        assert isinstance(built[0], FailedUplink) and "chmod 600" in built[0].health.last_error
    finally:
        vm.stop()


@pytest.mark.slow
def test_bearer_token_is_sent(tmp_path, stores, runners):
    """token_file (0600) becomes ``Authorization: Bearer <token>`` on every request (a loopback
    receiver that answers 204 only to that header, 401 otherwise)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(204 if seen[-1] == "Bearer tok-123" else 401)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        tok = tmp_path / "token"
        tok.write_text("tok-123\n")
        os.chmod(tok, 0o600)
        store = stores(tmp_path / "kelvinpi.db")
        r = runners(store, f"http://127.0.0.1:{srv.server_address[1]}/api/v1/write", token_file=tok)
        store.write(rows(T_KEY, now0(), 5))
        wait_for(lambda: r.health.sent == 5, 20, what="delivered with the bearer token")
        assert set(seen) == {"Bearer tok-123"}
    finally:
        srv.shutdown()
        srv.server_close()


def test_config_errors_name_key_and_line():
    base = (
        '[[instrument]]\nmodel = "372"\nname = "A"\ntransport = "tcp"\nhost = "h"\n\n[[uplink]]\n'
        'kind = "remote_write"\n'
    )
    with pytest.raises(_config.ConfigError) as e:
        _config.parse(base + 'url = "ftp://x"\n')
    assert "<config>:9: uplink[0].url" in str(e.value)
    with pytest.raises(_config.ConfigError) as e:
        _config.parse(base + 'url = "http://x/api/v1/write"\nlabels = {"bad-name" = "x"}\n')
    assert "<config>:10: uplink[0].labels" in str(e.value) and "bad-name" in str(e.value)
    with pytest.raises(_config.ConfigError) as e:
        _config.parse(base + 'url = "http://x/api/v1/write"\nusername = "u"\n')
    assert "username needs password_file" in str(e.value)


def test_points_follow_the_status_rule():
    """A NULL (flagged) reading: no value sample, a status sample; send_status=false: values only."""
    from appliance.store import FieldInfo
    from appliance.uplinks.outbox import Batch

    f = FieldInfo(1, "N::a_t", "N", "a_t", "K", "", "")
    b = Batch(rows={1: [(1000, 0.5, 0), (2000, None, 0x81)]})
    got = [(dict(p.labels)["__name__"], p.t, p.value) for p in points(b, {1: f})]
    assert got == [
        ("kelvinpi_reading_status", 1000, 0.0),
        ("kelvinpi_temperature_kelvin", 1000, 0.5),
        ("kelvinpi_reading_status", 2000, 129.0),
    ]
    assert [p.t for p in points(b, {1: f}, send_status=False)] == [1000]


@pytest.mark.prometheus
@pytest.mark.victoria
@pytest.mark.slow
def test_whole_appliance_reconciled_with_the_ledgers(tmp_path, emu372, emu240):
    """The appliance polls both emulators and writes to prometheus and victoria-metrics through gates;
    both links are cut for a few seconds mid-run. After the instruments go quiet: nothing produced is
    lost, and each receiver holds exactly the stored samples (VictoriaMetrics: none twice), in the series
    a scrape of /metrics shows."""
    if not (Prometheus.available() and VictoriaMetrics.available()):
        pytest.skip("Debian's prometheus and victoria-metrics are needed")
    prom, vm = Prometheus(tmp_path / "prom"), VictoriaMetrics(tmp_path / "vm")
    prom.start()
    vm.start()
    gates = [Gate(prom.port), Gate(vm.port)]
    for g in gates:
        g.open()
    app = None
    try:
        extra = "".join(f'\n[[uplink]]\nkind = "remote_write"\nurl = "{g.url}/api/v1/write"\n' for g in gates)
        app = start_appliance(appliance_config(tmp_path, emu372, emu240, extra=extra))
        t_start = time.time() - 5
        wait_for(lambda: all(p.health.connected for p in app.pollers), 20, what="both instruments connected")
        wait_for(lambda: all(u.health.sent > 20 for u in app.uplinks), 20, what="both uplinks delivering")
        for g in gates:
            g.close()
        time.sleep(4)  # an outage of a few seconds: a backlog to deliver afterwards
        for g in gates:
            g.open()
        time.sleep(2)  # and readings taken after it, while the backlog goes out
        quiesce(emu372, emu240, app=app)  # nothing in flight, every reading written, when reconciled
        tally = reconcile(app.store, {"LSA23JD": emu372, "LSA24AZ": emu240})
        end = time.time() + 1
        for rcv in (prom, vm):
            got = wait_exact(app.store, rcv, t_start, end, "whole appliance", timeout=60)
            n = sum(len(v) for v in got.values())
            print(f"{rcv.name}: {n} samples in {len(got)} series, exactly the store's")
        assert all(u.health.errors["connection"] >= 1 for u in app.uplinks), "the outage was not noticed"
        # the same series, named the same, as a scrape of the appliance's /metrics finds
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(app.base_url + "/metrics", timeout=10).read().decode()
        scraped = {
            (s.name, s.labels["field"])
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name
            in (
                "kelvinpi_temperature_kelvin",
                "kelvinpi_resistance_ohms",
                "kelvinpi_sensor_volts",
                "kelvinpi_value",
                "kelvinpi_reading_status",
            )
        }
        assert scraped == set(got), scraped ^ set(got)
    finally:
        if app is not None:
            app.stop()
        prom.stop()
        vm.stop()
        for g in gates:
            g.close()
    print("remote write:", tally.line())
    assert tally.produced > 100 and tally.lost == 0 and tally.foreign == 0, tally.per_series


def test_a_sample_too_far_in_the_future_is_refused_alone():
    """ "out of bounds" is also a sample too far ahead (Prometheus' timeLimitAppender, Thanos Receive's
    too-far-in-future window). A receiver emulating that - a request holding any sample more than 10 min
    ahead is refused whole, 409 - gets 20 good samples of two series and one of them an hour ahead: only
    that one is refused, the 20 are stored (it was taken for the newest of an old series: 11 refused)."""
    import cramjam

    from appliance.uplinks.remote_write import Point, WriteRequest

    stored: list[tuple[int, float]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            req = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
            samples = [(s.timestamp, s.value) for ts in req.timeseries for s in ts.samples]
            if any(t > time.time() * 1000 + 600_000 for t, _ in samples):
                code, text = 409, b"store locally for endpoint 127.0.0.1:1: add 1 samples: out of bounds\n"
            else:
                stored.extend(samples)
                code, text = 204, b""
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/api/v1/write"
        s = Sender(RemoteWriteUplink(kind="remote_write", url=url), "uplink[0]")
        now = int(time.time() * 1000)
        v = (("__name__", "kelvinpi_temperature_kelvin"), ("field", "N::a_t"), ("node", "N"))
        st = (("__name__", "kelvinpi_reading_status"), ("field", "N::a_t"), ("node", "N"))
        pts = sorted(
            [Point(now - 60_000 + i * 1000, v, 1.0 + i) for i in range(10)]
            + [Point(now - 60_000 + i * 1000, st, 0.0) for i in range(10)]
            + [Point(now + 3_600_000, v, 99.0)]
        )
        refused = s.isolate(pts)
        assert [(p.t, p.value) for p, _ in refused] == [(now + 3_600_000, 99.0)], refused
        assert "out of bounds" in refused[0][1]
        assert sorted(stored) == sorted((p.t, p.value) for p in pts[:-1])
        print(f"future: 1 of 21 refused with {s.requests} requests")
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.slow  # waits out a Retry-After
def test_retry_after_is_honoured(tmp_path, stores, runners):
    """A 429 asking for 300 s (Retry-After) is not retried at 1, 2, 4 s: one request in the next 6 s, the
    wait shown in the health, the data kept; stopping the runner does not wait for it. An HTTP date
    is read too, and a wait longer than RETRY_AFTER_MAX is cut to it."""
    import email.utils

    proxy = RouteProxy("http://127.0.0.1:9", "429")
    try:
        store = stores(tmp_path / "kelvinpi.db")
        runner = runners(store, proxy.url + "/api/v1/write", batch=100)
        store.write(rows(T_KEY, now0(), 10))
        wait_for(lambda: runner.health.errors["http"] >= 1, 20, what="the first 429 in the health")
        time.sleep(6)  # backoff alone would have retried at about 1 s and 3 s
        assert len(proxy.answered) == 1, proxy.answered
        assert "retrying in 300 s, as its Retry-After asks" in runner.health.last_error, runner.health.last_error
        assert runner.outbox.backlog() == 10 and runner.health.errors["refused"] == 0
        t = time.monotonic()
        runner.stop()
        assert not runner.is_alive() and time.monotonic() - t < 10
    finally:
        proxy.close()

    def answer(value: str) -> urllib.error.HTTPError:
        import email.message

        m = email.message.Message()
        m["Retry-After"] = value
        return urllib.error.HTTPError("http://x", 429, "Too Many Requests", m, None)

    from appliance.uplinks.push import RETRY_AFTER_MAX, retry_after

    now = time.time()
    assert retry_after(answer("120")) == 120
    assert abs(retry_after(answer(email.utils.formatdate(now + 90, usegmt=True)), now) - 90) < 2
    assert retry_after(answer("86400")) == RETRY_AFTER_MAX
    assert retry_after(answer("soon")) is None
