"""Config validation: golden cases in Telegraf's manner (tests/config_cases/<case>/{kelvinpi.toml,expected.err})."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import config

CASES = sorted(p for p in (Path(__file__).parent / "config_cases").iterdir() if p.is_dir())
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case):
    """`kelvinpi check-config` output equals the golden file; exit 0 only when it is empty."""
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", "check-config", "kelvinpi.toml"],
                          cwd=case, capture_output=True, text=True, timeout=60)
    expected = (case / "expected.err").read_text()
    assert proc.stderr == expected
    assert (proc.returncode == 0) == (expected == "")


def test_every_error_has_a_line():
    for case in CASES:
        for line in (case / "expected.err").read_text().splitlines():
            assert line.startswith("kelvinpi.toml:") and line.split(":")[1].isdigit(), line


def test_sample_and_demo_configs_validate(tmp_path):
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "sample-config"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "[[instrument]]" in out
    cfg = config.parse(out, "sample")
    assert [i.model for i in cfg.instrument] == ["372", "240"]
    demo = config.load(ROOT / "appliance" / "demo.toml")
    assert demo.web.bind == "127.0.0.1"


def test_defaults_are_safe():
    cfg = config.parse('[[instrument]]\nmodel="372"\nname="X"\ntransport="tcp"\nhost="h"\n')
    assert cfg.control.enabled is False and cfg.uplink == []


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(config.ConfigError, match="UTF-8"):
        config.load(bad)


def test_secret_file_permissions(tmp_path):
    f = tmp_path / "secret"
    f.write_text("s3cret\n")
    os.chmod(f, 0o644)
    with pytest.raises(PermissionError, match="readable by others.*chmod 600"):
        config.read_secret(f, "uplink[0]")
    os.chmod(f, 0o600)
    assert config.read_secret(f, "uplink[0]") == "s3cret"
    os.chmod(f, stat.S_IRUSR)
    assert config.read_secret(f, "x") == "s3cret"
