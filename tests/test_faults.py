"""Every fault-injection mode: the driver raises the right typed error within its timeout,
never hangs, and works again after the fault clears (reconnect)."""

import time

import pytest

from drivers import BadReply, ConnectionLost, InstrumentTimeout
from drivers.ls240 import Model240
from drivers.ls372 import Model372
from drivers.transport import TcpTransport
from firmware_host.emulator import send_control

from .conftest import wait_for

pytestmark = pytest.mark.slow  # faults whose timeouts are waited out

TIMEOUT = 0.8


def connect372(emu) -> Model372:
    m = Model372(TcpTransport(*emu.tcp.address), timeout=TIMEOUT)
    m.connect()
    return m


def connect_when_back(m, timeout: float = 5.0) -> None:
    """Reconnect ``m`` as soon as its device node is back (the emulator replugs it after a while)."""

    def attempt() -> bool:
        try:
            m.connect()
            return True
        except ConnectionLost:
            return False

    wait_for(attempt, timeout, step=0.2, what="the pty coming back")


def timed(fn):
    t0 = time.monotonic()
    try:
        fn()
    finally:
        elapsed = time.monotonic() - t0
    return elapsed


@pytest.mark.parametrize(
    "fault,error",
    [
        ("mute on", InstrumentTimeout),
        ("slow 2", InstrumentTimeout),
        ("garbage 1", BadReply),
        ("partial 1", InstrumentTimeout),
        ("drop", ConnectionLost),
    ],
)
def test_372_tcp_fault_then_recovery(emu372, fault, error):
    m = connect372(emu372)
    assert emu372.control(fault) == "ok"
    ledger = emu372.ledger
    held_back = ledger.late_total() + ledger.faulted
    t0 = time.monotonic()
    with pytest.raises(error):
        m.read("A")
    assert time.monotonic() - t0 < TIMEOUT + 2.0  # about one timeout, not a hang (margin for a loaded machine)
    emu372.control("clear")
    if fault.startswith("slow"):  # the late reply goes out on the old socket; reconnect must discard it
        wait_for(lambda: ledger.late_total() + ledger.faulted > held_back, 10, what="the late reply sent")
    m.connect()
    r = m.read("A")
    assert r.valid and r.channel == "A"
    assert m.input_name(5) == "MXC"  # the next answer is this query's, not a stale one
    m.close()


def test_372_reset_like_power_cycle(emu372):
    m = connect372(emu372)
    m.set_input_name(5, "Renamed")
    assert emu372.control("reset") == "ok"
    with pytest.raises(ConnectionLost):
        m.read("A")
    m.connect()
    assert m.esr() & 128  # power-on bit
    assert m.input_name(5) == "MXC"
    m.close()


def test_372_third_tcp_client_refused(emu372):
    a, b = connect372(emu372), connect372(emu372)
    with pytest.raises((ConnectionLost, InstrumentTimeout)):
        connect372(emu372)
    a.close()
    wait_for(lambda: len(emu372.tcp.clients) < 2, 5, what="the emulator seeing the first client leave")
    c = connect372(emu372)
    assert c.read("A").valid
    b.close()
    c.close()


def test_240_unplug_and_replug(emu240):
    m = Model240.serial(emu240.pty.link, timeout=TIMEOUT)
    m.connect()
    assert m.read(1).valid
    assert emu240.control("unplug 1.0") == "ok"
    with pytest.raises(ConnectionLost):
        m.read(1)
    with pytest.raises(ConnectionLost):
        m.connect()  # the device node is gone
    connect_when_back(m)
    assert m.read(2).valid
    m.close()


def test_372_pty_unplug_and_garbage(emu372_pty):
    m = Model372.serial(emu372_pty.pty.link, timeout=TIMEOUT)
    m.connect()
    emu372_pty.control("garbage 1")
    with pytest.raises(BadReply):
        m.read("A")
    m.connect()
    assert m.read("A").valid
    emu372_pty.control("unplug 0.5")
    with pytest.raises(ConnectionLost):
        m.read("A")
    connect_when_back(m)
    assert m.read("A").valid
    m.close()


def test_control_socket(tmp_path, emu372):
    path = emu372.listen_control(str(tmp_path / "ctl"))
    assert send_control(path, "mute on") == "ok"
    assert emu372.faults.mute
    assert send_control(path, "clear") == "ok"
    assert send_control(path, "bogus").startswith("error")
    assert '"mxc"' in send_control(path, "status")


@pytest.mark.parametrize("link", ["tcp", "pty", "visa-socket", "visa-asrl"])
def test_late_reply_never_answers_a_later_query(emu372_pty, link):
    """The bug of issue 11: a slow reply to one query arrived while the next query waited, and was
    taken as its answer (a SETP? value stored as the heater output). Now a timeout resets the link
    before the next exchange, so the next query gets its own answer."""
    emu = emu372_pty
    emu.device.outputs[0].setp = 0.0421
    if link == "tcp":
        m = Model372(TcpTransport(*emu.tcp.address), timeout=TIMEOUT)
    elif link == "pty":
        m = Model372.serial(emu.pty.link, timeout=TIMEOUT)
    elif link == "visa-socket":
        m = Model372.visa("TCPIP::{}::{}::SOCKET".format(*emu.tcp.address), timeout=TIMEOUT)
    else:
        m = Model372.visa(f"ASRL{emu.pty.link}::INSTR", timeout=TIMEOUT)
    m.connect()
    assert m.setpoint(0) == pytest.approx(0.0421)
    emu.control("slow 1.3 SETP?")
    with pytest.raises(InstrumentTimeout):
        m.setpoint(0)  # the reply comes 1.3 s later, after the next query was sent
    heater = m.sample_heater_output()
    assert heater == 0.0  # output 0 is off: its own answer, not the late +42.100E-03
    assert m.input_name(5) == "MXC"
    emu.control("clear")
    assert m.setpoint(0) == pytest.approx(0.0421)
    m.close()


def test_372_pty_timeout_during_connect_then_reconnect(emu372_pty):
    """A timeout (even inside connect) keeps the 7O1 port open and waits for a quiet line before the
    next exchange: closing and reopening a 7O1 pty fails with EINVAL, a real port would not mind."""
    m = Model372.serial(emu372_pty.pty.link, timeout=TIMEOUT)
    m.connect()
    emu372_pty.control("mute on")
    with pytest.raises(InstrumentTimeout):
        m.read("A")
    with pytest.raises(InstrumentTimeout):
        m.connect()
    emu372_pty.control("clear")
    emu372_pty.control("slow 1.2 KRDG?")
    with pytest.raises(InstrumentTimeout):
        m.read("A")  # the reply comes late...
    emu372_pty.control("clear")
    assert m.connect().serial == "LSA23JD"  # ... and is drained before *IDN? is asked
    assert m.input_name(5) == "MXC"
    m.close()
