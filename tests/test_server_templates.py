"""Control-room templates (images/server): crossbar config, Grafana provisioning, compose."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance.naming import slug
from firmware_host.ls240_device import NAMES as LS240_NAMES
from firmware_host.ls372_device import WIRING

SERVER = Path(__file__).resolve().parent.parent / "images" / "server"
CROSSBAR = SERVER.parent.parent / ".venv-crossbar" / "bin" / "crossbar"


def test_crossbar_template_has_no_inline_secret_and_renders(tmp_path):
    text = (SERVER / "crossbar" / "config.json").read_text()
    cfg = json.loads(text)
    users = cfg["workers"][0]["transports"][0]["paths"]["ws"]["auth"]["wampcra"]["users"]
    assert {u["secret"] for u in users.values()} == {"$WAMP_SECRET", "$WAMP_CONSUMER_SECRET"}
    roles = {r["name"] for r in cfg["workers"][0]["realms"][0]["roles"]}
    assert roles == {"server", "consumer", "iocs_agent", "iocs_controller"}
    for t in cfg["workers"][0]["transports"]:
        assert t["endpoint"]["interface"] == "127.0.0.1"  # loopback-safe default
    out = tmp_path / ".crossbar" / "config.json"
    out.parent.mkdir()
    env = dict(
        os.environ, WAMP_SECRET='a&b"c', WAMP_CONSUMER_SECRET="x", CROSSBAR_TLS_PORT="18080", CROSSBAR_OCS_PORT="18001"
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
    if CROSSBAR.exists():
        (tmp_path / ".crossbar" / "server_key.pem").write_text("")
        proc = subprocess.run(
            [str(CROSSBAR), "check", "--cbdir", str(tmp_path / ".crossbar")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Ok, node configuration" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
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


@pytest.mark.parametrize("tree", ["grafana", "grafana-11-simpod"])
def test_grafana_provisioning_is_consistent(tree):
    """Grafana 12 (Infinity + InfluxDB) and Grafana <= 11 (simpod + InfluxDB): datasources and dashboards agree."""
    ds = yaml.safe_load((SERVER / tree / "provisioning/datasources/kelvinpi.yaml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    prov = yaml.safe_load((SERVER / tree / "provisioning/dashboards/kelvinpi.yaml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboards = [json.loads(p.read_text()) for p in (SERVER / tree / "dashboards").glob("*.json")]
    assert dashboards and len({d["uid"] for d in dashboards}) == len(dashboards) and all(d["title"] for d in dashboards)
    names372 = {slug(n) for _, n, _ in WIRING.values()}
    names240 = {slug(n) for n in LS240_NAMES.values()}
    for d in dashboards:
        variables = {v["name"]: v for v in d["templating"]["list"]}
        for p in d["panels"]:
            uid = p["datasource"]["uid"]
            assert uid in uids or uid.strip("${}") in variables
            for t in p["targets"]:
                if "target" in t:  # Kelvinpi JSON datasource: <node>::<field> as the appliance names them
                    node, field = t["target"].split("::")
                    stem = re.sub(r"_[tr]$", "", field)
                    assert stem in (names372 if node == "$node372" else names240 | names372), t["target"]


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
    assert "password:" not in text and "secret:" not in text.replace("wamp_secret:", "").replace("consumer_secret:", "")
