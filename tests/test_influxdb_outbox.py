"""Store-and-forward to InfluxDB by sequence cursor, end to end with real parts: SQLite files through
appliance.store.Store, Debian's influxd 1.x, and TCP on 127.0.0.1 (a gate that cuts the link, a
listener that answers garbage). Every count is what InfluxDB itself reports over its /query API.

Each test is a defect of the per-series timestamp cursors this design replaced: a backlog over one
batch stalling live data, rows lost to a second outage during a backfill or to a clock step, rows
skipped after a restart before the first acknowledgement, a runner killed by a non-HTTP answer, by
one point InfluxDB refuses, or by an SQLite error while acknowledging.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing, suppress
from types import SimpleNamespace

import pytest

from appliance.config import InfluxUplink
from appliance.naming import SeriesKey
from appliance.samples import Sample, SampleQueue
from appliance.store import Store
from appliance.uplinks.influxdb import InfluxUplinkRunner

from .conftest import fill_disk, free_port, wait_for

NODE = "LSA23JD"
MEAS = f"observatory.{NODE}"
T_KEY = SeriesKey(NODE, "mxc_control_t", "K", "mxc_control", "mixing chamber", ocs="control_T")
R_KEY = SeriesKey(NODE, "mxc_control_r", "Ohm", "mxc_control", "mixing chamber", ocs="control_R")
P_KEY = SeriesKey(NODE, "heater_p", "W", "heater", "sample heater", ocs="heater_P")


def rows(key: SeriesKey, t0: float, n: int, step: float = 0.01) -> list[Sample]:
    """``n`` samples of one series, ``step`` seconds apart (distinct milliseconds, so InfluxDB keeps each)."""
    return [Sample(key, t0 + i * step, 0.01 + i * 1e-6, 0) for i in range(n)]


def ms(t: float) -> int:
    return int(t * 1000 + 0.5)


def now0() -> float:
    return float(int(time.time()) - 120)


def failures(runner) -> int:
    return sum(runner.health.errors.values())


@pytest.fixture
def stores():
    """Open (and start) stores; all stopped and closed at the end."""
    made: list[Store] = []

    def open_store(path) -> Store:
        s = Store(path, commit_interval=0.2)
        s.start(SampleQueue(100_000))
        made.append(s)
        return s

    yield open_store
    for s in reversed(made):
        close_store(s)


def close_store(s: Store) -> None:
    s.stop()
    s.close()


@pytest.fixture
def store(stores, tmp_path):
    return stores(tmp_path / "kelvinpi.db")


@pytest.fixture
def runners(stores):
    """Start InfluxDB uplink runners as build_uplinks does; all stopped (before the stores close) at the end."""
    made: list[InfluxUplinkRunner] = []

    def start(store: Store, url: str, batch: int = 500) -> InfluxUplinkRunner:
        cfg = InfluxUplink(kind="influxdb", url=url, database="ocs_feeds", batch=batch)
        r = InfluxUplinkRunner(cfg, 0, store, [SimpleNamespace(name=NODE, model="372")])
        r.start()
        made.append(r)
        return r

    yield start
    for r in made:
        r.stop()
        assert not r.is_alive(), "runner did not stop"


class Gate:
    """A TCP forwarder on loopback in front of influxd: open, closed (connection refused), or open for
    a number of connections and then closed by itself. urllib opens one connection per request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.passed = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._budget: int | None = None

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self, budget: int | None = None) -> None:
        with self._lock:
            self._budget = budget
            if self._listener is None:
                s = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
                s.settimeout(0.1)
                self._listener = s
                threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def _accept(self, s: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not s:
                    return
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.passed += 1
                if self._budget is not None:
                    self._budget -= 1
                    if self._budget <= 0 and self._listener is s:
                        s.close()
                        self._listener = None
            up = socket.create_connection(self.upstream, timeout=10)
            conn.settimeout(30)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                src.shutdown(socket.SHUT_RD)


class Garbage:
    """A TCP listener that reads the request and answers bytes that are not HTTP, then hangs up.

    ``answer``: the bytes, or a function of the request's bytes that returns them."""

    def __init__(self, port: int, answer: bytes | Callable[[bytes], bytes] = b"SSH-2.0-nope\r\n") -> None:
        self.answer, self.answered = answer, 0
        self._sock = socket.create_server(("127.0.0.1", port))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                buf = b""
                try:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    head, _, body = buf.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":", 1)[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        0,
                    )
                    while len(body) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                    conn.sendall(self.answer(buf) if callable(self.answer) else self.answer)
                    self.answered += 1
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


