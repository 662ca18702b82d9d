"""The Bluefors log folder's configuration (check-config, its secret) and its live emulator (CLI, faults)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from appliance import config
from firmware_host.bluefors_emulate import LiveWriter
from firmware_host.emulator import send_control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toml(log_dir, **extra) -> str:
    keys = {"model": "bluefors-logs", "name": "bluefors", "transport": "folder", "log_dir": str(log_dir)}
    keys |= {"timezone": "Europe/Helsinki"} | extra
    return "[[instrument]]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items() if v is not None)


def test_config_takes_a_folder_and_refuses_what_is_wrong(tmp_path):
    cfg = config.parse(toml(tmp_path, cifs_share="//bluefors-pc/logs"))
    assert cfg.instrument[0].timezone == "Europe/Helsinki" and cfg.instrument[0].cifs_share == "//bluefors-pc/logs"
    with pytest.raises(config.ConfigError, match="unknown time zone 'Mars/Olympus'"):
        config.parse(toml(tmp_path, timezone="Mars/Olympus"))
    with pytest.raises(config.ConfigError, match="needs timezone"):
        config.parse(toml(tmp_path, timezone=None))
    with pytest.raises(config.ConfigError, match="is read from a folder .*: use transport 'folder'"):
        config.parse(toml(tmp_path, transport="tcp", host="127.0.0.1"))
    with pytest.raises(config.ConfigError, match="372 AC resistance bridge has no 'folder' link: use transport 'tcp'"):
        config.parse(toml(tmp_path, model="372", timezone=None))
    with pytest.raises(config.ConfigError, match="needs log_dir"):
        config.parse(toml(tmp_path).replace(f'log_dir = "{tmp_path}"\n', ""))


def test_credentials_file_is_checked_as_a_secret(tmp_path):
    creds = tmp_path / "share-creds"
    creds.write_text("username=bluefors\npassword=x\n")
    os.chmod(creds, 0o644)
    cfg = config.parse(toml(tmp_path, credentials_file=str(creds)))
    problems = config.file_problems(cfg)
    assert len(problems) == 1 and problems[0].message.startswith("instrument[0].credentials_file")
    assert "readable by others" in problems[0].message
    os.chmod(creds, 0o600)
    assert config.file_problems(cfg) == []


def test_live_writer_keeps_time_and_takes_faults_on_its_socket(tmp_path):
    live = LiveWriter(tmp_path / "logs", "Europe/Helsinki", time_scale=600.0, start=1796558400.0)  # 2026-12-06 12:00
    sock = live.listen_control(str(tmp_path / "ctl"))
    try:
        assert live.step() > 0  # the first lines, at the start time
        assert send_control(sock, "advance 3600") == "ok"
        day = tmp_path / "logs" / "26-12-06"
        assert (day / "maxigauge 26-12-06.log").exists()
        assert send_control(sock, "rotate Flowmeter") == "ok"
        assert (day / "Flowmeter 26-12-06.log.1").exists()
        assert send_control(sock, "rotate Nothing").startswith("error: no log 'Nothing'")
        assert send_control(sock, "stall x").startswith("error:")
        assert send_control(sock, "set compressor 0") == "ok"
        assert '"lines"' in send_control(sock, "ledger")
    finally:
        live.stop()


@pytest.mark.slow
def test_emulate_cli_writes_todays_folder_until_sigterm(tmp_path):
    logs = tmp_path / "logs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "emulate", "bluefors-logs", "--dir", str(logs), "--time-scale", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "ready" in proc.stdout.readline()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(logs.glob("*/maxigauge *.log")):
            time.sleep(0.05)
        assert any(logs.glob("*/maxigauge *.log"))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    bad = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "emulate", "bluefors-logs", "--dir", str(logs), "--zone", "Nowhere"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "bad --zone 'Nowhere'" in bad.stderr


def test_feeds_are_named_as_socs_bluefors_agent_names_its_own():
    from appliance.models import MODELS
    from appliance.store import FieldInfo
    from appliance.uplinks.influxdb import line_protocol
    from appliance.uplinks.ocs import blocks_for, feed_info
    from appliance.uplinks.outbox import Batch

    facts = MODELS["bluefors-logs"]
    assert facts.OCS_AGENT_CLASS == "BlueforsAgent" and getattr(facts, "OCS_FEED", None) == "bluefors"
    info = feed_info("observatory", "bluefors", "bluefors-logs", "bluefors", "1")
    assert info["address"] == "observatory.bluefors.feeds.bluefors" and info["agent_class"] == "BlueforsAgent"
    fields = {
        1: FieldInfo(1, "bluefors::p1", "bluefors", "p1", "mbar", "p1", "", ocs="pressure_ch1"),
        2: FieldInfo(2, "LSA23JD::mxc_t", "LSA23JD", "mxc_t", "K", "mxc", "", ocs="MXC_T"),
    }
    batch = Batch()
    batch.rows = {1: [(1000, 0.012, 0)], 2: [(1000, 0.011, 0)]}
    assert blocks_for(batch, fields)["bluefors"] == {
        "pressure_ch1": {"block_name": "pressure_ch1", "timestamps": [1.0], "data": {"pressure_ch1": [0.012]}}
    }
    lines = line_protocol(batch, fields, feeds={"bluefors": "bluefors"})
    assert "observatory.bluefors,feed=bluefors pressure_ch1=0.012 1000" in lines
    assert "observatory.LSA23JD,feed=temperatures MXC_T=0.011 1000" in lines
