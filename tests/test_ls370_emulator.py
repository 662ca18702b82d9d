"""The emulated Model 370: its command table, the scanner's settling, the serial rules, faults.

Byte-level checks go over TCP (a test convenience: a real 370 has no Ethernet) with the 50 ms
pacing rule off, so they need no sleeps; the pacing rule itself, the 7O1 pty and the driver are
checked on the pty. Simulated time (``clock.advance``) stands in for every wait.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time

import pytest

from drivers import BadReply, InstrumentTimeout
from drivers.ls370 import Model370
from firmware_host.emulator import Emulator


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """One emulator for the module (starting and stopping its threads costs more than the tests)."""
    emu = Emulator.ls370(seed=5)
    emu.listen_tcp("127.0.0.1", 0)
    emu.listen_pty(str(tmp_path_factory.mktemp("ls370") / "ls370"))
    yield emu
    emu.stop()


@pytest.fixture
def emu370(emulator):
    """The module's emulator as after a power cycle, faults cleared, the pacing rule off."""
    emulator.control("settle")  # every stage at its base temperature (before the power-on readings)
    emulator.device.power_on()
    emulator.faults.clear()
    emulator.device.strict_pacing = False
    return emulator


def ask(sock: socket.socket, line: bytes, timeout: float = 1.0) -> bytes | None:
    """Send one line; the reply line, or None when nothing comes within ``timeout``."""
    sock.sendall(line + b"\r\n")
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\r\n"):
        r, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            return None
        buf += sock.recv(4096)
    return buf[:-2]


@pytest.fixture
def link(emu370):
    with socket.create_connection(emu370.tcp.address, timeout=2) as s:
        yield s


def test_identity_and_power_on_status(link):
    assert ask(link, b"*IDN?").split(b",")[:3] == [b"LSCI", b"MODEL370", b"370A1B"]
    assert ask(link, b"*ESR?") == b"128"
    assert ask(link, b"*ESR?") == b"0"


def test_unknown_command_is_silent_and_sets_command_error(link):
    """An unknown command or query gets no reply; ESR bit 32 (UNVERIFIED: FIDELITY.md, 370 row 4).
    *WAI is one: the 370 manual says it is not supported; so is the 372's KRDG? and input A."""
    ask(link, b"*ESR?")  # the power-on bit
    for line in (b"FOO?", b"*WAI", b"KRDG? 1", b"OUTMODE? 0"):
        assert ask(link, line, timeout=0.05) is None
        assert ask(link, b"*ESR?") == b"32", line
    assert ask(link, b"RDGK? A", timeout=0.05) is None
    assert ask(link, b"*ESR?") == b"16"  # a known query with a bad channel: execution error


def test_only_the_last_query_of_a_message_is_answered(link):
    assert ask(link, b"SCAN?;*IDN?").startswith(b"LSCI,MODEL370")
    assert ask(link, b"HTRRNG 1;HTRRNG?") == b"1"  # the manual's example program


def test_reply_formats(link):
    assert ask(link, b"SCAN?") == b"01,1"
    assert ask(link, b"INSET? 5") == b"1,010,003,02,1"
    assert ask(link, b"RDGRNG? 5") == b"0,03,10,1,0"
    assert ask(link, b"RDGST? 5") == b"000"
    assert ask(link, b"CMODE?") == b"4"
    assert ask(link, b"CSET?") == b"05,0,1,001,1,8,120"
    assert ask(link, b"HTRRNG?") == b"0"
    assert ask(link, b"PID?") == b"+00010.0,+00020.0,+0000.0"  # the 372 emulator's (socs' fixture) format
    assert ask(link, b"IEEE 3,0;IEEE?") == b"3,0,12"  # InstrumentKit's connect
    assert ask(link, b"CRVHDR? 2").split(b",")[2:] == [b"4", b"+040.000", b"1"]


def test_out_of_range_arguments_refused(link):
    ask(link, b"*ESR?")
    for line in (b"HTRRNG 9", b"CMODE 5", b"INSET 5,1,10,3,21,1", b"RDGRNG 5,0,13,10,1,0", b"SCAN 17,0"):
        link.sendall(line + b"\r\n")
        assert ask(link, b"*ESR?") == b"16", line


def test_scanner_settles_after_a_channel_change(emu370, link):
    """After SCAN (or an autoscan step) a channel repeats its old reading until its pause has passed."""
    assert ask(link, b"INSET 2,1,10,5,1,1;SCAN 5,0;*OPC?") == b"1"  # (done before the clock moves)
    emu370.clock.advance(30)
    before = ask(link, b"RDGR? 2")  # the last value measured on 2, held while the scanner is on 5
    emu370.control("warm")  # every stage at room temperature: channel 2 reads anew far from its old value
    assert ask(link, b"SCAN 2,0;*OPC?") == b"1"
    emu370.clock.advance(4.9)  # inside channel 2's 5 s pause
    assert ask(link, b"RDGR? 2") == before
    emu370.clock.advance(0.2)
    after = ask(link, b"RDGR? 2")
    assert after != before and float(after) > 0


