"""Real control-room parts for tests: a crossbar router (own venv), a sisock hub, a consumer, InfluxDB.

Everything listens on 127.0.0.1 (or only inside a network namespace the test made), is started by the test,
and stopped by pid.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from autobahn.asyncio.component import Component
from autobahn.wamp.types import SubscribeOptions

from ..conftest import free_port

ROOT = Path(__file__).resolve().parents[2]  # the checkout (this file is tests/support/routers.py)
CROSSBAR = ROOT / ".venv-crossbar" / "bin" / "crossbar"
TEMPLATE = ROOT / "images" / "server" / "crossbar" / "config.json"
RENDER = ROOT / "images" / "server" / "crossbar" / "render_config.py"
COMPOSE = ROOT / "images" / "server" / "docker-compose.yml"


def compose_setup_commands(compose: Path = COMPOSE) -> str:
    """The shell commands at the top of docker-compose.yml that prepare a directory (secrets, TLS), as a
    user copies them: the indented ``#   `` lines before ``services:``, comments and ``docker compose`` left out."""
    lines = []
    for line in compose.read_text().split("services:", 1)[0].splitlines():
        if not line.startswith("#   "):
            continue
        cmd = line[4:]
        if cmd.lstrip().startswith("#") or "docker compose" in cmd:
            continue
        lines.append(cmd)
    return "\n".join(lines) + "\n"


def make_cert(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate with SAN localhost/127.0.0.1 (service_identity ignores the CN)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{name}_key.pem", directory / f"{name}_cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class Crossbar:
    """crossbar with images/server's config, ports and secrets supplied through the environment."""

    def __init__(self, workdir: Path, server_secret: str, consumer_secret: str) -> None:
        self.workdir = workdir
        self.cbdir = workdir / ".crossbar"
        self.cbdir.mkdir(parents=True, exist_ok=True)
        self.tls_port, self.ocs_port = free_port(), free_port()
        self.server_secret, self.consumer_secret = server_secret, consumer_secret
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "crossbar.log"
        self.new_cert()

    def new_cert(self) -> Path:
        key, cert = make_cert(self.cbdir)
        self.cert = cert
        return cert

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.tls_port}/ws"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ocs_port}/ws"

    def start(self, timeout: float = 60) -> None:
        env = dict(
            os.environ,
            WAMP_SECRET=self.server_secret,
            WAMP_CONSUMER_SECRET=self.consumer_secret,
            CROSSBAR_TLS_PORT=str(self.tls_port),
            CROSSBAR_OCS_PORT=str(self.ocs_port),
            CROSSBAR_INTERFACE="127.0.0.1",  # tests: loopback only (the container's default is 0.0.0.0)
            CROSSBAR_OCS_INTERFACE="127.0.0.1",
        )
        subprocess.run(
            [sys.executable, str(RENDER), str(TEMPLATE), str(self.cbdir / "config.json")],
            env=env,
            check=True,
            timeout=30,
        )
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(CROSSBAR), "start", "--cbdir", str(self.cbdir), "--loglevel", "info"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("crossbar exited:\n" + self.log.read_text()[-3000:])
            try:
                with socket.create_connection(("127.0.0.1", self.ocs_port), timeout=0.5):
                    with socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.5):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("crossbar did not listen in time:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the node and its workers
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        (self.cbdir / "node.pid").unlink(missing_ok=True)


def enter_netns(name: str) -> None:
    """Move the calling thread (only it: setns acts per thread) into the network namespace ``name``
    (made by ``ip netns add``): the sockets it opens from then on live there, as do processes it starts."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(name: str, fn, timeout: float = 60):
    """``fn()`` run on a thread of its own inside the network namespace ``name``; its result or its exception."""
    out: dict = {}

    def run() -> None:
        try:
            enter_netns(name)
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{fn!r} in network namespace {name} still running after {timeout} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


class Loop:
    """An asyncio loop in a thread, for test-side WAMP sessions (inside network namespace ``netns`` if given)."""

    def __init__(self, netns: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        entered = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                if netns:
                    enter_netns(netns)
            except BaseException as exc:
                failed.append(exc)
                return
            finally:
                entered.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        entered.wait(10)
        if failed:
            raise failed[0]

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _transport(url: str, cert: Path | None):
    import ssl

    parsed = urllib.parse.urlparse(url)
    t = {
        "type": "websocket",
        "url": url,
        "max_retries": -1,
        "initial_retry_delay": 0.5,
        "max_retry_delay": 2,
        "endpoint": {"type": "tcp", "host": parsed.hostname, "port": parsed.port},
    }
    if parsed.scheme == "wss":
        ctx = ssl.create_default_context(cafile=str(cert))
        t["endpoint"]["tls"] = ctx
    return t


def _start(loop: Loop, comp: Component, joined: threading.Event) -> Component:
    """Run a test-side session on the test loop; ``joined`` is cleared whenever it leaves."""

    @comp.on_leave
    async def left(session, details):
        joined.clear()

    loop.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(comp.start(loop=loop.loop)))
    return comp


class Hub:
    """sisock's hub procedures for the test (data_node.add / subtract / consumer.get_data_node),
    removing a node when its session leaves, like components/hub/hub.py inside crossbar."""

    def __init__(self, loop: Loop, router: Crossbar, base: str = "org.simonsobservatory") -> None:
        self.nodes: list[dict] = []
        self.adds: list[tuple] = []
        self.joined = threading.Event()
        comp = Component(
            transports=[_transport(router.wss_url, router.cert)],
            realm="test_realm",
            authentication={"wampcra": {"authid": "server", "secret": router.server_secret}},
        )

        @comp.on_join
        async def joined(session, details):
            self.nodes.clear()  # a router restart ends every session: start clean, as the in-crossbar hub does

            def add(name, description, session_id):
                self.adds.append((name, session_id))
                if any(n["name"] == name for n in self.nodes):
                    return False
                self.nodes.append({"name": name, "description": description, "session": session_id})
                return True

            def subtract(name, session_id):
                self.nodes[:] = [n for n in self.nodes if not (n["name"] == name and n["session"] == session_id)]

            def get_data_node():
                return [{"name": n["name"], "description": n["description"]} for n in self.nodes]

            def on_leave(session_id):
                self.nodes[:] = [n for n in self.nodes if n["session"] != session_id]

            await session.register(add, f"{base}.data_node.add")
            await session.register(subtract, f"{base}.data_node.subtract")
            await session.register(get_data_node, f"{base}.consumer.get_data_node")
            await session.subscribe(on_leave, "wamp.session.on_leave")
            self.joined.set()

        self.comp = _start(loop, comp, self.joined)


class Consumer:
    """A session like sisock's Grafana glue: authid simonsobs, role consumer."""

    def __init__(self, loop: Loop, router: Crossbar, secret: str | None = None, base: str = "org.simonsobservatory"):
        self.loop, self.base = loop, base
        self.session = None
        self.joined = threading.Event()
        comp = Component(
            transports=[_transport(router.wss_url, router.cert)],
            realm="test_realm",
            authentication={"wampcra": {"authid": "simonsobs", "secret": secret or router.consumer_secret}},
        )

        @comp.on_join
        async def joined(session, details):
            self.session = session
            self.joined.set()

        self.comp = _start(loop, comp, self.joined)

    def call(self, uri: str, *args, **kw):
        assert self.joined.wait(30), "consumer never joined"

        async def _call():
            return await self.session.call(uri, *args, **kw)

        return self.loop.run(_call())

    def nodes(self):
        return self.call(f"{self.base}.consumer.get_data_node")

    def get_fields(self, node, start=1, end=0):
        return self.call(f"{self.base}.consumer.{node}.get_fields", start, end)

    def get_data(self, node, fields, start, end, min_stride=None):
        return self.call(f"{self.base}.consumer.{node}.get_data", fields, start, end, min_stride=min_stride)


class FeedListener:
    """An OCS-style subscriber (like the InfluxDB publisher): wildcard on observatory..feeds.<feed>."""

    def __init__(self, loop: Loop, router: Crossbar, feed: str = "temperatures") -> None:
        self.messages: list = []
        self.joined = threading.Event()
        comp = Component(transports=[_transport(router.ws_url, None)], realm="test_realm")

        @comp.on_join
        async def joined(session, details):
            await session.subscribe(
                lambda data: self.messages.append(data),
                f"observatory..feeds.{feed}",
                options=SubscribeOptions(match="wildcard"),
            )
            self.joined.set()

        self.comp = _start(loop, comp, self.joined)

    def samples(self) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list] = {}
        for data in list(self.messages):
            blocks, feed = data
            for b in blocks.values():
                for fname, values in b["data"].items():
                    key = f"{feed['agent_address']}.{fname}"
                    out.setdefault(key, []).extend(zip(b["timestamps"], values, strict=False))
        return out


