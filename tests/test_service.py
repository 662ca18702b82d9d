"""`kelvinpi run` as a process: systemd notify, watchdog, unplug/replug, SIGTERM, kill -9."""

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import appliance_config, wait_for
from .support.reconcile import stored, stored_count

pytestmark = pytest.mark.slow  # `kelvinpi run` in its own process, up to a minute


def start_service(tmp_path, cfg_text, notify_path=None, watchdog_usec=None):
    cfg = tmp_path / "kelvinpi.toml"
    cfg.write_text(cfg_text)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if notify_path:
        env["NOTIFY_SOCKET"] = str(notify_path)
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def web_port(proc, lines, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "front panel on http://" in line:
            return int(line.rsplit(":", 1)[1].strip("/\n "))
    raise AssertionError("service did not start:\n" + "".join(lines))


def health(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as r:
        return json.loads(r.read())


def test_notify_ready_watchdog_and_clean_sigterm(tmp_path, emu372, emu240):
    sock_path = tmp_path / "notify.sock"
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(str(sock_path))
    ns.settimeout(20)
    proc = start_service(tmp_path, appliance_config(tmp_path, emu372, emu240), sock_path, watchdog_usec=2_000_000)
    lines = []
    try:
        port = web_port(proc, lines)
        messages = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            any("READY=1" in m for m in messages) and sum("WATCHDOG=1" in m for m in messages) >= 3
        ):
            messages.append(ns.recv(4096).decode())
        assert any(m.startswith("READY=1") for m in messages)
        assert sum("WATCHDOG=1" in m for m in messages) >= 3
        written_before = wait_for(lambda: health(port)["store"]["written"])
        assert written_before > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "stopped;" in out and "Traceback" not in out
    # everything the service said it committed is in the file
    committed = int(out.split("stopped; ")[1].split()[0])
    conn = sqlite3.connect(tmp_path / "kelvinpi.db")
    assert stored_count(tmp_path / "kelvinpi.db") == committed
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_watchdog_starves_when_a_poller_hangs(tmp_path):
    """A poller blocked inside I/O must stop the watchdog pings (systemd then restarts us)."""
    from appliance.health import SystemdWatchdogPinger

    sent = []
    wd = SystemdWatchdogPinger(sent.append, ["a", "b"])
    wd.kick("a")
    wd.kick("b")
    wd.kick("a")
    assert sent == ["WATCHDOG=1"]
    for _ in range(5):
        wd.kick("a")  # b is stuck
    assert sent == ["WATCHDOG=1"]


def test_unplug_replug_gap_and_recovery(tmp_path, emu372, emu240):
    proc = start_service(tmp_path, appliance_config(tmp_path, emu372, emu240))
    lines = []
    try:
        port = web_port(proc, lines)
        n240 = lambda: next(i for i in health(port)["instruments"] if i["name"] == "LSA24AZ")["samples"]
        wait_for(lambda: all(i["connected"] for i in health(port)["instruments"]) and n240() >= 10)
        emu240.control("unplug 2.5")
        down = wait_for(lambda: [i for i in health(port)["instruments"] if not i["connected"]], timeout=10)
        assert down[0]["name"] == "LSA24AZ" and down[0]["errors"]
        # the 372 keeps polling while the 240 is gone
        n372 = lambda: next(i for i in health(port)["instruments"] if i["name"] == "LSA23JD")["samples"]
        before = n372()
        wait_for(lambda: n372() > before + 4)
        back = wait_for(lambda: all(i["connected"] for i in health(port)["instruments"]), timeout=20)
        assert back

        def kinds():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/events", timeout=5) as r:
                return [(e["node"], e["kind"]) for e in json.loads(r.read())["events"]]

        # the reconnect's event reaches the API within a commit of the health flag
        seen = wait_for(lambda: (k := kinds()).count(("LSA24AZ", "connected")) >= 2 and k, timeout=5)
        assert ("LSA24AZ", "disconnected") in seen
        # new 240 readings after the replug, committed
        t_back = time.time()
        wait_for(
            lambda: len(stored(tmp_path / "kelvinpi.db", "LSA24AZ::50k_plate_t", t_back)) >= 10,
            30,
            what="240 readings after the replug committed",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in out, out
    # the gap is visible: no 240 samples while it was unplugged, and none stored as numbers from garbage
    ts = [t for t, _ in stored(tmp_path / "kelvinpi.db", "LSA24AZ::50k_plate_t")]
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert max(gaps) >= 2.0


def test_rejected_card_config_shows_in_health(tmp_path, emu372, emu240):
    (tmp_path / "config-error.txt").write_text("kelvinpi.toml:2: instrument[0].model: Input should be '372' or '240'\n")
    proc = start_service(tmp_path, appliance_config(tmp_path, emu372, emu240))
    lines = []
    try:
        port = web_port(proc, lines)
        assert "instrument[0].model" in health(port)["config_error"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_bad_config_exits_2_with_message(tmp_path):
    proc = start_service(tmp_path, '[[instrument]]\nmodel = "372"\nname = "X"\n')
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "kelvinpi.toml:1: instrument[0].transport: Field required" in out


def _writer_script(db: str, log: str) -> str:
    return f"""
import sys, time, random
from appliance.store import Store
from appliance.naming import SeriesKey
from appliance.samples import Sample
s = Store({db!r}, commit_interval=0.05)
keys = [SeriesKey("N", f"c{{i}}_t", "K", f"c{{i}}") for i in range(24)]
log = open({log!r}, "a", buffering=1)
t = time.time()
n = 0
while True:
    batch = [Sample(k, t + n * 0.001 + j * 1e-6, random.random(), 0) for j, k in enumerate(keys)]
    n += 1
    s.write(batch)
    log.write(f"{{n}}\\n")   # written only after the commit returned
"""


POWER_LOSS_TRIALS = 50


@pytest.mark.timeout(300)
def test_power_loss_campaign_kill_9_while_writing(tmp_path):
    """50 kill -9 of a high-rate writer on the same file, at random moments; after each, the file
    passes PRAGMA integrity_check and holds every batch the writer had seen committed."""
    db = tmp_path / "k.db"
    rng = random.Random(6)
    expected_min = expected_max = 0
    for trial in range(POWER_LOSS_TRIALS):
        log = tmp_path / f"committed-{trial}.log"
        p = subprocess.Popen([sys.executable, "-c", _writer_script(str(db), str(log))])
        time.sleep(rng.uniform(0.6, 1.6))  # a random moment to pull the plug
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        committed = [int(x) for x in log.read_text().split()] if log.exists() else []
        expected_min += (committed[-1] if committed else 0) * 24
        expected_max += ((committed[-1] if committed else 0) + 1) * 24  # one more may land unlogged
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"trial {trial}"
        conn.close()
        rows = stored_count(db)
        assert expected_min <= rows <= expected_max, f"trial {trial}: {rows} rows, logged {expected_min}"
        expected_min = expected_max = rows
    print(f"power loss: {POWER_LOSS_TRIALS} kills, {rows} samples committed and all present")
    assert rows > POWER_LOSS_TRIALS * 24 * 10
    from appliance.naming import SeriesKey
    from appliance.samples import Sample
    from appliance.store import Store

    Store(db).write([Sample(SeriesKey("N", "c0_t", "K", "c0"), time.time() + 100, 1.0, 0)])


def test_kill_9_of_the_running_service_then_restart(tmp_path, emu372, emu240):
    cfg = appliance_config(tmp_path, emu372, emu240)
    proc = start_service(tmp_path, cfg)
    lines = []
    port = web_port(proc, lines)
    wait_for(lambda: health(port)["store"]["written"] > 50, what="samples committed")
    committed = health(port)["store"]["written"]  # at least this much is on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    conn = sqlite3.connect(tmp_path / "kelvinpi.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = stored_count(tmp_path / "kelvinpi.db")
    assert before >= committed
    conn.close()
    proc = start_service(tmp_path, cfg)
    try:
        port = web_port(proc, [])
        wait_for(lambda: health(port)["store"]["written"] > 20, what="writing again after the restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    conn = sqlite3.connect(tmp_path / "kelvinpi.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert stored_count(tmp_path / "kelvinpi.db") > before
