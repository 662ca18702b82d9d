"""Uplinks against a real crossbar router (images/server config), a sisock hub, an OCS-style
subscriber and a real InfluxDB 1.x, all on loopback and started by the tests."""

import json
import logging
import os
import time

import pytest

from appliance.uplinks.sisock import SisockUplinkRunner

from .conftest import CONSUMER_SECRET, SERVER_SECRET, appliance_config, start_appliance, wait_for
from .support.reconcile import quiesce, reconcile
from .support.routers import CROSSBAR, Crossbar, FeedListener

pytestmark = [
    pytest.mark.skipif(not CROSSBAR.exists(), reason="crossbar venv missing: run `make test`"),
    pytest.mark.crossbar,  # the whole file needs the router's venv (one test starts a router of its own)
    pytest.mark.slow,  # router outages and restarts waited out
]


def secret_file(tmp_path, text=SERVER_SECRET, mode=0o600):
    p = tmp_path / "wamp-secret"
    p.write_text(text + "\n")
    os.chmod(p, mode)
    return p


def uplink_config(router, tmp_path, secret=None, ocs=True, influx=None):
    s = secret or secret_file(tmp_path)
    out = f'\n[[uplink]]\nkind = "sisock"\nurl = "{router.wss_url}"\nsecret_file = "{s}"\nca_file = "{router.cert}"\n'
    if ocs:
        out += f'\n[[uplink]]\nkind = "ocs"\nurl = "{router.ws_url}"\n'
    if influx:
        out += f'\n[[uplink]]\nkind = "influxdb"\nurl = "{influx.url}"\ndatabase = "ocs_feeds"\n'
    return out


@pytest.fixture
def appliance(tmp_path, emu372, emu240, router, hub):
    app = start_appliance(appliance_config(tmp_path, emu372, emu240, extra=uplink_config(router, tmp_path)))
    yield app
    app.stop()


def node_names(consumer):
    return {n["name"] for n in consumer.nodes()}


def test_data_node_serves_the_store(appliance, consumer):
    wait_for(lambda: {"LSA23JD", "LSA24AZ"} <= node_names(consumer), what="both data nodes registered")
    # a node registers at start; a field is listed once the store holds a reading of it (on a loaded CI
    # machine the mixing chamber's first reading can come after the registration: it failed there)
    fields, timelines = wait_for(
        lambda: (ft := consumer.get_fields("LSA23JD", 1, 0)) and "mxc_control_t" in ft[0] and ft,
        30,
        what="the mixing chamber listed by get_fields",
    )
    assert fields["mxc_control_t"] == {
        "description": fields["mxc_control_t"]["description"],
        "timeline": "mxc_control",
        "type": "number",
        "units": "K",
    }
    assert set(timelines["mxc_control"]["field"]) == {"mxc_control_t", "mxc_control_r"}
    assert "group0" not in timelines

    def stored_readings() -> int:
        got = appliance.store.data(["LSA23JD::mxc_control_t"], time.time() - 30, time.time())
        return len(got["LSA23JD::mxc_control_t"].t) if got else 0

    wait_for(lambda: stored_readings() >= 5, 20, what="five mixing chamber readings stored")
    now = time.time()

    def served_and_stored():
        """get_data and the store over one closed window: equal once every reading before ``now`` is
        committed (a reading taken just before ``now`` may still be in the writer's queue at first)."""
        got = consumer.get_data("LSA23JD", ["mxc_control_t", "mxc_control_r", "nope"], now - 30, now)
        store = appliance.store.data(["LSA23JD::mxc_control_t"], now - 30, now, now=now)["LSA23JD::mxc_control_t"]
        return (got, store) if got["timeline"]["mxc_control"]["t"] == store.t else None

    got, store = wait_for(served_and_stored, 20, what="get_data equal to the store over a closed window")
    json.dumps(got, allow_nan=False)  # no NaN on the wire
    t = got["timeline"]["mxc_control"]["t"]
    assert len(t) >= 5 and len(got["data"]["mxc_control_t"]) == len(t) == len(got["data"]["mxc_control_r"])
    assert got["data"]["nope"] == []
    assert t == store.t and got["data"]["mxc_control_t"] == store.value  # exactly what the store holds
    assert all(0.005 < v < 0.05 for v in store.value)  # and what the emulator's mixing chamber reads
    t0 = time.time()
    rel = consumer.get_data("LSA23JD", ["mxc_control_t"], -30, 0)  # sisock: <= 0 is seconds before now
    t1 = time.time()
    rt = rel["timeline"]["mxc_control"]["t"]
    assert len(rt) >= 5 and all(t0 - 31 <= x <= t1 for x in rt), (t0, t1, rt[:3], rt[-3:])
    strided = consumer.get_data("LSA23JD", ["mxc_control_t"], -30, 0, min_stride=2.0)
    ts = strided["timeline"]["mxc_control"]["t"]
    assert ts and all(b - a >= 2.0 for a, b in zip(ts, ts[1:], strict=False))
    empty = consumer.get_data("LSA24AZ", ["unknown_field"], -30, 0)
    assert empty == {"data": {"unknown_field": []}, "timeline": {}}


