"""`kelvinpi probe` (issue 11): a read-only report; the emulator's state is unchanged and it heard no
set command. And the opt-in hardware tests are not collected without KELVINPI_HW_* set."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from firmware_host.protocol import parse_message

pytestmark = pytest.mark.slow  # the probe CLI in subprocesses


def _state372(dev):
    outputs = {
        k: {f: v for f, v in vars(o).items() if f not in ("integral", "output_pct")} for k, o in dev.outputs.items()
    }
    return (
        copy.deepcopy(dev.channels),
        outputs,
        dev.autoscan,
        copy.deepcopy(dev.curves.slots),
        dev.still,
        dict(dev.freq),
        dev.cmr,
        dev.esr,
    )


def _state240(dev):
    return (copy.deepcopy(dev.inputs), copy.deepcopy(dev.curves.slots), dev.modname, dev.brightness, dev.addr)


def _only_queries(lines) -> None:
    for line in lines:
        for part in line.split(";"):
            name, _ = parse_message(part)
            assert not name or name.endswith("?"), f"probe sent a command: {line!r}"


def _probe(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "probe", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("link", ["tcp", "visa"])
def test_probe_372_is_read_only(emu372_pty, link):
    emu = emu372_pty
    before = _state372(emu.device)
    start = len(emu.ledger.heard)
    if link == "tcp":
        host, port = emu.tcp.address
        r = _probe("--model", "372", "--host", host, "--port", str(port))
    else:
        r = _probe("--model", "372", "--resource", f"ASRL{emu.pty.link}::INSTR")
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    assert "identity: LSCI,MODEL372,LSA23JD,1.3" in out and "round trip (*IDN?, 5 times)" in out
    assert "scanner: channel" in out and "'MXC'" in out
    assert "22 'RX-102A-CAL'" in out and "(in use)" in out
    assert "   A " in out and "status 0" in out
    heard = list(emu.ledger.heard)[start:]
    assert len(heard) > 60
    _only_queries(heard)
    assert "*ESR?" not in " ".join(heard)  # reading the event register would clear it
    assert _state372(emu.device) == before


def test_probe_240_is_read_only(emu240):
    before = _state240(emu240.device)
    r = _probe("--model", "240", "--device", emu240.pty.link)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "identity: LSCI,MODEL240-2P,LSA24AZ" in r.stdout and "'50K Plate'" in r.stdout
    assert "DT-600" in r.stdout and r.stdout.count(" K  ") == 2
    _only_queries(emu240.ledger.heard)
    assert _state240(emu240.device) == before


def test_probe_of_nothing_fails_clearly(tmp_path):
    r = _probe("--model", "240", "--device", str(tmp_path / "ttyUSB9"), "--timeout", "0.5")
    assert r.returncode == 1 and "cannot open" in r.stderr
    r = _probe("--model", "240", "--host", "127.0.0.1")
    assert r.returncode == 1 and "no Ethernet" in r.stderr


def test_hardware_tests_not_collected_without_opt_in(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("KELVINPI_HW_")}
    from tests.conftest import ROOT

    ask = [sys.executable, "-c", "import tests.conftest as c; print(c.collect_ignore)"]
    r = subprocess.run(ask, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert r.stdout.strip() == "['test_hardware.py']", r.stderr
    env["KELVINPI_HW_240"] = "/dev/nonexistent-240"
    r = subprocess.run(ask, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert r.stdout.strip() == "[]", r.stderr