# -- 1 -------------------------------------------------------------------------------------------------
def test_backlog_over_one_batch_is_delivered_and_live_data_keeps_flowing(store, influx, runners):
    """550 rows of one series at once (batch 500): the first batch is backfill plus the newest rows;
    the per-series cursors then found nothing below the rows sent live and stalled for good."""
    runner = runners(store, influx.url, batch=500)
    t0 = now0()
    assert store.write(rows(T_KEY, t0, 550)) == 550
    wait_for(lambda: influx.count(MEAS, "control_T") == 550, 30, what="the 550-row backlog delivered")
    assert store.write(rows(T_KEY, t0 + 10, 10)) == 10
    wait_for(lambda: influx.count(MEAS, "control_T") == 560, 30, what="later rows delivered after the backlog")
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
    assert runner.is_alive() and runner.health.sent >= 560


# -- 2 -------------------------------------------------------------------------------------------------
def test_two_outages_during_one_backfill_lose_nothing(store, influx, runners):
    """The link to InfluxDB goes down, comes back for three batches of the backfill, goes down again
    while more rows are stored, then comes back: InfluxDB ends with exactly what the store holds."""
    gate = Gate(influx.http_port)
    gate.open()
    try:
        runner = runners(store, gate.url, batch=100)
        t0 = now0()
        stored = store.write(rows(T_KEY, t0, 10))
        wait_for(lambda: influx.count(MEAS, "control_T") == 10, 20, what="first rows delivered")
        gate.close()  # outage 1
        stored += store.write(rows(T_KEY, t0 + 1, 1000))
        wait_for(lambda: runner.health.errors["connection"] >= 1, 20, what="the uplink noticed outage 1")
        through = gate.passed
        gate.open(budget=3)  # back for three requests of the backfill, then outage 2
        wait_for(
            lambda: gate.passed == through + 3 and not gate.is_open, 30, what="three backfill batches through the gate"
        )
        before = failures(runner)
        wait_for(lambda: failures(runner) > before, 20, what="the uplink noticed outage 2")
        mid = influx.count(MEAS, "control_T")
        assert 10 < mid < stored, f"outage 2 must fall inside the backfill ({mid} of {stored} delivered)"
        stored += store.write(rows(T_KEY, t0 + 20, 300))  # stored during outage 2
        gate.open()
        wait_for(lambda: influx.count(MEAS, "control_T") == stored, 60, what=f"all {stored} stored rows in InfluxDB")
        wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
        in_store = store.data([T_KEY.name], t0 - 1, t0 + 60, max_points=None, now=t0 + 60)[T_KEY.name]
        assert influx.count(MEAS, "control_T") == stored == len(in_store.t)
        assert runner.is_alive()
    finally:
        gate.close()


# -- 3 -------------------------------------------------------------------------------------------------
def test_clock_step_back_during_an_outage_hides_nothing(store, influx, runners):
    """While InfluxDB is down the clock steps back two hours: the samples stored after the step carry
    earlier times than those already sent (and, being over an hour old, get sealed into blocks);
    all are delivered, and so is a series first seen after the step."""
    runner = runners(store, influx.url)
    t0 = now0()
    n = store.write(rows(T_KEY, t0, 20))
    wait_for(lambda: influx.count(MEAS, "control_T") == 20, 20, what="rows before the outage delivered")
    influx.stop()
    n += store.write(rows(T_KEY, t0 + 1, 20))
    wait_for(lambda: runner.health.errors["connection"] >= 1, 20, what="the uplink noticed the outage")
    stepped = t0 - 7200  # the clock steps back two hours
    n += store.write(rows(T_KEY, stepped, 20))
    n_r = store.write(rows(R_KEY, stepped, 15))
    store.seal()  # (the writer does this every 30 s) the stepped-back hour goes into a block
    assert store.sealed_blocks > 0, "the stepped-back hour should be sealed into blocks"
    influx.start()
    wait_for(
        lambda: influx.count(MEAS, "control_T") == n and influx.count(MEAS, "control_R") == n_r,
        60,
        what=f"{n} + {n_r} rows delivered across the clock step",
    )
    res = influx.query(f'SELECT count("control_T") FROM "{MEAS}" WHERE time < {ms(t0)}ms')["results"][0]
    assert res["series"][0]["values"][0][1] == 20  # the stepped-back rows themselves
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
    assert runner.is_alive()


