"""The control room the way a Pi meets it, without Docker: two network namespaces made by the test.

``kp-cr-*`` stands for the control-room container: in it, the compose file's setup commands (run as
written in an empty directory) provide the secrets and the router's certificate, ``run-crossbar.sh``
renders the config with its container defaults and starts the real crossbar, and an influxd listens as
the ``influxdb`` service does. ``kp-pi-*`` is the Pi: ``kelvinpi run`` there, with an LS240 emulator on a
PTY, resolves the control room by the host name the certificate was made for (``$(hostname -f)``, put in
that namespace's own ``/etc/hosts``) and publishes through the sisock, OCS and InfluxDB uplinks over a
veth pair. The data must arrive: a sisock consumer call answered by the Pi's data node (through the
control room's hub), the OCS feed on the control room's anonymous port, and points in influxd.

The addresses (10.250.x.0/30) exist only inside the two namespaces; nothing leaves them. Everything is
torn down in ``finally``: the processes the test started (by pid), the namespaces, the hosts file.
"""

from __future__ import annotations

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

from firmware_host.emulator import Emulator

from .conftest import wait_for
from .routers import (
    CROSSBAR,
    COMPOSE,
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
    cr, pi = f"kp-cr-{tag}", f"kp-pi-{tag}"
    subnet = f"10.250.{secrets.randbelow(256)}"
    cr_addr, pi_addr = f"{subnet}.1", f"{subnet}.2"
    server_host = subprocess.run(["hostname", "-f"], capture_output=True, text=True, check=True).stdout.strip()
    hosts_dir = Path("/etc/netns") / pi
    made: list[str] = []
    etc_netns_made = False
    procs: list[subprocess.Popen] = []
    influx: Influx | None = None
    loop: Loop | None = None
    emu = Emulator.ls240(channels=2, seed=5)
    try:
        # -- the two hosts and the wire between them ---------------------------------------------
        for ns in (cr, pi):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", f"kpc{tag}", "netns", cr, "type", "veth", "peer", "name", f"kpp{tag}", "netns", pi)
        ip("-n", cr, "addr", "add", f"{cr_addr}/30", "dev", f"kpc{tag}")
        ip("-n", pi, "addr", "add", f"{pi_addr}/30", "dev", f"kpp{tag}")
        ip("-n", cr, "link", "set", f"kpc{tag}", "up")
        ip("-n", pi, "link", "set", f"kpp{tag}", "up")
        etc_netns_made = not hosts_dir.parent.exists()
        hosts_dir.mkdir(parents=True)  # `ip netns exec` binds it over /etc/hosts for the Pi only
        (hosts_dir / "hosts").write_text(f"127.0.0.1 localhost\n{cr_addr} {server_host}\n")

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

        # the control room's own sessions: sisock's hub and a glue-like consumer (TLS + WAMP-CRA), an OCS
        # feed subscriber on the anonymous port, all from inside the control room's namespace
        router = ControlRoomRouter(
            wss_url="wss://127.0.0.1:8080/ws",
            ws_url="ws://127.0.0.1:8001/ws",
            cert=cert,
            server_secret=secret_file.read_text().strip(),
            consumer_secret=consumer_file.read_text().strip(),
        )
        loop = Loop(netns=cr)
        hub = Hub(loop, router)
        consumer = Consumer(loop, router)
        feed = FeedListener(loop, router)
        assert hub.joined.wait(30) and consumer.joined.wait(30) and feed.joined.wait(30)

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
