"""The emulated Model 336 / 350: the manual's examples, refusals, fault words, the pty, the heater loop
in simulated time, the ledger and ``kelvinpi emulate ls336``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from drivers import BadReply, ConnectionLost, InstrumentTimeout
from drivers.ls336 import Model336
from drivers.transport import TcpTransport
from firmware_host.emulator import Emulator

from .conftest import free_port


@pytest.fixture
def emu336(tmp_path):
    e = Emulator.ls336(seed=7)
    e.listen_tcp("127.0.0.1", 0)
    yield e
    e.stop()


@pytest.fixture
def plain():
    """An emulated 336 without interfaces: its command table is driven directly (no sockets to close)."""
    return Emulator.ls336(seed=7)


def ask(emu: Emulator, line: str) -> str | None:
    return emu.device.dispatcher().handle_line(line)


def fast(m: Model336) -> Model336:
    m.pacing = type(m.pacing)(0, 0, 0)
    return m


def test_manual_curve_example_and_delete(plain):
    # 336 manual p.130: CRVHDR 21,DT-470,00011134,2,325.0,1 configures user curve 21
    assert ask(plain, "CRVHDR 21,DT-470,00011134,2,325.0,1;*ESR?") == "128"  # power-on bit only
    assert ask(plain, "CRVHDR? 21") == "DT-470,00011134,2,+325.000,1"
    assert ask(plain, "CRVPT 21,1,0.09062,475.0;CRVPT? 21,1") == "+0.09062,+475"
    assert ask(plain, "CRVDEL 21;CRVHDR? 21") == "User Curve,,2,+375.000,1"  # never format 0
    assert ask(plain, "CRVHDR 20,X,Y,2,325,1;*ESR?") == "16"  # 1-20 are standard, read-only
    assert ask(plain, "CRVHDR 21,X,Y,7,325,1;*ESR?") == "16"  # the 336 has formats 1-4 only


@pytest.mark.parametrize(
    ("line", "esr"),
    [
        ("NOSUCH 1", 32),  # unknown: silence and the command-error bit
        ("KRDG? E", 16),
        ("KRDG? D2", 16),  # no 3062 fitted
        ("INTYPE A,5,0,0,0,1", 16),  # capacitance needs the 3061
        ("INTYPE A,1,0,2,0,1", 16),  # a diode has ranges 0-1
        ("RANGE 1,4", 16),  # 336: off, low, medium, high
        ("RANGE 3,2", 16),  # voltage outputs: off / on
        ("OUTMODE 1,5,1,0", 16),  # warm-up supply is for outputs 3 and 4
        ("PID 1,0,20,0", 16),
        ("MOUT 1,101", 16),
        ("HTRSET 1,3,0,0,1", 16),
        ('INNAME A,"sixteen chars xx"', 16),
    ],
)
def test_refusals_are_silent_and_set_esr(plain, line, esr):
    assert ask(plain, "*CLS") is None
    assert ask(plain, line) is None
    assert ask(plain, "*ESR?") == str(esr)


def test_ieee488_common_commands(plain):
    assert ask(plain, "*ESE 181;*ESE?") == "181"
    assert ask(plain, "*CLS;*TST?;*WAI;*OPC?;*ESR?") == "0;1;0"
    assert ask(plain, "*IDN?") == "LSCI,MODEL336,LSA336A/#######,2.9"


def test_350_identity_and_ranges():
    e = Emulator.ls336(model="350", serial="LSA350A")
    assert ask(e, "*IDN?").startswith("LSCI,MODEL350,LSA350A/")
    assert ask(e, "*CLS;RANGE 1,5;RANGE? 1;RANGE 1,6;*ESR?") == "5;16"


def test_heater_loop_does_not_depend_on_polling():
    """The loop runs on simulated time: 10 Hz polling and one jump land on the same state."""

    def setup() -> Emulator:
        e = Emulator.ls336(seed=3, time_scale=1e-9)  # wall time does not move the clock
        ask(e, "OUTMODE 1,1,3,0;PID 1,50,20,0;SETP 1,1.0;RANGE 1,1")
        return e

    polled, jumped = setup(), setup()
    for _ in range(150):
        polled.clock.advance(0.1)
        ask(polled, "KRDG? C;HTR? 1")
    jumped.clock.advance(15.0)
    a, b = ask(polled, "KRDG? C;HTR? 1"), ask(jumped, "KRDG? C;HTR? 1")
    assert a == b and float(b.split(";")[1]) > 0


def test_fault_words_and_recovery(emu336):
    m = fast(Model336(TcpTransport(*emu336.tcp.address), timeout=0.5))
    m.connect()
    assert emu336.control("garbage 1") == "ok"
    with pytest.raises(BadReply):
        m.read("A")
    assert m.read("A").valid
    emu336.control("drop")
    with pytest.raises(ConnectionLost):
        m.read("A")
    m.connect()
    assert m.read("B").valid
    emu336.control("mute on")
    with pytest.raises(InstrumentTimeout):
        m.read("A")
    emu336.control("clear")
    emu336.control("warmup 100")
    emu336.control("advance 500")
    assert m.kelvin("B") > 250  # the 4 K plate warmed towards the room
    emu336.control("reset")
    m.connect()  # the reset's power-on bit was read (cleared) by connect
    assert m.esr() == 0
    ledger = json.loads(emu336.control("ledger"))
    assert ledger["delivered"]["B/kelvin"] >= 2 and ledger["faulted"] >= 1
    m.close()


def test_usb_pty_is_7o1(tmp_path):
    e = Emulator.ls336(seed=8)
    link = e.listen_pty(str(tmp_path / "ls336"))
    try:
        m = fast(Model336.serial(link, timeout=1))
        assert m.connect().model == "MODEL336"
        assert m.read("C").valid
        m.close()
    finally:
        e.stop()


@pytest.mark.slow
def test_cli_emulate_ls336(tmp_path):
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "emulate", "ls336", "--listen", f"127.0.0.1:{port}", "--scanner"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        line = p.stdout.readline()
        assert f"tcp 127.0.0.1:{port}" in line and "Model 336" in line
        m = Model336.tcp("127.0.0.1", port, timeout=2)
        m.connect()
        assert len(m.inputs) == 8
        m.close()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    bad = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "emulate", "ls350", "--listen", "127.0.0.1:notaport"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "127.0.0.1:notaport" in bad.stderr