@pytest.mark.parametrize(
    "args,kw",
    [
        ((["x"], "yesterday", 0), {}),
        ((["x"], -10, 0), {"min_stride": -1}),
        ((123, -10, 0), {}),
        ((["x"], float("inf"), 0), {}),
    ],
)
def test_bad_wamp_arguments_get_clear_errors(appliance, consumer, args, kw):
    from autobahn.wamp.exception import ApplicationError

    wait_for(lambda: "LSA23JD" in node_names(consumer))
    with pytest.raises(ApplicationError) as e:
        consumer.call("org.simonsobservatory.consumer.LSA23JD.get_data", *args, **kw)
    assert "invalid_argument" in e.value.error or "must" in str(e.value)
    fields, timelines = consumer.get_fields("LSA23JD")  # still serving
    assert isinstance(fields, dict) and isinstance(timelines, dict)


def test_duplicate_node_name_waits_for_the_stale_session(
    tmp_path, emu372, emu240, router, hub, consumer, wamp_loop, caplog
):
    from autobahn.asyncio.component import Component

    from .support.routers import _transport

    holder = Component(
        transports=[_transport(router.wss_url, router.cert)],
        realm="test_realm",
        authentication={"wampcra": {"authid": "server", "secret": SERVER_SECRET}},
    )
    held = {}

    @holder.on_join
    async def joined(session, details):
        await session.register(lambda *a: [{}, {}], "org.simonsobservatory.consumer.LSA23JD.get_fields")
        held["session"] = session

    import asyncio

    wamp_loop.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(holder.start(loop=wamp_loop.loop)))
    wait_for(lambda: "session" in held, what="stale holder joined")
    caplog.set_level(logging.WARNING, logger="kelvinpi.sisock")
    app = start_appliance(appliance_config(tmp_path, emu372, emu240, extra=uplink_config(router, tmp_path, ocs=False)))
    try:
        wait_for(lambda: "LSA24AZ" in node_names(consumer))

        def retries() -> int:
            return sum(
                "LSA23JD" in r.getMessage() and "still held by a stale session" in r.getMessage()
                for r in caplog.records
            )

        wait_for(lambda: retries() >= 2, 20, what="the appliance retrying LSA23JD's registration twice")
        assert "LSA23JD" not in node_names(consumer)  # name still held: retrying, not registered twice

        async def leave():
            await holder.stop()

        wamp_loop.run(leave())
        wait_for(lambda: "LSA23JD" in node_names(consumer), timeout=20, what="takeover after the stale session left")
        wait_for(lambda: consumer.get_fields("LSA23JD")[0], 20, what="the taken-over node lists its fields")
    finally:
        app.stop()


