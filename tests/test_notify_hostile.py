"""Delivery lanes against receivers that misbehave, on loopback: real ``Lane`` and ``Sender`` objects,
a real store in the test's directory, raw-socket receivers (tests/support/receivers.py) that answer in ways
urllib could not survive or mistook for a delivery.

For each fault: the lane's thread lives on, ``failures`` and ``last_error`` show the fault, and once
the receiver behaves (at once, for a 2xx whose body misbehaves) every notice arrives exactly once, in
order, by its ``X-Kelvinpi-Notice`` id, and the store has it recorded as sent.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time

import pytest

from appliance.config import EmailNotify, WebhookNotify
from appliance.notify import Lane, sender_for
from appliance.store import Store

from .conftest import wait_for
from .support.receivers import RawHTTP, RawSMTP

pytestmark = pytest.mark.slow  # hostile receivers waited out to the senders' deadlines

N = 6  # notices per test
TIMEOUT = 1.0  # each attempt's total deadline (cfg.timeout)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def secret(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text + "\n")
    os.chmod(p, 0o600)
    return str(p)


class Bench:
    """A store, a stop event and one lane; ``notices()`` records N notices and queues them."""

    def __init__(self, tmp_path, cfg) -> None:
        self.store = Store(tmp_path / "k.db")
        self.stop = threading.Event()
        self.lane = Lane(sender_for(cfg), self.store, self.stop)
        self.name = cfg.name

    def notices(self, n: int = N) -> list[int]:
        t = time.time()
        for i in range(1, n + 1):
            body = {
                "alarm": "mxc-warm",
                "event": "raised",
                "severity": "critical",
                "field": "LSA23JD::mxc_t",
                "value": 0.05 + i / 1000,
                "detail": "> 0.05",
                "time": "2026-12-06T03:12:07Z",
            }
            self.store.alarm_record("notice", i, t, "mxc-warm", "raised", json.dumps(body), json.dumps([self.name]))
            self.lane.put(
                {"id": i, "t": t, "alarm": "mxc-warm", "kind": "raised", "body": body, "targets": [self.name]}
            )
        return list(range(1, n + 1))

    def sent_in_store(self) -> list[int]:
        _, notices = self.store.alarm_load()
        return [n["id"] for n in notices if self.name in n["sent"]]

    def close(self) -> None:
        self.stop.set()
        self.lane.wake()
        self.lane.join(timeout=5)
        self.store.close()


def webhook(tmp_path, url: str, **kw) -> WebhookNotify:
    opts = dict(timeout=TIMEOUT, backoff_initial=0.05, backoff_max=0.3) | kw
    return WebhookNotify(kind="webhook", name="hook", url_file=secret(tmp_path, "hook-url", url), **opts)


@pytest.fixture
def bench_for(tmp_path):
    made: list = []

    def make(cfg) -> Bench:
        b = Bench(tmp_path, cfg)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def raw_http():
    made: list[RawHTTP] = []

    def make(answer) -> RawHTTP:
        r = RawHTTP(answer)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def delivered_once(bench: Bench, receiver, ids: list[int], accepted) -> None:
    """Every notice reached the receiver in an accepted attempt exactly once, in order, and is recorded."""
    wait_for(lambda: not bench.lane.is_alive() or bench.lane.backlog() == 0, 15, what="backlog drained")
    assert bench.lane.is_alive(), "the lane's thread ended"
    got = [a.notice for a in receiver.arrivals if accepted(a)]
    assert got == ids, f"accepted arrivals by notice id: {got}"
    assert bench.lane.sent == len(ids)
    assert bench.sent_in_store() == ids


def fails_then_recovers(bench: Bench, receiver, behave: threading.Event, shown: str, min_failures: int = 2) -> None:
    """The fault is counted and shown while the lane lives; then the receiver behaves and all go once."""
    ids = bench.notices()
    bench.lane.start()
    wait_for(
        lambda: not bench.lane.is_alive() or bench.lane.failures >= min_failures,
        15,
        what=f"{min_failures} failed attempts counted",
    )
    assert bench.lane.is_alive(), "the lane's thread ended on the fault"
    d = bench.lane.as_dict()
    assert d["last_error"] and shown in d["last_error"], d
    assert d["backlog"] == N and d["sent"] == 0, d
    bench_arrivals = len(receiver.arrivals)
    behave.set()
    delivered_once(bench, receiver, ids, lambda a: a.index >= bench_arrivals and a.method in ("POST", "DATA"))
    assert bench.lane.last_error is None


def switched(bad, good=lambda conn, a, srv: conn.sendall(OK)):
    """An answer that is ``bad`` until the returned event is set, then ``good``."""
    behave = threading.Event()

    def answer(conn, arrival, server):
        (good if behave.is_set() else bad)(conn, arrival, server)

    return answer, behave


# -- 1: a malformed answer ended the lane for good ------------------------------------------------------
MALFORMED = {
    "ssh-banner": (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "BadStatusLine"),
    "tls-alert": (b"\x15\x03\x01\x00\x02\x02\x46", "BadStatusLine"),
    "70kB-header": (
        b"HTTP/1.1 503 Service Unavailable\r\nX-Junk: " + b"j" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
        "LineTooLong",
    ),
}


@pytest.mark.parametrize("fault", list(MALFORMED))
def test_a_malformed_answer_is_a_failure_not_the_end(tmp_path, bench_for, raw_http, fault):
    """Main: ``BadStatusLine``/``LineTooLong`` is no OSError; ``Lane.run`` caught only DeliveryError, the
    thread ended, 6 notices waited, 0 were delivered, and the health said ``failures 0``."""
    garbage, shown = MALFORMED[fault]
    answer, behave = switched(lambda conn, a, srv: conn.sendall(garbage))
    receiver = raw_http(answer)
    bench = bench_for(webhook(tmp_path, f"http://127.0.0.1:{receiver.port}/hook/s3cr3t"))
    fails_then_recovers(bench, receiver, behave, shown)


def test_a_broken_chunk_after_a_2xx_is_still_a_delivery(tmp_path, bench_for, raw_http):
    """A 200 whose chunked body is nonsense: the receiver took the notice. Main: ``IncompleteRead``
    from reading the body ended the lane after the first arrival, and that one was never recorded."""

    def answer(conn, arrival, server):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz-not-a-size\r\n")

    receiver = raw_http(answer)
    bench = bench_for(webhook(tmp_path, f"http://127.0.0.1:{receiver.port}/hook"))
    ids = bench.notices()
    bench.lane.start()
    delivered_once(bench, receiver, ids, lambda a: True)
    assert bench.lane.failures == 0


# -- 2: redirects ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [301, 302, 307])
def test_a_redirect_is_an_error_shown_and_retried_never_followed(tmp_path, bench_for, raw_http, caplog, code):
    """Main: a 301/302 was followed with a bodiless GET whose 200 was recorded as sent (the content never
    arrived); a 307 was shown as a bare "HTTP 307". Now: an error naming the redirect, no Location shown,
    nothing followed, each notice POSTed again until the receiver takes it."""
    caplog.set_level(logging.INFO)

    where = "/moved/t0ps3cret"  # on the same receiver: where urllib's bodiless GET landed, answered 200

    def moved(conn, arrival, server):
        if arrival.method == "POST":
            conn.sendall(f"HTTP/1.1 {code} Moved\r\nLocation: {where}\r\nContent-Length: 0\r\n\r\n".encode())
        else:
            conn.sendall(OK)  # where urllib's bodiless GET landed

    answer, behave = switched(moved)
    receiver = raw_http(answer)
    bench = bench_for(webhook(tmp_path, f"http://127.0.0.1:{receiver.port}/hook"))
    fails_then_recovers(bench, receiver, behave, f"HTTP {code} redirect to another address")
    assert [a for a in receiver.arrivals if a.method != "POST"] == [], "a redirect was followed"
    assert "t0ps3cret" not in caplog.text


# -- 3: slow receivers ----------------------------------------------------------------------------------
def test_headers_then_silence_is_one_delivery(tmp_path, bench_for, raw_http):
    """A 200 with a Content-Length and then nothing. Main: the read of the body timed out, counted as
    not delivered, and each notice was POSTed (and answered 200) again and again."""

    def answer(conn, arrival, server):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        server.wait(20)

    receiver = raw_http(answer)
    bench = bench_for(webhook(tmp_path, f"http://127.0.0.1:{receiver.port}/hook"))
    ids = bench.notices()
    bench.lane.start()
    delivered_once(bench, receiver, ids, lambda a: True)
    assert bench.lane.failures == 0


def test_a_body_trickled_after_a_2xx_does_not_hold_the_lane(tmp_path, bench_for, raw_http):
    """A 200 whose 100-byte body comes a byte a second. Main: the lane sat in ``read()`` (each byte
    reset the receive timeout) for 100 s per notice with ``failures 0`` while the backlog grew."""

    def answer(conn, arrival, server):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            if server.stopping.is_set():
                return
            conn.sendall(b".")
            server.wait(1.0)

    receiver = raw_http(answer)
    bench = bench_for(webhook(tmp_path, f"http://127.0.0.1:{receiver.port}/hook"))
    ids = bench.notices()
    bench.lane.start()
    delivered_once(bench, receiver, ids, lambda a: True)
    assert bench.lane.failures == 0


SLOW_OR_BAD_HEADERS = {
    # the status line, then a header every 0.5 s: the headers outlast the deadline
    "slow-headers": lambda conn, server: [
        (conn.sendall(b"X-A: b\r\n"), server.wait(0.5)) for _ in range(10) if not server.stopping.is_set()
    ],
    # 101 headers: http.client refuses more than 100 (HTTPException)
    "101-headers": lambda conn, server: conn.sendall(b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n"),
    # the connection closed in the middle of a header
    "closed-mid-headers": lambda conn, server: conn.sendall(b"Content-Le"),
}


@pytest.mark.parametrize("rest", list(SLOW_OR_BAD_HEADERS))
def test_a_2xx_status_line_is_a_delivery_whatever_follows(tmp_path, bench_for, raw_http, rest):
    """Red-team (issue 21): a 200 whose headers came slower than the deadline was POSTed 5 times, one
    with 101 headers 14 times (``HTTPException``). The status line alone decides: each goes once."""

    def answer(conn, arrival, server):
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        SLOW_OR_BAD_HEADERS[rest](conn, server)

    receiver = raw_http(answer)
    bench = bench_for(webhook(tmp_path, f"http://127.0.0.1:{receiver.port}/hook"))
    ids = bench.notices(3)
    bench.lane.start()
    delivered_once(bench, receiver, ids, lambda a: True)
    assert bench.lane.failures == 0


TRICKLES = {
    # an error's status line, then a header a byte at a time: no answer ever completes (after a 2xx
    # status line the same trickle is a delivery: test_a_2xx_status_line_is_a_delivery_whatever_follows)
    "headers": b"HTTP/1.1 503 Service Unavailable\r\nX-Slow: ",
    # an error whose page comes a byte at a time
    "error-body": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n",
}


@pytest.mark.parametrize("part", list(TRICKLES))
def test_a_trickle_ends_at_the_total_deadline(tmp_path, bench_for, raw_http, part):
    """One deadline for the whole attempt (cfg.timeout), not per receive. Main: every byte of the
    headers reset the timeout, the lane hung with ``failures 0``. (The error-body case passed on main,
    which never read an error's body; it guards the new code, which does, within the deadline.)"""
    start = TRICKLES[part]

    def trickle(conn, arrival, server):
        conn.sendall(start)
        for _ in range(60):
            if server.stopping.is_set():
                return
            conn.sendall(b"x")
            server.wait(0.3)  # well inside the per-receive timeout, forever past the total deadline

    answer, behave = switched(trickle)
    receiver = raw_http(answer)
    bench = bench_for(webhook(tmp_path, f"http://127.0.0.1:{receiver.port}/hook"))
    shown = f"no complete answer within {TIMEOUT:g} s" if part == "headers" else "HTTP 503"
    t0 = time.monotonic()
    fails_then_recovers(bench, receiver, behave, shown, min_failures=1)
    assert time.monotonic() - t0 < 12  # two deadlines and the backoff, not the trickle's 18 s


def test_5xx_then_2xx_delivers_each_once(tmp_path, bench_for, raw_http):
    """A receiver that fails with a 503 (its error page cut short), then recovers. Main passed this one
    too (urllib's HTTPError); kept as the guard of the new path, which reads an error's body."""

    def unavailable(conn, arrival, server):
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 500\r\n\r\n<html>503")

    answer, behave = switched(unavailable)
    receiver = raw_http(answer)
    bench = bench_for(webhook(tmp_path, f"http://127.0.0.1:{receiver.port}/hook"))
    fails_then_recovers(bench, receiver, behave, "HTTP 503", min_failures=3)


# -- 1 (URL): userinfo ----------------------------------------------------------------------------------
def test_a_url_with_userinfo_is_basic_auth(tmp_path, bench_for, raw_http, caplog):
    """``http://user:pw@host:port/hook``. Main: urllib took ``kelvin:p%40ss-w0rd@127.0.0.1`` for the host
    name (gaierror, retried forever, 0 delivered; without a port after it, ``p%40ss-w0rd@host`` was
    taken for the port, ``InvalidURL``, and the lane's thread ended)."""
    caplog.set_level(logging.INFO)
    receiver = raw_http(lambda conn, a, srv: conn.sendall(OK))
    bench = bench_for(webhook(tmp_path, f"http://kelvin:p%40ss-w0rd@127.0.0.1:{receiver.port}/hook"))
    ids = bench.notices()
    bench.lane.start()
    delivered_once(bench, receiver, ids, lambda a: True)
    want = "Basic " + base64.b64encode(b"kelvin:p@ss-w0rd").decode()
    assert {a.headers.get("authorization") for a in receiver.arrivals} == {want}
    assert all(a.request_line == "POST /hook HTTP/1.1" for a in receiver.arrivals)
    assert "w0rd" not in caplog.text


@pytest.mark.parametrize(
    "url, said",
    [
        ("http://127.0.0.1:99999/hook", "port is not a number"),
        ("http://127.0.0.1:port/hook", "port is not a number"),
        ("http://127.0.0.1/hook with-space", "space or a control character"),
    ],
)
def test_a_url_that_cannot_work_refuses_the_target_at_start(tmp_path, url, said):
    """Refused when the target is built, naming the file and never quoting the URL (main: a bad port
    started the lane, whose thread then ended on ``InvalidURL`` with the URL in the traceback)."""
    with pytest.raises(PermissionError) as e:
        sender_for(webhook(tmp_path, url))
    assert "notify[hook].url_file" in str(e.value) and said in str(e.value)
    assert "127.0.0.1" not in str(e.value)


# -- 4: SMTP --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quit", [b"421 closing, busy", None], ids=["quit-421", "hang-up-at-quit"])
def test_mail_accepted_after_data_is_delivered_whatever_quit_answers(tmp_path, bench_for, quit):
    """250 after DATA: the server has the mail. Main: ``with smtplib.SMTP`` raised on a QUIT answered
    421, the lane took it as not delivered and sent the same mail again forever. (A hang-up at QUIT
    passed on main: kept as the guard of the new QUIT handling.)"""
    server = RawSMTP(quit)
    try:
        cfg = EmailNotify(
            kind="email",
            name="mail",
            host="127.0.0.1",
            port=server.port,
            starttls=False,
            sender="kelvinpi@lab.example",
            to=["cryo@lab.example"],
            timeout=TIMEOUT,
            backoff_initial=0.05,
            backoff_max=0.3,
        )
        bench = bench_for(cfg)
        ids = bench.notices()
        bench.lane.start()
        delivered_once(bench, server, ids, lambda a: True)
        time.sleep(0.5)  # a lane that resends would have sent the first one again by now
        assert [a.notice for a in server.arrivals] == ids
        assert bench.lane.failures == 0
    finally:
        server.stop()


# -- the push uplinks share the helper ------------------------------------------------------------------
def test_push_uplinks_post_once_has_the_total_deadline(raw_http):
    """``post_once`` (InfluxDB, remote write) goes through the same helper: an error status line followed by a
    header trickled forever ends at the deadline as a URLError (retried by the runner, as a failed
    connection was). Main: each byte reset urllib's receive timeout; the call did not return."""
    import urllib.error
    import urllib.request

    from appliance.uplinks.push import post_once

    def trickle(conn, arrival, server):
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nX-Slow: ")  # a 2xx status line would be taken
        for _ in range(60):
            if server.stopping.is_set():
                return
            conn.sendall(b"x")
            server.wait(0.3)

    receiver = raw_http(trickle)
    req = urllib.request.Request(f"http://127.0.0.1:{receiver.port}/api/v2/write", data=b"m v=1\n", method="POST")
    result: dict = {}

    def call():
        try:
            with post_once(req, TIMEOUT) as r:
                result["status"] = r.status
        except Exception as exc:  # noqa: BLE001 - what it raised is the result
            result["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(8)  # the trickle lasts 18 s; the deadline is 1 s
    assert not t.is_alive(), "post_once still reading the trickle"
    assert isinstance(result.get("error"), urllib.error.URLError), result
    assert "no complete answer within 1 s" in str(result["error"].reason)


def test_an_smtp_greeting_trickled_forever_ends_at_the_total_deadline(tmp_path, bench_for):
    """A server that greets with an endless multi-line "220-" banner, a line every 0.3 s (inside the
    per-receive timeout). Main: smtplib read the greeting inside ``SMTP(host, port)``, before the
    deadline watched the socket, so the lane hung there with ``failures 0`` until the server let go."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()
    connections: list[float] = []

    def talk(c: socket.socket) -> None:
        try:
            for _ in range(100):  # 30 s at most, far past the deadline
                if stop.is_set():
                    return
                c.sendall(b"220-still saying hello\r\n")
                stop.wait(0.3)
        except OSError:
            pass
        finally:
            c.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            connections.append(time.monotonic())
            threading.Thread(target=talk, args=(c,), daemon=True).start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        cfg = EmailNotify(
            kind="email",
            name="mail",
            host="127.0.0.1",
            port=srv.getsockname()[1],
            starttls=False,
            sender="kelvinpi@lab.example",
            to=["cryo@lab.example"],
            timeout=TIMEOUT,
            backoff_initial=0.05,
            backoff_max=0.3,
        )
        bench = bench_for(cfg)
        bench.notices(1)
        bench.lane.start()
        wait_for(lambda: bench.lane.failures >= 2, 10, what="two attempts ended by the deadline")
        assert bench.lane.is_alive()
        assert f"no complete answer within {TIMEOUT:g} s" in (bench.lane.last_error or ""), bench.lane.last_error
        assert len(connections) >= 2  # retried on a new connection each time
    finally:
        stop.set()
        server.join(timeout=5)
        srv.close()