def test_heater_loop_in_simulated_time(emu370, link):
    """Closed loop on channel 5 (SCAN 5 held): the mixing chamber heats from its 11.5 mK base towards
    15 mK in 300 simulated seconds (the 372's loop, reused), no sleeping."""
    link.sendall(b"SCAN 5,0;CSET 5,0,1,1,1,8,120;PID 20,100,0;SETP 0.015;HTRRNG 4;CMODE 1\r\n")
    assert ask(link, b"*ESR?") == b"128"
    emu370.clock.advance(300)
    assert 0.0125 < float(ask(link, b"RDGK? 5", timeout=10)) < 0.015  # 3000 loop steps: bounded, not slept
    assert 0 < float(ask(link, b"HTR?")) < 100
    assert ask(link, b"CMODE 4;*OPC?") == b"1"
    emu370.clock.advance(1)
    assert float(ask(link, b"HTR?")) == 0


def test_pacing_rule_drops_a_message_inside_the_quiet_time(tmp_path):
    """Two messages in one write: the second starts inside the 50 ms after the first reply and is lost."""
    emu = Emulator.ls370(seed=6)
    s = socket.create_connection(emu.listen_tcp("127.0.0.1", 0), timeout=2)
    try:
        s.sendall(b"*IDN?\r\n*IDN?\r\n")
        assert ask(s, b"", timeout=0.3) is not None  # (a blank line is ignored) the first reply
        assert ask(s, b"", timeout=0.1) is None  # no second one
        assert emu.device.paced_drops == 1
    finally:
        s.close()
        emu.stop()


def test_driver_over_the_7o1_pty_with_faults(emu370):
    """The driver (9600 7O1, 50 ms pacing) on the pty; a garbled reply is a BadReply, mute a timeout."""
    emu370.device.strict_pacing = True
    m = Model370.serial(emu370.pty.link, timeout=0.2)
    try:
        assert m.connect().serial == "370A1B"
        assert m.read(1).kelvin == pytest.approx(3.05, rel=0.01)
        emu370.control("garbage 1")
        with pytest.raises(BadReply):
            m.scan()
        emu370.control("mute on")
        with pytest.raises(InstrumentTimeout):
            m.scan()
        emu370.control("clear")
        assert m.scan().channel == "1"
        assert emu370.device.paced_drops == 0  # the driver keeps the manual's pacing
    finally:
        m.close()


def test_an_8n1_client_sees_parity_bits(emu370):
    """Opened 8N1 instead of 7O1, a reply arrives with the parity bit in bit 7 (as on the wire)."""
    import termios
    import tty

    fd = os.open(emu370.pty.link, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[2] = (attrs[2] & ~(termios.PARENB | termios.PARODD | termios.CSIZE)) | termios.CS8  # 8N1
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        termios.tcflush(fd, termios.TCIFLUSH)
        os.write(fd, b"*IDN?\r\n")
        buf = b""
        deadline = time.monotonic() + 1
        while not buf.endswith(b"\x8a") and time.monotonic() < deadline:  # LF with its parity bit
            if select.select([fd], [], [], 0.1)[0]:
                buf += os.read(fd, 4096)
        assert any(b & 0x80 for b in buf)
    finally:
        os.close(fd)


def test_ledger_counts_a_reading_once_its_status_left_whole(emu370, link):
    """A 370 reading is three replies (RDGK?, RDGR?, RDGST?): the ledger counts it when the third
    leaves whole, and not when a garbled reply or a missing RDGST? spoils the group."""

    def delta(before: dict) -> list[int]:
        ask(link, b"*OPC?")  # the reply before it has been noted (the ledger notes after sending)
        after = json.loads(emu370.control("ledger"))["delivered"]
        return [after.get(k, 0) - before.get(k, 0) for k in ("1/kelvin", "1/sensor")]

    before = json.loads(emu370.control("ledger"))["delivered"]
    for q in (b"RDGK? 1", b"RDGR? 1", b"RDGST? 1"):
        ask(link, q)
    assert delta(before) == [1, 1]
    ask(link, b"RDGK? 1")
    ask(link, b"RDGR? 1")  # no RDGST?: the next reading's RDGK? starts a new group
    emu370.control("garbage 1")
    for q in (b"RDGK? 1", b"RDGR? 1", b"RDGST? 1"):
        ask(link, q)  # the kelvin reply garbled: the whole reading is spoiled
    assert delta(before) == [1, 1]
    ask(link, b"RDGK? 1;RDGR? 1")  # two queries in one message: only RDGR? is answered, no group begun
    ask(link, b"RDGST? 1")
    assert delta(before) == [1, 1]


@pytest.mark.slow
def test_kelvinpi_emulate_ls370_cli(tmp_path):
    link = tmp_path / "ls370"
    p = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "emulate", "ls370", "--serial-link", str(link), "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = p.stdout.readline() if p.stdout else ""
        assert "emulated Model 370 370A1B ready: serial" in line
        m = Model370.serial(str(link))
        assert m.connect().model == "MODEL370"
        m.close()
    finally:
        p.terminate()
        p.wait(timeout=5)