# -- 4 -------------------------------------------------------------------------------------------------
def test_restart_before_the_first_acknowledgement(tmp_path, influx_server, stores, runners):
    """A fresh store; InfluxDB unreachable from the start (its port closed); the runner starts, fails,
    stops; the appliance reboots (new Store and runner on the same file); then InfluxDB comes up:
    everything stored before and after the reboot is delivered."""
    path = tmp_path / "kelvinpi.db"
    store = stores(path)
    runner = runners(store, influx_server.url)
    t0 = now0()
    n_t = store.write(rows(T_KEY, t0, 30))
    n_r = store.write(rows(R_KEY, t0, 30))
    wait_for(lambda: runner.health.errors["connection"] >= 1, 20, what="the uplink failed to connect")
    runner.stop()
    assert not runner.is_alive()
    close_store(store)
    # reboot
    store = stores(path)
    runner = runners(store, influx_server.url)
    n_t += store.write(rows(T_KEY, t0 + 5, 20))
    n_r += store.write(rows(R_KEY, t0 + 5, 20))
    influx_server.start()
    influx_server.create_db()
    wait_for(
        lambda: influx_server.count(MEAS, "control_T") == n_t and influx_server.count(MEAS, "control_R") == n_r,
        60,
        what=f"{n_t} + {n_r} rows from before and after the reboot delivered",
    )
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
    assert runner.is_alive()


# -- 5 -------------------------------------------------------------------------------------------------
def test_non_http_listener_does_not_kill_the_runner(store, influx_server, runners):
    """Something that is not HTTP on InfluxDB's port (BadStatusLine is no OSError): the runner stays
    up and shows why; once the real influxd listens there, the data is delivered."""
    garbage = Garbage(influx_server.http_port)
    try:
        runner = runners(store, influx_server.url)
        n = store.write(rows(T_KEY, now0(), 40))
        wait_for(
            lambda: not runner.is_alive() or (garbage.answered >= 2 and runner.health.errors["connection"] >= 2),
            30,
            what="two garbage answers counted",
        )
        time.sleep(0.3)  # a moment in which a runner killed by the second answer would end
        assert runner.is_alive(), "a non-HTTP answer killed the runner"
        h = runner.health.as_dict()
        assert h["connected"] is False and h["errors"]["connection"] >= 2
        assert "BadStatusLine" in h["last_error"] and "SSH-2.0-nope" in h["last_error"], h
    finally:
        garbage.close()
    influx_server.start()  # the real server on the same port
    influx_server.create_db()
    wait_for(lambda: influx_server.count(MEAS, "control_T") == n, 90, what="data delivered once InfluxDB listens")
    n += store.write(rows(T_KEY, now0() + 30, 10))
    wait_for(lambda: influx_server.count(MEAS, "control_T") == n, 30, what="later data delivered")
    assert runner.is_alive() and runner.health.connected


