"""Shared fixtures: real emulators on real loopback sockets and real ptys."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import settings as _hypothesis_settings

from firmware_host.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis' per-example deadline is a timing test: on a loaded machine (the suite runs on several
# workers) a 200 ms example fails without a fault. Examples keep their count; only the clock goes.
_hypothesis_settings.register_profile("kelvinpi", deadline=None)
_hypothesis_settings.load_profile("kelvinpi")

# Real-hardware tests run only when asked for (KELVINPI_HW_372 / KELVINPI_HW_240): otherwise they are
# not collected at all, so they are neither skipped nor counted.
collect_ignore = (
    [] if (os.environ.get("KELVINPI_HW_372") or os.environ.get("KELVINPI_HW_240")) else ["test_hardware.py"]
)


# -- test tiers: `make check` runs what needs no outside server and answers in a minute ------------------
# A test that uses one of these fixtures (directly or through another fixture) needs the program behind it,
# so it is marked for it here, whoever wrote the test file: no marker to forget. Markers are registered in
# pyproject.toml; `make check` deselects them all (and `slow`, set by hand on tests that each take more than
# about half a second), `make test` runs `make check` and then exactly those (tests/test_tiers.py proves it).
FIXTURE_MARKS: dict[str, str] = {
    "router": "crossbar",  # the session's crossbar router (its own venv, .venv-crossbar)
    "wamp_loop": "crossbar",
    "hub": "crossbar",
    "consumer": "crossbar",
    "influx_server": "influxd",  # Debian's influxd 1.x
    "influx": "influxd",
    "page": "chromium",  # Debian's chromium driven by playwright (tests/test_front_panel.py)
    "prometheus": "prometheus",  # Debian's prometheus (tests/test_remote_write.py)
}
# A parametrized fixture whose parameter names the program (tests/test_remote_write.py's `receiver`).
PARAM_MARKS: dict[tuple[str, str], str] = {
    ("receiver", "prometheus"): "prometheus",
    ("receiver", "victoria-metrics"): "victoria",
}


def tier_marks(item: pytest.Item) -> set[str]:
    """The outside-program markers a test needs, from the fixtures it uses."""
    names = set(getattr(item, "fixturenames", ()))
    marks = {FIXTURE_MARKS[n] for n in names if n in FIXTURE_MARKS}
    params = getattr(getattr(item, "callspec", None), "params", {})
    marks |= {m for (name, value), m in PARAM_MARKS.items() if name in names and params.get(name) == value}
    return marks


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m "not crossbar"` sees these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in sorted(tier_marks(item)):
            item.add_marker(mark)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def emu372():
    emu = Emulator.ls372(seed=1, time_scale=1.0)
    emu.listen_tcp("127.0.0.1", 0)
    yield emu
    emu.stop()


@pytest.fixture
def emu372_pty(tmp_path):
    emu = Emulator.ls372(seed=2)
    emu.listen_tcp("127.0.0.1", 0)
    emu.listen_pty(str(tmp_path / "ls372"))
    yield emu
    emu.stop()


@pytest.fixture
def emu240(tmp_path):
    emu = Emulator.ls240(channels=2, seed=3)
    emu.listen_pty(str(tmp_path / "ls240"))
    yield emu
    emu.stop()


@pytest.fixture
def emu240_8p(tmp_path):
    emu = Emulator.ls240(channels=8, seed=4, serial="LSA24BB")
    emu.listen_pty(str(tmp_path / "ls240-8"))
    yield emu
    emu.stop()


def wait_for(fn, timeout: float = 30.0, step: float = 0.1, what: str = "condition"):
    """Poll ``fn`` until it returns something true; bounded, so a test always ends."""
    import time as _time

    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        _time.sleep(step)
    raise AssertionError(f"{what} not met within {timeout} s")


def run_with_timeout(fn, timeout: float = 10.0):
    """Outer timeout for calls into code that may hang (the official lakeshore driver can)."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"call did not return within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def appliance_config(
    tmp_path, emu372=None, emu240=None, extra: str = "", stale_after: float = 30, interval: float = 0.2
) -> str:
    parts = []
    if emu372 is not None:
        host, port = emu372.tcp.address
        parts.append(
            f'[[instrument]]\nmodel = "372"\nname = "LSA23JD"\ndescription = "test 372"\ntransport = "tcp"\n'
            f'host = "{host}"\nport = {port}\ntimeout = 1.0\ninterval = {interval}\nread_heater = true\n'
        )
    if emu240 is not None:
        parts.append(
            f'[[instrument]]\nmodel = "240"\nname = "LSA24AZ"\ntransport = "serial"\n'
            f'device = "{emu240.pty.link}"\ntimeout = 1.0\ninterval = {interval}\n'
        )
    parts.append("[polling]\nbackoff_initial = 0.2\nbackoff_max = 1.0\n")
    parts.append(f'[store]\npath = "{tmp_path / "kelvinpi.db"}"\ncommit_interval = 0.2\n')
    parts.append(f'[web]\nbind = "127.0.0.1"\nport = 0\nstale_after = {stale_after}\n')
    return "\n".join(parts) + extra