class Influx:
    """Debian's influxd 1.x with a generated config on loopback ports."""

    BIN = shutil.which("influxd") or "/usr/bin/influxd"

    def __init__(self, workdir: Path, host: str = "127.0.0.1", http_port: int | None = None) -> None:
        self.workdir = workdir
        self.host = host  # 0.0.0.0 only inside a network namespace of the test's own (as in a container)
        self.http_port, self.bind_port = http_port or free_port(), free_port()
        self.conf = workdir / "influxdb.conf"
        d = workdir / "influx"
        self.conf.write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.bind_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "{host}:{self.http_port}"
  log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
""")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.http_port}"

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [self.BIN, "-config", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "influxd.log", "ab"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("influxd did not start")

    def query(self, q: str, db: str = "ocs_feeds") -> dict:
        url = self.url + "/query?" + urllib.parse.urlencode({"db": db, "q": q, "epoch": "ms"})
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def create_db(self, db: str = "ocs_feeds") -> None:
        req = urllib.request.Request(
            self.url + "/query", data=urllib.parse.urlencode({"q": f"CREATE DATABASE {db}"}).encode()
        )
        urllib.request.urlopen(req, timeout=10).read()

    def write(self, lines: list[str], db: str = "ocs_feeds") -> None:
        """Line protocol straight into InfluxDB (ms precision), as another writer would."""
        url = self.url + "/write?" + urllib.parse.urlencode({"db": db, "precision": "ms"})
        req = urllib.request.Request(url, data=("\n".join(lines) + "\n").encode(), method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def count(self, measurement: str, field: str, db: str = "ocs_feeds") -> int:
        """How many points of ``field`` InfluxDB holds in ``measurement`` (0 if none)."""
        res = self.query(f'SELECT count("{field}") FROM "{measurement}"', db)["results"][0]
        return int(res["series"][0]["values"][0][1]) if res.get("series") else 0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