# -- 6 -------------------------------------------------------------------------------------------------
def test_one_refused_point_is_skipped_named_and_the_rest_delivered(store, influx, runners):
    """InfluxDB refuses one point (400: field type conflict, the field exists as a string): the other
    points of the batch are delivered, the refused one is named in an ``uplink_refused`` event, and
    later data keeps flowing."""
    t0 = now0()
    t_bad = t0 + 0.255  # between two good rows: a line of its own
    influx.write([f'{MEAS},feed=temperatures heater_P="off" {ms(t_bad)}'])  # another writer made it a string
    runner = runners(store, influx.url)
    good = rows(T_KEY, t0, 50)
    assert store.write(good[:25] + [Sample(P_KEY, t_bad, 1.5, 0)] + good[25:]) == 51
    wait_for(lambda: influx.count(MEAS, "control_T") == 50, 30, what="the good points delivered")

    def refused():
        return [e for e in store.events() if e["kind"] == "uplink_refused"]

    events = wait_for(refused, 20, what="an uplink_refused event")
    assert len(events) == 1
    detail = events[0]["detail"]
    assert f"heater_P=1.5 {ms(t_bad)}" in detail and "field type conflict" in detail, detail
    assert runner.health.errors["refused"] == 1
    assert store.write(rows(T_KEY, t0 + 5, 10)) == 10
    wait_for(lambda: influx.count(MEAS, "control_T") == 60, 30, what="later data delivered")
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
    assert runner.is_alive() and len(refused()) == 1
    assert influx.count(MEAS, "heater_P") == 1  # still only the other writer's string


# -- 7 -------------------------------------------------------------------------------------------------
def test_sqlite_error_while_acknowledging_does_not_kill_the_runner(small_disk, influx, stores, runners):
    """The card fills while InfluxDB is down; when it comes back the acknowledgement cannot be
    made durable (for real, on a full tmpfs: neither the journal nor SQLite's WAL can grow). The
    runner goes on; once space is freed the cursor is committed and later data flows."""
    store = stores(small_disk / "kelvinpi.db")
    runner = runners(store, influx.url)
    t0 = now0()
    n = store.write(rows(T_KEY, t0, 20))
    wait_for(lambda: influx.count(MEAS, "control_T") == 20, 20, what="rows before the outage delivered")
    influx.stop()
    n += store.write(rows(T_KEY, t0 + 1, 30))
    wait_for(lambda: runner.health.errors["connection"] >= 1, 20, what="the uplink noticed the outage")
    with closing(sqlite3.connect(store.path)) as c:  # an empty WAL: the next commit must grow it
        assert c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    filler = small_disk / "filler"
    fill_disk(filler)
    errors = store.write_errors
    try:
        influx.start()
        wait_for(lambda: influx.count(MEAS, "control_T") == n, 60, what="the backlog delivered on a full disk")
        wait_for(
            lambda: not runner.is_alive() or store.write_errors > errors,
            20,
            what="the cursor commit failing on the full disk",
        )
        assert runner.is_alive(), "an SQLite error while acknowledging killed the runner"
        assert "full" in (store.last_error or "").lower(), store.last_error
        time.sleep(2)  # the runner keeps looping while the commits fail
        assert runner.is_alive()
    finally:
        filler.unlink()
    position = runner.outbox.position
    wait_for(
        lambda: (store.load_cursor(runner.outbox.name) or (0,))[0] >= position,
        20,
        what="the cursor committed once space is free",
    )
    n += store.write(rows(T_KEY, t0 + 5, 10))
    wait_for(lambda: influx.count(MEAS, "control_T") == n, 30, what="later data delivered")
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
    assert runner.is_alive()