@pytest.fixture
def running_appliance(tmp_path, emu372, emu240):
    """The whole appliance in-process against both emulators, on a free loopback port."""
    import time as _time

    from appliance import config as _config
    from appliance.service import Appliance

    cfg = _config.parse(appliance_config(tmp_path, emu372, emu240, stale_after=3))
    app = Appliance(cfg)
    app.start()
    app.base_url = f"http://127.0.0.1:{app.web_address[1]}"
    deadline = _time.monotonic() + 15
    # readings written, and from every instrument (a page drawn before the 240's first reading lacked it)
    while _time.monotonic() < deadline and (app.store.written < 8 or not all(p.health.samples for p in app.pollers)):
        _time.sleep(0.1)
    _time.sleep(0.5)  # the last of those committed (the writer commits every 0.2 s)
    yield app
    app.stop()


def start_appliance(cfg_text: str):
    """Appliance in-process with its uplinks (what `kelvinpi run` does, minus signals and sd_notify)."""
    from appliance import config as _config
    from appliance.service import Appliance

    app = Appliance(_config.parse(cfg_text))
    app.add_uplinks()
    app.start()
    app.base_url = f"http://127.0.0.1:{app.web_address[1]}"
    return app


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs of our own for the store (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    d = tmp_path / "disk"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "kelvinpi-test", str(d)], check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def fill_disk(path) -> None:
    """Another process eats the card: write zeros into ``path`` until the filesystem is full."""
    import errno

    with open(path, "wb", buffering=0) as f:  # unbuffered: nothing left for close() to fail on
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


# -- InfluxDB: Debian's influxd 1.x on loopback, one per test ----------------------------------------
@pytest.fixture
def influx_server(tmp_path):
    """An influxd configured on free loopback ports but not started: until ``start()`` its port is closed."""
    from .support.routers import Influx

    if not os.path.exists(Influx.BIN):
        pytest.skip("Debian's influxdb is not installed (`make ci-deps` as root installs it)")
    db = Influx(tmp_path)
    yield db
    db.stop()


@pytest.fixture
def influx(influx_server):
    """A running influxd with the ``ocs_feeds`` database."""
    influx_server.start()
    influx_server.create_db()
    return influx_server


# -- the control room: one real crossbar router, a sisock hub and a consumer for the session ----------
SERVER_SECRET = "kelvin&pi'test\"secret"
CONSUMER_SECRET = "consumer-secret-for-tests"


@pytest.fixture(scope="session")
def router(tmp_path_factory):
    from .support.routers import CROSSBAR, Crossbar

    if not CROSSBAR.exists():
        pytest.skip("crossbar venv missing: run `make test`")
    cb = Crossbar(tmp_path_factory.mktemp("crossbar"), SERVER_SECRET, CONSUMER_SECRET)
    cb.start()
    yield cb
    cb.stop()


@pytest.fixture(scope="session")
def wamp_loop():
    from .support.routers import Loop

    loop = Loop()
    yield loop
    loop.stop()


@pytest.fixture(scope="session")
def hub(router, wamp_loop):
    from .support.routers import Hub

    h = Hub(wamp_loop, router)
    assert h.joined.wait(30)
    return h


@pytest.fixture(scope="session")
def consumer(router, wamp_loop, hub):
    from .support.routers import Consumer

    return Consumer(wamp_loop, router)


def sisock_uplink(router, tmp_path) -> str:
    """Config lines publishing the appliance's data nodes on the session's router."""
    s = tmp_path / "wamp-secret"
    s.write_text(SERVER_SECRET + "\n")
    os.chmod(s, 0o600)
    return f'\n[[uplink]]\nkind = "sisock"\nurl = "{router.wss_url}"\nsecret_file = "{s}"\nca_file = "{router.cert}"\n'


def wait_nodes(consumer, names=("LSA23JD", "LSA24AZ"), timeout: float = 30) -> None:
    """Until the appliance's data nodes are registered with the hub (their procedures callable)."""
    wait_for(lambda: set(names) <= {n["name"] for n in consumer.nodes()}, timeout, what=f"data nodes {names}")