def test_router_outage_nothing_lost(tmp_path, emu372, emu240, router, hub, consumer, wamp_loop):
    listener = FeedListener(wamp_loop, router)
    heartbeats = FeedListener(wamp_loop, router, feed="heartbeat")
    assert listener.joined.wait(20) and heartbeats.joined.wait(20)
    app = start_appliance(appliance_config(tmp_path, emu372, emu240, extra=uplink_config(router, tmp_path)))
    try:
        wait_for(lambda: {"LSA23JD", "LSA24AZ"} <= node_names(consumer))
        wait_for(lambda: listener.samples().get("observatory.LSA24AZ.Channel_1_T"), what="live OCS feed")
        wait_for(lambda: heartbeats.messages, what="heartbeat feed")
        hb = heartbeats.messages[-1]
        assert hb[1]["feed_name"] == "heartbeat" and hb[1]["record"] is False
        msg = listener.messages[-1]
        blocks, feed = msg
        assert feed["record"] is True and feed["feed_name"] == "temperatures" and feed["agg_params"]["frame_length"]
        assert feed["address"] == f"{feed['agent_address']}.feeds.temperatures"
        t_down = time.time()
        router.stop()
        time.sleep(4)  # an outage of a few seconds: readings taken meanwhile must be served afterwards
        router.start()
        wait_for(
            lambda: hub.joined.is_set() and {"LSA23JD", "LSA24AZ"} <= node_names(consumer),
            timeout=60,
            what="data nodes re-registered after the router came back",
        )
        # every reading taken during the outage is served by get_data ...
        t_up = time.time()

        def served_and_stored():  # a closed window: equal once every reading before t_up is committed
            got = consumer.get_data("LSA24AZ", ["50k_plate_t"], t_down - 2, t_up)
            stored = app.store.data(["LSA24AZ::50k_plate_t"], t_down - 2, t_up, now=t_up)["LSA24AZ::50k_plate_t"]
            return (got, stored) if got["timeline"]["50k_plate"]["t"] == stored.t else None

        got, stored = wait_for(served_and_stored, 20, what="the outage's readings served as stored")
        assert got["timeline"]["50k_plate"]["t"] == stored.t and len(stored.t) >= 15
        # ... and the OCS feed backfilled it, in order, without duplicates
        t_end = time.time()
        pairs = (
            ("LSA24AZ::50k_plate_t", "observatory.LSA24AZ.Channel_1_T"),
            ("LSA23JD::mxc_control_r", "observatory.LSA23JD.control_R"),
        )

        def delivered():
            for series, ocs_name in pairs:
                want = [
                    round(t, 3) for t, v in zip(*_raw(app, series, t_down - 5, t_end), strict=False) if v is not None
                ]
                got = [round(t, 3) for t, _ in listener.samples().get(ocs_name, []) if t_down - 5 <= t < t_end]
                if sorted(got) != want:
                    return False
                assert len(got) == len(set(got)), f"{ocs_name}: duplicates"
            return True

        wait_for(delivered, timeout=150, what="OCS feed backfilled every stored reading")
        counts = {o: len([1 for t, _ in listener.samples()[o] if t_down - 5 <= t < t_end]) for _, o in pairs}
        assert min(counts.values()) >= 10, counts
        # the ledger: everything the instruments delivered is stored and served over WAMP and HTTP
        quiesce(emu372, emu240, app=app)
        tally = reconcile(app.store, {"LSA23JD": emu372, "LSA24AZ": emu240}, consumer=consumer, http_base=app.base_url)
        print("router outage:", tally.line())
        assert tally.produced > 100 and tally.lost == 0 and tally.foreign == 0, tally.per_series
        assert tally.served_wamp == tally.stored == tally.served_http
    finally:
        app.stop()


