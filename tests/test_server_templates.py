"""Control-room templates (images/server): crossbar config, Grafana provisioning, compose."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .support.routers import compose_setup_commands

SERVER = Path(__file__).resolve().parent.parent / "images" / "server"
CROSSBAR = SERVER.parent.parent / ".venv-crossbar" / "bin" / "crossbar"


def run_crossbar_check(workdir: Path, **env_extra: str) -> dict:
    """run-crossbar.sh as the container runs it, from a copy of crossbar/ in ``workdir`` prepared by the compose
    file's setup commands, with its last step (``exec crossbar start``) turned into the real ``crossbar check``
    (nothing listens): returns the config it rendered."""
    shutil.copytree(SERVER / "crossbar", workdir / "crossbar", dirs_exist_ok=True)
    bindir = workdir / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "crossbar"
    shim.write_text(f'#!/bin/sh\n[ "$1" = start ] && shift && exec "{CROSSBAR}" check "$@"\nexec "{CROSSBAR}" "$@"\n')
    shim.chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bindir}:{os.environ['PATH']}",
        WAMP_SECRET_FILE=str(workdir / "secrets" / "wamp-secret"),
        WAMP_CONSUMER_SECRET_FILE=str(workdir / "secrets" / "wamp-consumer-secret"),
        **env_extra,
    )
    proc = subprocess.run(
        ["sh", str(workdir / "crossbar" / "run-crossbar.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "Ok, node configuration" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    rendered = workdir / "crossbar" / ".crossbar" / "config.json"
    assert oct(rendered.stat().st_mode & 0o777) == "0o600"
    return json.loads(rendered.read_text())


def transports(cfg: dict) -> dict[str, dict]:
    """The router's two transports by what they are: ``cra`` (TLS + WAMP-CRA) and ``anonymous`` (OCS)."""
    out = {}
    for t in cfg["workers"][0]["transports"]:
        auth = t["paths"]["ws"]["auth"] if t["type"] == "web" else t["auth"]
        out["cra" if set(auth) == {"wampcra"} else "anonymous" if set(auth) == {"anonymous"} else repr(auth)] = t
    assert set(out) == {"cra", "anonymous"}, out
    return out


