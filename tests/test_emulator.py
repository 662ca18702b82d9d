"""The emulated firmware on the wire: dialect, scanner timing, physics, CLI lifecycle."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from drivers.ls372 import InputSetup, Model372
from drivers.transport import TcpTransport
from firmware_host.emulator import Emulator

from .conftest import free_port, wait_for


def raw_session(emu):
    s = socket.create_connection(emu.tcp.address, timeout=2)
    f = s.makefile("rb")
    return s, f


def ask(s, f, line: bytes) -> bytes:
    s.sendall(line)
    return f.readline()


def test_dialect(emu372):
    s, f = raw_session(emu372)
    assert ask(s, f, b"*IDN?\r\n") == b"LSCI,MODEL372,LSA23JD,1.3\r\n"
    assert ask(s, f, b"*ESR?\n") == b"128\r\n"  # power-on bit, then cleared
    s.sendall(b"\n\r\n")  # blank lines are ignored
    assert ask(s, f, b"INNAME? 5;:INTYPE? A\n") == b"MXC;1,02,1,10,0,1\r\n"
    assert ask(s, f, b"RANGE 0 4;RANGE? 0\n") == b"4\r\n"  # space between arguments
    assert ask(s, f, b"KRDG? A;RDGK? A\n").count(b";") == 1
    assert ask(s, f, b"FOO?;*ESR?\n") == b"32\r\n"  # unknown: no reply, command error bit
    assert ask(s, f, b"MOUT 0,150;*ESR?\n") == b"16\r\n"  # out of range: execution error
    assert ask(s, f, b'INNAME 2,"Still, Line";INNAME? 2\n') == b"Still, Line\r\n"
    assert ask(s, f, b"*OPC?\n") == b"1\r\n"
    s.close()


def test_third_client_refused(emu372):
    a = socket.create_connection(emu372.tcp.address)
    b = socket.create_connection(emu372.tcp.address)
    wait_for(lambda: len(emu372.tcp.clients) == 2, 5, what="the emulator serving the first two clients")
    c = socket.create_connection(emu372.tcp.address)
    c.settimeout(2)
    with pytest.raises((ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        c.sendall(b"*IDN?\n")  # the reset may come before or after this; recv blocks until it does
        data = c.recv(100)
        if not data:
            raise ConnectionResetError
    a.close()
    b.close()
    c.close()


def test_scanner_pause_dwell_and_frozen_values():
    emu = Emulator.ls372(seed=5, time_scale=1.0)
    emu.listen_tcp("127.0.0.1", 0)
    try:
        m = Model372(TcpTransport(*emu.tcp.address), timeout=1)
        m.connect()
        for ch in (1, 2, 3, 5):
            m.set_input_setup(ch, InputSetup(True, 5, 3, 21 if ch != 5 else 22, 1))
        m.set_scan(1, True)
        assert m.scan().channel == "1"
        emu.clock.advance(3.5)  # past the pause, inside the dwell
        assert m.scan().channel == "1"
        emu.clock.advance(5.0)  # past pause + dwell = 8 s: the scanner moved on
        assert m.scan().channel == "2"
        frozen = m.read(1)
        emu.control("heater 0")
        with emu.fridge.lock:
            emu.fridge.temps["4k"] = 4.0  # the 4 K plate warms while channel 1 is not measured
        emu.clock.advance(0.5)
        assert m.read(1).kelvin == frozen.kelvin  # not the active channel: frozen
        emu.clock.advance(8 + 8 + 8)  # 2 -> 3 -> 5 -> 1
        assert m.scan().channel == "1"
        emu.clock.advance(3.2)
        assert m.read(1).kelvin > frozen.kelvin  # measured again, sees the warmer plate
        a1 = m.read("A").kelvin
        emu.control("heater 0.001")
        emu.clock.advance(3000)
        assert m.read("A").kelvin > a1 * 2  # control input A is always live; the heater warms the MXC
        m.close()
    finally:
        emu.stop()


def test_cooldown_fast_forward():
    emu = Emulator.ls372(seed=1, warm=True)
    emu.listen_tcp("127.0.0.1", 0)
    try:
        # the physics catches up lazily on the next query: four simulated days of it can take
        # over a second on a loaded 2-core machine, so the reply gets a generous timeout
        m = Model372(TcpTransport(*emu.tcp.address), timeout=15)
        m.connect()
        assert m.read("A").kelvin is None  # 295 K is off a RuOx curve: flagged, not a number
        emu.clock.advance(4 * 86400)
        r = m.read("A")
        assert r.valid and r.kelvin < 0.05
        m.close()
    finally:
        emu.stop()


@pytest.mark.slow
def test_cli_ready_line_and_sigterm(tmp_path):
    port = free_port()
    link = tmp_path / "ls240"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p1 = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "emulate",
            "ls372",
            "--listen",
            f"127.0.0.1:{port}",
            "--serial-link",
            str(tmp_path / "ls372"),
            "--time-scale",
            "10",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    p2 = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "emulate", "ls240", "--serial-link", str(link), "--channels", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line1 = p1.stdout.readline()
        line2 = p2.stdout.readline()
        assert f"tcp 127.0.0.1:{port}" in line1 and "ls372" in line1
        assert str(link) in line2 and "240-8P" in line2
        m = Model372.tcp("127.0.0.1", port, timeout=2)
        assert m.connect().serial == "LSA23JD"
        m.close()
    finally:
        p1.send_signal(signal.SIGTERM)
        p2.send_signal(signal.SIGINT)
        assert p1.wait(10) == 0 and p2.wait(10) == 0
    assert not link.exists()


@pytest.mark.slow
def test_ledger_counts_only_readings_delivered_whole(emu372):
    """The loss measurements rest on the ledger: whole replies count, faulted and late ones apart."""
    import socket as _socket

    def ask(line: str, timeout: float = 2.0) -> bytes:
        # the emulator serves two clients and resets a third: wait until it has let go of the last ask's
        wait_for(lambda: not emu372.tcp.clients, 5, what="the emulator done with the previous connection")
        with _socket.create_connection(emu372.tcp.address, timeout=timeout) as s:
            s.sendall(line.encode() + b"\r\n")
            s.settimeout(timeout)
            data = b""
            try:
                while not data.endswith(b"\r\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
            except TimeoutError:
                pass
            return data

    # the emulator notes a reply just after sending it: wait for the note, bounded
    reply = ask("KRDG? A;RDGR? A;RDGST? A")
    k, r, _ = reply.decode().strip().split(";")
    wait_for(lambda: emu372.ledger.total() == 2, 5, what="the reading in the ledger")
    assert emu372.ledger.snapshot() == {("A", "kelvin"): [float(k)], ("A", "sensor"): [float(r)]}
    ask("SCAN?;*IDN?")  # not readings
    # an execution error: no reply, nothing counted. *OPC? after it on the same connection answers
    # only once the emulator is done with KRDG? 99, notes included
    assert ask("KRDG? 99\r\n*OPC?") == b"1\r\n"
    assert emu372.ledger.total() == 2
    emu372.control("garbage 1")
    ask("KRDG? A")
    emu372.control("partial 1")
    ask("RDGR? 5", timeout=0.5)
    wait_for(lambda: emu372.ledger.faulted == 2, 5, what="two faulted replies")
    assert emu372.ledger.total() == 2
    emu372.control("slow 0.3")
    ask("KRDG? 5")
    emu372.control("clear")
    wait_for(lambda: emu372.ledger.late_total() == 1, 5, what="a late reply")
    assert emu372.ledger.total() == 2
    ask("KRDG? 5;SRDG? 5")
    wait_for(lambda: emu372.ledger.total() == 4, 5, what="two more readings")
    assert emu372.ledger.counts() == {"5/kelvin": 1, "5/sensor": 1, "A/kelvin": 1, "A/sensor": 1}
    assert '"5/kelvin": 1' in emu372.control("ledger")


@pytest.mark.slow
def test_autoscan_snapshots_are_stored_only_when_the_configuration_changes(tmp_path):
    """v1 put the scanner's current channel into every snapshot: under autoscan nearly every
    10-minute snapshot was new (a year: ~200 MiB). The channel under autoscan is state, not
    configuration; a parked scanner's channel is configuration."""
    from appliance.store import Store

    emu = Emulator.ls372(seed=5, time_scale=1.0)
    emu.listen_tcp("127.0.0.1", 0)
    store = Store(tmp_path / "k.db")
    try:
        m = Model372(TcpTransport(*emu.tcp.address), timeout=1)
        m.connect()
        for ch in (1, 2, 3):
            m.set_input_setup(ch, InputSetup(True, 5, 3, 21, 1))
        m.set_scan(1, True)
        channels, stored = set(), 0
        for _ in range(12):  # twelve snapshots, the scanner on another channel for most of them
            channels.add(m.scan().channel)
            stored += store.snapshot("LSA23JD", m.configuration(["1", "2", "3"]))
            emu.clock.advance(8.0)
        assert len(channels) >= 3 and stored == 1
        config = m.configuration(["1", "2", "3"])
        for _ in range(365 * 144):  # a year of 10-minute snapshots while nothing is changed
            stored += store.snapshot("LSA23JD", json.loads(json.dumps(config)))
        m.set_scan(2, False)  # parked on channel 2: that is configuration
        stored += store.snapshot("LSA23JD", m.configuration(["1", "2", "3"]))
        store.write([])
        assert stored == 2 and [c["scan"] for _, c in store.snapshots("LSA23JD")] == [
            {"autoscan": True},
            {"autoscan": False, "channel": "2"},
        ]
    finally:
        store.close()
        emu.stop()