def test_router_that_accepts_but_never_answers(tmp_path, emu372, emu240):
    """A black-hole router (TCP accepted, no WebSocket handshake): polling goes on, health says why,
    and the appliance still stops promptly."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    url = f"ws://127.0.0.1:{hole.getsockname()[1]}/ws"
    try:
        app = start_appliance(
            appliance_config(tmp_path, emu372, emu240, extra=f'\n[[uplink]]\nkind = "ocs"\nurl = "{url}"\n')
        )
        try:
            written = app.store.written
            wait_for(lambda: app.store.written > written + 40, 20, what="polling and storing go on")
            # the opening handshake times out (10 s) and the failure is counted
            wait_for(
                lambda: app.health()["uplinks"][0]["errors"].get("connect", 0) >= 1,
                30,
                what="the opening handshake timing out",
            )
            up = app.health()["uplinks"][0]
            assert up["connected"] is False and app.store.written > written + 100, up
            assert url in up["last_error"] and up["errors"]["connect"] >= 1
            print("black-hole router:", up)
        finally:
            t0 = time.monotonic()
            app.stop()
            assert time.monotonic() - t0 < 15
    finally:
        hole.close()


def _raw(app, name, start, end):
    d = app.store.data([name], start, end, max_points=None, now=end)[name]
    return d.t, d.value


def test_router_restarted_with_another_certificate_is_refused_loudly(tmp_path, emu372, emu240, caplog):
    """The router comes back with a different certificate: the appliance refuses it, loudly, and keeps polling."""
    own = Crossbar(tmp_path / "own-router", SERVER_SECRET, CONSUMER_SECRET)
    own.start()
    caplog.set_level(logging.WARNING, logger="kelvinpi")
    ca_copy = tmp_path / "router-cert.pem"  # what the lab copied onto the Pi
    ca_copy.write_bytes(own.cert.read_bytes())
    extra = uplink_config(own, tmp_path, ocs=False).replace(str(own.cert), str(ca_copy))
    app = start_appliance(appliance_config(tmp_path, emu372, emu240, extra=extra))
    try:
        runner = next(u for u in app.uplinks if isinstance(u, SisockUplinkRunner))
        wait_for(
            lambda: runner.sessions and all(s.is_attached() for s in runner.sessions.values()),
            timeout=30,
            what="sessions joined with the right certificate",
        )
        own.stop()
        own.new_cert()  # an impostor (or a re-keyed router) on the same address
        own.start()
        wait_for(
            lambda: any("REFUSING router" in r.getMessage() for r in caplog.records), timeout=60, what="a loud refusal"
        )
        assert not any(s.is_attached() for s in runner.sessions.values())
        assert app.health()["uplinks"][0]["connected"] is False
        written = app.store.written
        wait_for(lambda: app.store.written > written + 10, what="polling goes on")
    finally:
        app.stop()
        own.stop()


def test_builder_order_and_one_wamp_loop(tmp_path):
    """The runners the service starts in order and stops in order: the push uplinks and the ones that could
    not start in config order, then the WAMP uplinks, then their one shared loop (so it stops last); the
    OCS feeds publish the alarms of the callable the builder was given."""
    from appliance import config as _config
    from appliance.uplinks import FailedUplink, build_uplinks
    from appliance.uplinks.influxdb import InfluxUplinkRunner
    from appliance.uplinks.ocs import OcsUplinkRunner
    from appliance.uplinks.wamp import WampRuntime

    s = secret_file(tmp_path)
    cfg = _config.parse(
        appliance_config(tmp_path).replace(
            "[polling]", '[[instrument]]\nmodel = "372"\nname = "X"\ntransport = "tcp"\nhost = "127.0.0.1"\n\n[polling]'
        )
        + f'\n[[uplink]]\nkind = "ocs"\nurl = "ws://127.0.0.1:9"\n'
        f'\n[[uplink]]\nkind = "sisock"\nurl = "ws://127.0.0.1:9"\nsecret_file = "{s}"\n'
        f'\n[[uplink]]\nkind = "sisock"\nurl = "ws://127.0.0.1:9"\nsecret_file = "{tmp_path / "none"}"\n'
        '\n[[uplink]]\nkind = "influxdb"\nurl = "http://127.0.0.1:9"\ndatabase = "d"\n'
    )
    active = [{"name": "mxc warm"}]
    from appliance.store import Store

    store = Store(tmp_path / "k.db")  # the outboxes note the store's newest sample when built
    built = build_uplinks(cfg.uplink, store, cfg.instrument, alarm_source=lambda: active)
    try:
        assert [type(u) for u in built] == [
            FailedUplink,
            InfluxUplinkRunner,
            OcsUplinkRunner,
            SisockUplinkRunner,
            WampRuntime,
        ]
        assert [u.health.name for u in built if u.health is not None] == [f"uplink[{i}]" for i in (2, 3, 0, 1)]
        assert built[2].runtime is built[3].runtime is built[4]
        assert built[2].alarm_source() == active
    finally:
        built[-1].loop.close()
        store.close()


def test_wrong_secret_is_refused_with_backoff(tmp_path, emu372, emu240, router, hub, consumer, caplog):
    caplog.set_level(logging.INFO)
    s = secret_file(tmp_path, "not-the-secret")
    app = start_appliance(
        appliance_config(tmp_path, emu372, emu240, extra=uplink_config(router, tmp_path, secret=s, ocs=False))
    )
    try:
        time.sleep(8)  # a fixed window in which to count the refusals: backoff, not a tight loop
        refusals = [r for r in caplog.records if r.name == "kelvinpi.sisock" and "not_authorized" in r.getMessage()]
        assert refusals, "the refusal must be logged"
        assert all(r.levelno >= logging.WARNING for r in refusals)
        # two instruments, each retrying with backoff (1, 2, 4 s ...): a handful in 8 s, not a tight loop
        assert len(refusals) <= 10, len(refusals)
        assert not node_names(consumer) & {"LSA23JD", "LSA24AZ"}
        assert app.health()["uplinks"][0]["last_error"]
    finally:
        app.stop()


def test_secret_readable_by_others_is_refused(tmp_path, emu372, emu240, router):
    s = secret_file(tmp_path, SERVER_SECRET, mode=0o644)
    app = start_appliance(
        appliance_config(tmp_path, emu372, emu240, extra=uplink_config(router, tmp_path, secret=s, ocs=False))
    )
    try:
        h = app.health()["uplinks"][0]
        assert "readable by others" in h["last_error"] and h["connected"] is False
        wait_for(lambda: app.store.written > 10, what="polling despite the bad uplink")
    finally:
        app.stop()


def test_influxdb_layout_and_outage_backfill(tmp_path, emu372, emu240, influx):
    cfg = (
        appliance_config(tmp_path, emu372, emu240)
        + f'\n[[uplink]]\nkind = "influxdb"\nurl = "{influx.url}"\ndatabase = "ocs_feeds"\n'
    )
    app = start_appliance(cfg)
    runner = next(u for u in app.uplinks if u.health is not None and u.health.kind == "influxdb")
    try:
        wait_for(lambda: runner.health.sent > 20, what="first points written")
        res = influx.query("SELECT * FROM \"observatory.LSA24AZ\" WHERE feed='temperatures' LIMIT 3")
        series = res["results"][0]["series"][0]
        assert series["name"] == "observatory.LSA24AZ" and "Channel_1_T" in series["columns"]
        assert "Channel_1_V" in series["columns"]
        t_down = time.time()
        influx.stop()
        time.sleep(4)  # an outage of a few seconds: a backlog to fill in afterwards
        assert runner.health.connected is False and runner.health.errors
        influx.start()
        t_end = time.time()
        q = (
            f'SELECT "control_T" FROM "observatory.LSA23JD" WHERE time >= {int((t_down - 5) * 1e3)}ms '
            f"AND time < {int(t_end * 1e3)}ms"
        )

        def delivered():
            want = [
                round(t, 3)
                for t, v in zip(*_raw(app, "LSA23JD::mxc_control_t", t_down - 5, t_end), strict=False)
                if v is not None
            ]
            res = influx.query(q)["results"][0].get("series")
            got = [round(r[0] / 1000, 3) for r in res[0]["values"] if r[1] is not None] if res else []
            return want == got and len(want) >= 15

        wait_for(delivered, timeout=150, what="InfluxDB backfilled every stored reading")
    finally:
        app.stop()


def test_every_uplink_kind_is_registered_once_and_its_runner_loaded_only_when_configured():
    """config.UPLINK_MODELS (the [[uplink]] union, the error tags, the docs' sections) and the
    runner registry name the same kinds in the same order; loading the config and the registry
    imports no runner module (a runner and its network stack load only when configured)."""
    import subprocess
    import sys

    from appliance import config as _config
    from appliance.uplinks import UPLINKS

    assert [k.model for k in UPLINKS.values()] == list(_config.UPLINK_MODELS)
    assert list(UPLINKS) == ["sisock", "ocs", "influxdb", "remote_write"]
    assert {k for k in UPLINKS} <= _config.UNION_TAGS
    assert [k for k, u in UPLINKS.items() if u.wamp] == ["sisock", "ocs"]
    probe = (
        "import sys, appliance.config, appliance.uplinks, appliance.config_doc\n"
        "mods = [m for m in ('appliance.uplinks.influxdb', 'appliance.uplinks.remote_write', 'appliance.uplinks.ocs',"
        " 'appliance.uplinks.sisock', 'appliance.uplinks.wamp', 'autobahn') if m in sys.modules]\n"
        "print(','.join(mods))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