def published(service: dict) -> dict[int, str]:
    """docker compose's short port syntax: container port -> the host address it is published on ('' = all)."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        out[int(parts[-1])] = "" if host_ip in ("", "0.0.0.0") else host_ip
    return out


@pytest.mark.crossbar
def test_crossbar_template_has_no_inline_secret_and_renders(tmp_path):
    text = (SERVER / "crossbar" / "config.json").read_text()
    cfg = json.loads(text)
    users = cfg["workers"][0]["transports"][0]["paths"]["ws"]["auth"]["wampcra"]["users"]
    assert {u["secret"] for u in users.values()} == {"$WAMP_SECRET", "$WAMP_CONSUMER_SECRET"}
    roles = {r["name"] for r in cfg["workers"][0]["realms"][0]["roles"]}
    assert roles == {"server", "consumer", "iocs_agent", "iocs_controller"}
    for t in cfg["workers"][0]["transports"]:  # where it listens is the render step's, not a fixed address
        assert re.fullmatch(r"\$[A-Z_]+", t["endpoint"]["interface"]), t["endpoint"]
    out = tmp_path / ".crossbar" / "config.json"
    out.parent.mkdir()
    env = dict(
        os.environ,
        WAMP_SECRET='a&b"c',
        WAMP_CONSUMER_SECRET="x",
        CROSSBAR_TLS_PORT="18080",
        CROSSBAR_OCS_PORT="18001",
        CROSSBAR_INTERFACE="127.0.0.1",
        CROSSBAR_OCS_INTERFACE="127.0.0.1",
    )
    subprocess.run(
        [
            sys.executable,
            str(SERVER / "crossbar" / "render_config.py"),
            str(SERVER / "crossbar" / "config.json"),
            str(out),
        ],
        env=env,
        check=True,
    )
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    rendered = json.loads(out.read_text())
    assert (
        rendered["workers"][0]["transports"][0]["paths"]["ws"]["auth"]["wampcra"]["users"]["server"]["secret"]
        == 'a&b"c'
    )
    missing = subprocess.run(
        [
            sys.executable,
            str(SERVER / "crossbar" / "render_config.py"),
            str(SERVER / "crossbar" / "config.json"),
            str(out),
        ],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "is not set" in missing.stderr


def test_compose_setup_commands_run_in_a_clean_directory(tmp_path):
    """The commands at the top of docker-compose.yml, run as written in an empty directory: the secrets
    (0600) and a key and certificate whose subjectAltName holds the host name the Pis use."""
    from cryptography import x509

    proc = subprocess.run(
        ["bash", "-euc", compose_setup_commands()], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("wamp-secret", "wamp-consumer-secret"):
        secret = tmp_path / "secrets" / name
        assert oct(secret.stat().st_mode & 0o777) == "0o600" and len(secret.read_text().strip()) >= 32
    key = tmp_path / "crossbar" / ".crossbar" / "server_key.pem"
    assert b"PRIVATE KEY" in key.read_bytes()
    cert = x509.load_pem_x509_certificate((tmp_path / "crossbar" / ".crossbar" / "server_cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    host = subprocess.run(["hostname", "-f"], capture_output=True, text=True, check=True).stdout.strip()
    assert {"localhost", host} <= set(san.get_values_for_type(x509.DNSName))


@pytest.mark.crossbar
@pytest.mark.skipif(not CROSSBAR.exists(), reason="crossbar venv missing: run `make test`")
def test_what_is_published_is_reachable_and_what_is_anonymous_stays_private(tmp_path):
    """run-crossbar.sh's rendered config (its container defaults) against docker-compose.yml's ports: every port
    the compose file publishes to the network is one the container listens on at 0.0.0.0 (a published
    port is forwarded to the container's address, so 127.0.0.1 inside it is unreachable) and is TLS +
    WAMP-CRA; the anonymous OCS port is published on the host's loopback only, or not at all. The Pis'
    InfluxDB uplink reaches InfluxDB: 8086 is published to the network."""
    subprocess.run(["bash", "-euc", compose_setup_commands()], cwd=tmp_path, check=True, timeout=60)
    by_kind = transports(run_crossbar_check(tmp_path))
    cra, anonymous = by_kind["cra"], by_kind["anonymous"]
    assert "tls" in cra["endpoint"] and cra["paths"]["ws"]["type"] == "websocket"
    compose = yaml.safe_load((SERVER / "docker-compose.yml").read_text())
    crossbar_ports = published(compose["services"]["crossbar"])
    assert crossbar_ports.get(cra["endpoint"]["port"]) == "", crossbar_ports  # the Pis: sisock, OCS over CRA
    assert cra["endpoint"]["interface"] == "0.0.0.0"
    assert crossbar_ports.get(anonymous["endpoint"]["port"], "127.0.0.1") == "127.0.0.1", crossbar_ports
    if anonymous["endpoint"]["port"] in crossbar_ports:  # published on the host's loopback: forwarded in
        assert anonymous["endpoint"]["interface"] == "0.0.0.0"
    for port, host_ip in crossbar_ports.items():
        if host_ip == "":
            assert port == cra["endpoint"]["port"], f"crossbar port {port} is published but not TLS + WAMP-CRA"
    assert published(compose["services"]["influxdb"]) == {8086: ""}
    # outside a container the render step takes the address from the environment
    elsewhere = transports(run_crossbar_check(tmp_path, CROSSBAR_OCS_INTERFACE="127.0.0.1"))
    assert elsewhere["anonymous"]["endpoint"]["interface"] == "127.0.0.1"
    assert elsewhere["cra"]["endpoint"]["interface"] == "0.0.0.0"


@pytest.mark.parametrize("tree", ["grafana", "grafana-11-simpod"])
def test_grafana_provisioning_is_consistent(tree):
    """Grafana 12 (Infinity + InfluxDB) and Grafana <= 11 (simpod + InfluxDB): datasources and dashboards agree."""
    ds = yaml.safe_load((SERVER / tree / "provisioning/datasources/kelvinpi.yaml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    prov = yaml.safe_load((SERVER / tree / "provisioning/dashboards/kelvinpi.yaml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboards = [json.loads(p.read_text()) for p in (SERVER / tree / "dashboards").glob("*.json")]
    assert dashboards and len({d["uid"] for d in dashboards}) == len(dashboards) and all(d["title"] for d in dashboards)
    for d in dashboards:
        variables = {v["name"]: v for v in d["templating"]["list"]}
        for v in variables.values():
            if v["type"] == "query":  # filled from a provisioned datasource, or one the dashboard picks
                uid = v["datasource"]["uid"]
                assert uid in uids or variables[uid.strip("${}")]["type"] == "datasource", v["name"]
        for p in d["panels"]:
            uid = p["datasource"]["uid"]
            assert uid in uids or uid.strip("${}") in variables
            if "repeat" in p:
                assert variables[p["repeat"]]["type"] == "query", p["title"]
            for t in p["targets"]:
                if "target" in t:  # Kelvinpi JSON datasource: the series named by a variable filled from the Pi
                    name = re.fullmatch(r"\$(\w+)", t["target"])
                    assert name and variables[name.group(1)]["type"] == "query", t["target"]
                    assert p.get("repeat") == name.group(1), (p["title"], "one series per repeated panel")


def test_compose_override_for_grafana_11():
    base = yaml.safe_load((SERVER / "docker-compose.yml").read_text())
    over = yaml.safe_load((SERVER / "docker-compose.grafana11.yml").read_text())
    assert base["services"]["grafana"]["image"].startswith("grafana/grafana:12.")
    assert over["services"]["grafana"]["image"].endswith(":11.3.0")
    # compose merges volumes by mount path: the override's replace the base's
    targets = lambda svc: sorted(v.split(":")[1] for v in svc["volumes"] if v.startswith("./"))  # noqa: E731
    assert targets(over["services"]["grafana"]) == targets(base["services"]["grafana"])
    for v in over["services"]["grafana"]["volumes"]:
        assert (SERVER / v.split(":")[0]).is_dir(), v


def test_compose_takes_secrets_from_files():
    compose = yaml.safe_load((SERVER / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"crossbar", "influxdb", "grafana"}
    assert all("file" in s for s in compose["secrets"].values())
    text = (SERVER / "docker-compose.yml").read_text().lower()
    for name in ("wamp_secret:", "consumer_secret:", "grafana_admin_password:"):
        text = text.replace(name, "")
    assert "password:" not in text and "secret:" not in text


def test_grafana_admin_password_comes_from_a_secret_file(tmp_path):
    """Grafana is published on 3000: its admin password is the random one the setup commands write
    (0600), handed to Grafana as GF_SECURITY_ADMIN_PASSWORD__FILE, never admin/admin or inline."""
    subprocess.run(["bash", "-euc", compose_setup_commands()], cwd=tmp_path, check=True, timeout=60)
    compose = yaml.safe_load((SERVER / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    (secret,) = [s for s in grafana.get("secrets", []) if "grafana" in s]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == f"/run/secrets/{secret}"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]
    written = tmp_path / compose["secrets"][secret]["file"]
    assert oct(written.stat().st_mode & 0o777) == "0o600" and len(written.read_text().strip()) >= 32
    over = yaml.safe_load((SERVER / "docker-compose.grafana11.yml").read_text())["services"]["grafana"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in over.get("environment", {})  # the override keeps it
    readme = (SERVER.parent.parent / "README.md").read_text()
    assert "secrets/grafana-admin-password" in readme


def test_what_the_setup_makes_is_never_committed(tmp_path):
    """In a git repository holding a copy of images/server, the setup commands and run-crossbar.sh's render
    step leave nothing git would offer to commit: not secrets/ (WAMP secrets, Grafana's password), not
    crossbar/.crossbar/ (the TLS private key, the rendered config with the secrets in clear)."""
    repo = tmp_path / "repo"
    server = repo / "images" / "server"
    shutil.copytree(SERVER, server, ignore=shutil.ignore_patterns("secrets", ".crossbar", "__pycache__"))
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True).stdout  # noqa: E731
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "templates")
    subprocess.run(["bash", "-euc", compose_setup_commands()], cwd=server, check=True, timeout=60)
    env = dict(os.environ, WAMP_SECRET_FILE=str(server / "secrets/wamp-secret"))
    env["WAMP_CONSUMER_SECRET_FILE"] = str(server / "secrets/wamp-consumer-secret")
    subprocess.run(  # the render step of run-crossbar.sh, as it runs it
        [sys.executable, "render_config.py", "config.json", ".crossbar/config.json"],
        cwd=server / "crossbar",
        env=dict(
            env,
            WAMP_SECRET="s",
            WAMP_CONSUMER_SECRET="c",
            CROSSBAR_TLS_PORT="8080",
            CROSSBAR_OCS_PORT="8001",
            CROSSBAR_INTERFACE="0.0.0.0",
            CROSSBAR_OCS_INTERFACE="0.0.0.0",
        ),
        check=True,
        timeout=60,
    )
    made = {p.relative_to(server).as_posix() for p in server.rglob("*") if p.is_file()}
    assert {"secrets/wamp-secret", "crossbar/.crossbar/server_key.pem", "crossbar/.crossbar/config.json"} <= made
    assert git("status", "--porcelain", "--untracked-files=all") == ""