def _closed_loop_device():
    from firmware_host.ls372_device import LS372Device
    from firmware_host.physics import Fridge
    from firmware_host.sim_clock import SimClock

    clock = SimClock(scale=1e-9)  # frozen: only advance() moves simulated time
    dev = LS372Device(clock, Fridge(), seed=11)
    disp = dev.dispatcher()
    for line in ("OUTMODE 0,5,A,0,0,0,1", "RANGE 0,5", "PID 0,0.5,40,0", "SETP 0,0.05"):
        disp.handle_line(line)
    assert disp.handle_line("*ESR?") == "128"  # power-on bit only: every command accepted
    return clock, disp


def test_heater_loop_is_a_function_of_simulated_time_only():
    """The PID integral grows per simulated second, not per HTR? query: polling 200 times or once
    over the same 20 simulated seconds gives the same heater output."""
    clock_a, often = _closed_loop_device()
    clock_b, once = _closed_loop_device()
    outputs = []
    for _ in range(200):
        clock_a.advance(0.1)
        outputs.append(float(often.handle_line("HTR?")))
    clock_b.advance(20.0)
    final = float(once.handle_line("HTR?"))
    assert outputs[-1] == pytest.approx(final, rel=1e-6, abs=1e-9)
    assert 0 < final <= 100 and outputs[0] < final  # the loop did act: the integral grew with time