@pytest.mark.parametrize(
    "answer, shown",
    [
        (  # a proxy whose backend restarts: an error page cut short
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 500\r\n\r\n<html>502 Bad</html>",
            "HTTP 502: (no readable body: IncompleteRead",
        ),
        (  # urllib followed it with a GET without the body; the 200 at the end was taken as written
            lambda req: (
                b"HTTP/1.1 301 Moved Permanently\r\nLocation: /moved/write\r\nContent-Length: 0\r\n\r\n"
                if req.startswith(b"POST")
                else b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            ),
            "HTTP 301",
        ),
        (  # a 400 about the setup, not the points: every point was isolated and skipped for good
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 45\r\n\r\n"
            b"The plain HTTP request was sent to HTTPS port",
            "HTTP 400: The plain HTTP request was sent to HTTPS port",
        ),
        (  # an API gateway in front of InfluxDB, its route wrong: "invalid" once counted as a refusal (8 of 8)
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 41\r\n\r\n"
            b'{"message": "Invalid API route: /write"}\n',
            'HTTP 400: {"message": "Invalid API route: /write"}',
        ),
        (  # a proxy's body limit: a smaller batch is the fix, the points are not wrong
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/html\r\nContent-Length: 62\r\n\r\n"
            b"<html><h1>413 Request Entity Too Large</h1><p>nginx</p></html>",
            "HTTP 413: <html><h1>413 Request Entity Too Large",
        ),
        (  # InfluxDB's write answers 204; a 200 page is not a write
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 14\r\n\r\n<html>hi</html",
            "InfluxDB answered 200",
        ),
    ],
    ids=[
        "error-page-cut-short",
        "redirect",
        "400-not-about-the-points",
        "gateway-json-400",
        "gateway-413",
        "200-with-a-page",
    ],
)
def test_an_answer_that_is_no_write_keeps_the_data_and_the_runner(store, influx_server, runners, answer, shown):
    """Each answer once acknowledged readings that were never written, skipped them as refused, or
    ended the runner's thread with its health still saying connected."""
    garbage = Garbage(influx_server.http_port, answer)
    try:
        runner = runners(store, influx_server.url)
        n = store.write(rows(T_KEY, now0(), 40))
        wait_for(lambda: not runner.is_alive() or garbage.answered >= 2, 30, what="two answers")
        wait_for(lambda: not runner.is_alive() or failures(runner) >= 2, 10, what="two failures counted")
        assert runner.is_alive(), "the answer ended the runner"
        h = runner.health.as_dict()
        assert h["connected"] is False and shown in h["last_error"], h
        assert runner.outbox.backlog() == n and not h["errors"].get("refused") and h["sent"] == 0, h
    finally:
        garbage.close()
    influx_server.start()  # the real server on the same port
    influx_server.create_db()
    wait_for(lambda: influx_server.count(MEAS, "control_T") == n, 90, what="data delivered once InfluxDB answers")
    # the runner marks itself connected just after the write returns: wait for that, not race it
    wait_for(lambda: runner.health.connected, 10, what="the runner connected again")
    assert runner.is_alive() and not runner.health.errors["refused"]


def test_one_conflicting_field_does_not_take_the_nodes_other_readings(store, influx, runners):
    """One line carries every field of a node at one time: a type conflict on one field refused the
    line, and the other readings in it (InfluxDB would take them) were skipped with it."""
    t0 = now0()
    good = rows(T_KEY, t0, 10)
    influx.write([f'{MEAS},feed=temperatures control_R="text" {ms(t0 - 60)}'])  # another writer: a string field
    runner = runners(store, influx.url)
    assert store.write(good + [Sample(R_KEY, s.t, 100.0, 0) for s in good]) == 20
    wait_for(lambda: influx.count(MEAS, "control_T") == 10, 30, what="every control_T reading")
    wait_for(lambda: runner.health.errors["refused"] == 10, 10, what="the 10 control_R readings refused")
    wait_for(lambda: runner.outbox.backlog() == 0, 10, what="backlog 0")
    (ev,) = [e for e in store.events() if e["kind"] == "uplink_refused"]
    assert "refused 10 point(s)" in ev["detail"] and "field type conflict" in ev["detail"], ev


def test_only_influxdbs_own_refusals_drop_points():
    """InfluxDB's texts (measured on influxd 1.x, and 2.x's documented shapes) refuse points; a gateway's
    JSON that merely says "invalid", or any 413, does not."""
    from appliance.uplinks.influxdb import refuses_points

    conflict = (
        b'{"error":"partial write: field type conflict: input field \\"a\\" on measurement \\"m\\" is type'
        b' float, already exists as type string dropped=1"}\n'
    )
    assert refuses_points(400, conflict)
    assert refuses_points(400, b'{"error":"unable to parse \'m a=1 x\': point is invalid"}')
    assert refuses_points(400, b'{"error":"partial write: points beyond retention policy dropped=3"}')
    assert refuses_points(400, b'{"code":"invalid","message":"unable to parse \'m a=\': missing field value"}')
    assert refuses_points(
        422, b'{"code":"unprocessable entity","message":"failure writing points to database: partial write: x"}'
    )
    assert not refuses_points(400, b'{"message": "Invalid API route: /write"}')
    assert not refuses_points(400, b'{"error": "invalid request: see unable to parse"}')
    assert not refuses_points(413, b'{"error":"Request Entity Too Large"}')
    assert not refuses_points(404, b'{"error":"database not found: \\"nope\\""}')
