"""The control room the way a Pi meets it, without Docker: three network namespaces made by the test.

``kp-ct-*`` stands for the control-room containers: in it, the compose file's setup commands (run as
written in an empty directory) provide the secrets and the router's certificate, ``run-crossbar.sh``
renders the config with its container defaults and starts the real crossbar, and an influxd listens as
the ``influxdb`` service does. ``kp-host-*`` is the server: it publishes exactly the ports
docker-compose.yml publishes, on the addresses it names, forwarding each to the container as
docker-proxy does (a forwarder in the test; 8080 and 8086 on every address, the anonymous 8001 on
the host's loopback only). ``kp-pi-*`` is the Pi: ``kelvinpi run`` there, with an LS240 emulator on a
PTY, resolves the server by the host name the certificate was made for (``$(hostname -f)``, put in that
namespace's own ``/etc/hosts``) and publishes through the sisock, OCS and InfluxDB uplinks. The data must
arrive: a sisock consumer call answered by the Pi's data node (through the control room's hub), the OCS
feed on the anonymous port (reached on the server's loopback, as OCS's own publisher would), and points
in influxd; and the anonymous port must be closed to the Pi.

The addresses (10.250.x.0/30) exist only inside these namespaces; nothing leaves them. Everything is
torn down in ``finally``: the processes the test started (by pid), the namespaces, the hosts file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from firmware_host.emulator import Emulator

from .conftest import wait_for
from .support.routers import (
    COMPOSE,
    CROSSBAR,
    Consumer,
    FeedListener,
    Hub,
    Influx,
    Loop,
    compose_setup_commands,
    in_netns,
)

SERVER = COMPOSE.parent
NODE = "LSA24AZ"


@dataclass
class ControlRoomRouter:
    """What routers.Hub / Consumer / FeedListener need to reach the router from inside the control room."""

    wss_url: str
    ws_url: str
    cert: Path
    server_secret: str
    consumer_secret: str


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def netns_allowed() -> str | None:
    """None if this process may make network namespaces, else why not."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"kp-probe-{secrets.token_hex(3)}"
    proc = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return f"`ip netns add` is not permitted here: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def stop_group(proc: subprocess.Popen | None) -> None:
    """Stop a process the test started in a session of its own (crossbar's node and workers with it)."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def published_ports() -> list[tuple[str, int, int]]:
    """(host address, host port, container port) for every port docker-compose.yml publishes from the
    services the test runs (crossbar, influxdb); an empty address in the short syntax means every address."""
    compose = yaml.safe_load(COMPOSE.read_text())
    out = []
    for service in ("crossbar", "influxdb"):
        for spec in compose["services"][service].get("ports", []):
            parts = str(spec).split(":")
            out.append((parts[0] if len(parts) == 3 else "0.0.0.0", int(parts[-2]), int(parts[-1])))
    return out


async def publish(
    host_ip: str, host_port: int, container: str, container_port: int, copies: set[asyncio.Task]
) -> asyncio.AbstractServer:
    """What docker-proxy does for one published port: accept on the host, copy bytes both ways to the container
    (each connection's task kept in ``copies``, to end them before the loop stops)."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        copies.add(task)
        task.add_done_callback(copies.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(container, container_port)
        except OSError:
            writer.close()  # nothing listening on the container's address: the client sees a reset
            return
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    return await asyncio.start_server(handle, host_ip, host_port)


async def shutdown(sessions: list, servers: list[asyncio.AbstractServer], copies: set[asyncio.Task]) -> None:
    """On the server's loop, before it stops: the WAMP sessions leave (no reconnect), the published ports close
    and the copies still running end."""
    for comp in sessions:
        with contextlib.suppress(Exception):  # a session that never joined has nothing to leave
            await asyncio.wait_for(asyncio.ensure_future(comp.stop()), 5)
    for server in servers:
        server.close()
    for task in list(copies):
        task.cancel()
    if copies:
        await asyncio.wait(list(copies), timeout=10)


def connects(address: str, port: int) -> bool:
    """A TCP connection that completes and is not closed at once by the far side."""
    try:
        with socket.create_connection((address, port), timeout=2) as s:
            s.settimeout(0.5)
            try:
                return s.recv(1) != b""
            except TimeoutError:
                return True  # open and waiting for us to speak
    except OSError:
        return False


@pytest.mark.crossbar
@pytest.mark.influxd
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_pi_in_its_own_namespace_publishes_to_the_control_room(tmp_path):
    why = netns_allowed()
    if why:
        pytest.skip(why)
    if not CROSSBAR.exists():
        pytest.skip("crossbar venv missing: run `make test`")
    if not Path(Influx.BIN).exists():
        pytest.skip("Debian's influxdb is not installed (`make ci-deps` as root installs it)")

    tag = secrets.token_hex(3)
    cr, host, pi = f"kp-ct-{tag}", f"kp-host-{tag}", f"kp-pi-{tag}"
    third = secrets.randbelow(128) * 2
    host_ct, cr_addr = f"10.250.{third}.1", f"10.250.{third}.2"  # the server and its container
    host_addr, pi_addr = f"10.250.{third + 1}.1", f"10.250.{third + 1}.2"  # the lab network: server and Pi
    server_host = subprocess.run(["hostname", "-f"], capture_output=True, text=True, check=True).stdout.strip()
    hosts_dir = Path("/etc/netns") / pi
    made: list[str] = []
    etc_netns_made = False
    procs: list[subprocess.Popen] = []
    influx: Influx | None = None
    loop: Loop | None = None
    servers: list[asyncio.AbstractServer] = []
    copies: set[asyncio.Task] = set()
    sessions: list = []  # autobahn Components on the server's loop
    emu = Emulator.ls240(channels=2, seed=5)
    try:
        # -- the container, the server and the Pi, and the wires between them -----------------------
        for ns in (cr, host, pi):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for (a, a_ns, a_addr), (b, b_ns, b_addr) in (
            ((f"kph{tag}", host, host_ct), (f"kpc{tag}", cr, cr_addr)),
            ((f"kpl{tag}", host, host_addr), (f"kpp{tag}", pi, pi_addr)),
        ):
            ip("link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns)
            for dev, ns, addr in ((a, a_ns, a_addr), (b, b_ns, b_addr)):
                ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
        etc_netns_made = not hosts_dir.parent.exists()
        hosts_dir.mkdir(parents=True)  # `ip netns exec` binds it over /etc/hosts for the Pi only
        (hosts_dir / "hosts").write_text(f"127.0.0.1 localhost\n{host_addr} {server_host}\n")

        # -- the control room, set up as the compose file's header says ---------------------------
        room = tmp_path / "server"
        shutil.copytree(SERVER / "crossbar", room / "crossbar")
        subprocess.run(["bash", "-euc", compose_setup_commands()], cwd=room, check=True, timeout=60)
        secret_file, consumer_file = room / "secrets" / "wamp-secret", room / "secrets" / "wamp-consumer-secret"
        cert = room / "crossbar" / ".crossbar" / "server_cert.pem"
        log = open(tmp_path / "crossbar.log", "wb")
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", cr, "sh", str(room / "crossbar" / "run-crossbar.sh")],
                env=dict(
                    os.environ,
                    PATH=f"{CROSSBAR.parent}:{os.environ['PATH']}",  # `crossbar` as in the image
                    WAMP_SECRET_FILE=str(secret_file),
                    WAMP_CONSUMER_SECRET_FILE=str(consumer_file),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        influx = Influx(tmp_path, host="0.0.0.0", http_port=8086)  # the influxdb service's port, all addresses
        in_netns(cr, influx.start)
        in_netns(cr, influx.create_db)

        def router_up() -> bool:
            assert procs[0].poll() is None, (tmp_path / "crossbar.log").read_text()[-3000:]
            return in_netns(cr, lambda: listening(8080) and listening(8001))

        wait_for(router_up, 60, step=0.3, what="crossbar listening on 8080 and 8001 in the control room")

        # the server publishes what docker-compose.yml publishes, where it says
        loop = Loop(netns=host)
        for host_ip, host_port, container_port in published_ports():
            servers.append(loop.run(publish(host_ip, host_port, cr_addr, container_port, copies)))

        # on the server: sisock's hub and a glue-like consumer (TLS + WAMP-CRA on the published 8080), an
        # OCS feed subscriber on the anonymous port where the server's loopback reaches it
        router = ControlRoomRouter(
            wss_url="wss://127.0.0.1:8080/ws",
            ws_url="ws://127.0.0.1:8001/ws",
            cert=cert,
            server_secret=secret_file.read_text().strip(),
            consumer_secret=consumer_file.read_text().strip(),
        )
        hub = Hub(loop, router)
        consumer = Consumer(loop, router)
        feed = FeedListener(loop, router)
        sessions += [hub.comp, consumer.comp, feed.comp]
        for session, what in ((hub, "sisock's hub"), (consumer, "the consumer"), (feed, "the OCS subscriber")):
            assert session.joined.wait(30), f"{what} did not join through the server's published port"

        # -- the Pi: its card holds the secret and the router's certificate -------------------------
        card = tmp_path / "pi"
        card.mkdir()
        pi_secret = card / "wamp-secret"
        shutil.copy(secret_file, pi_secret)
        os.chmod(pi_secret, 0o600)
        shutil.copy(cert, card / "router-cert.pem")
        emu.listen_pty(str(card / "ls240"))
        wss = f"wss://{server_host}:8080/ws"
        (card / "kelvinpi.toml").write_text(
            f'[[instrument]]\nmodel = "240"\nname = "{NODE}"\ntransport = "serial"\n'
            f'device = "{emu.pty.link}"\ntimeout = 1.0\ninterval = 0.2\n\n'
            f'[store]\npath = "{card / "kelvinpi.db"}"\ncommit_interval = 0.2\n\n'
            f'[web]\nbind = "127.0.0.1"\nport = 0\n\n'
            f'[[uplink]]\nkind = "sisock"\nurl = "{wss}"\nsecret_file = "{pi_secret}"\n'
            f'ca_file = "{card / "router-cert.pem"}"\n\n'
            f'[[uplink]]\nkind = "ocs"\nurl = "{wss}"\nauthid = "server"\nsecret_file = "{pi_secret}"\n'
            f'ca_file = "{card / "router-cert.pem"}"\nrejoin_delay = 0\n\n'
            f'[[uplink]]\nkind = "influxdb"\nurl = "http://{server_host}:8086"\ndatabase = "ocs_feeds"\n'
        )
        pi_log = open(tmp_path / "kelvinpi.log", "wb")
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", pi, sys.executable, "-m", "appliance.cli", "run"]
                + ["--config", str(card / "kelvinpi.toml")],
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                stdout=pi_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        )

        def pi_alive() -> None:
            assert procs[1].poll() is None, (tmp_path / "kelvinpi.log").read_text()[-3000:]

        # -- from the Pi: the published ports reach the containers, the anonymous one does not ---------
        reach = in_netns(pi, lambda: {port: connects(host_addr, port) for port in (8080, 8086, 8001)})
        assert reach == {8080: True, 8086: True, 8001: False}, reach

        # -- the data arrives ----------------------------------------------------------------------
        def node_registered() -> bool:
            pi_alive()
            return NODE in {n["name"] for n in consumer.nodes()}

        wait_for(node_registered, 40, step=0.5, what=f"the Pi's data node {NODE} registered with the hub")
        fields = wait_for(lambda: consumer.get_fields(NODE)[0], 20, step=0.5, what=f"{NODE}'s fields over sisock")
        assert "50k_plate_t" in fields, sorted(fields)

        def sisock_data() -> list:
            got = consumer.get_data(NODE, ["50k_plate_t"], -60, 0)
            return [v for v in got["data"]["50k_plate_t"] if v is not None]

        values = wait_for(sisock_data, 20, step=0.5, what="readings through the Pi's get_data")
        assert all(0 < v < 400 for v in values), values  # kelvin, as the emulator's fridge reads

        def ocs_samples() -> list:
            pi_alive()
            return feed.samples().get(f"observatory.{NODE}.Channel_1_T", [])

        wait_for(ocs_samples, 30, step=0.5, what="the Pi's OCS feed on the control room's anonymous port")

        def influx_points() -> int:
            pi_alive()
            assert influx is not None
            return in_netns(cr, lambda: influx.count(f"observatory.{NODE}", "Channel_1_T"))

        wait_for(influx_points, 30, step=0.5, what="the Pi's points in the control room's InfluxDB")
        log_text = (tmp_path / "kelvinpi.log").read_text()
        assert router.server_secret not in log_text
    finally:
        if loop is not None:
            try:
                loop.run(shutdown(sessions, servers, copies), timeout=30)
            finally:
                loop.stop()
        for proc in reversed(procs):
            stop_group(proc)
        if influx is not None:
            influx.stop()
        emu.stop()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        shutil.rmtree(hosts_dir, ignore_errors=True)
        if etc_netns_made:
            shutil.rmtree(hosts_dir.parent, ignore_errors=True)
