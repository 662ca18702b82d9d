"""Drivers against the emulated firmware over real TCP sockets, real ptys and pyvisa-py."""

import time

import pytest

from drivers import WrongInstrument
from drivers.curves import read_340
from drivers.ls240 import Model240
from drivers.ls372 import FilterSetup, InputSetup, Model372
from drivers.transport import SerialTransport, TcpTransport, VisaTransport
from firmware_host.standard_curves import rx102a

from .conftest import ROOT


def tcp372(emu, **kw) -> Model372:
    host, port = emu.tcp.address
    m = Model372(TcpTransport(host, port), timeout=1.0, **kw)
    m.connect()
    return m


def test_tcp_readings_agree_through_the_assigned_curve(emu372):
    m = tcp372(emu372)
    m.set_scan(5, False)
    setup = m.input_setup(5)  # its reply comes after SCAN, sent first on this connection, took effect
    emu372.clock.advance(setup.pause + 1)
    r = m.read(5)
    assert r.valid and 0.005 < r.kelvin < 0.05
    curve = m.download_curve(setup.curve)
    assert curve.temperature(r.sensor) == pytest.approx(r.kelvin, rel=2e-3)
    a = m.read("A")
    assert a.valid and a.kelvin == pytest.approx(r.kelvin, rel=0.05)
    m.close()


def test_tcp_settings_round_trip(emu372):
    m = tcp372(emu372)
    m.set_input_setup(7, InputSetup(True, 15, 4, 21, 1))
    assert m.input_setup(7) == InputSetup(True, 15, 4, 21, 1)
    m.set_input_name(7, "Sample Stage")
    assert m.input_name(7) == "Sample Stage"
    m.set_filter(7, FilterSetup(True, 20, 5))
    assert m.filter(7) == FilterSetup(True, 20, 5)
    m.close()


def test_frequency_cmr_warmup_round_trip(emu372):
    m = tcp372(emu372)
    m.set_excitation_frequency("A", 4)
    assert m.excitation_frequency("A") == 4
    m.set_common_mode_reduction(True)
    assert m.common_mode_reduction()
    m.set_warmup(1, 25.5)
    assert m.warmup() == (1, 25.5)
    m.close()


def test_240_profibus_round_trip(emu240):
    m = Model240.serial(emu240.pty.link)
    m.connect()
    m.set_profibus_address(12)
    m.set_profibus_slot(3, 2, 3)
    assert (m.profibus_address(), m.profibus_slot(3), m.profibus_status()) == (12, (2, 3), 0)
    m.close()


@pytest.mark.slow
def test_curve_upload_download_over_tcp(emu372):
    m = tcp372(emu372)
    curve = read_340(ROOT / "firmware_host/curves/RX-102A.340")
    curve.points = curve.points[:20]
    # a name longer than CRVHDR holds (15) is refused before anything is sent, never cut (issue 22)
    with pytest.raises(ValueError, match="at most 15"):
        m.upload_curve(30, curve)
    curve.name = curve.name[:15]
    m.upload_curve(30, curve)
    back = m.download_curve(30)
    assert [p for pt in back.points for p in pt] == pytest.approx([p for pt in curve.points for p in pt])
    assert back.name == curve.name
    m.close()


def test_wrong_serial_is_refused(emu372):
    with pytest.raises(WrongInstrument):
        tcp372(emu372, expected_serial="LSA00XX")


def test_serial_pty_372_with_7o1(emu372_pty):
    m = Model372.serial(emu372_pty.pty.link, timeout=1.0, expected_serial="LSA23JD")
    m.connect()
    assert m.input_name(5) == "MXC"
    assert m.read("A").valid
    m.close()


@pytest.mark.slow
def test_serial_pty_372_with_wrong_framing_garbles(emu372_pty):
    """Opened 8N1 instead of 7O1, replies carry the parity bit: the driver must refuse them."""
    from drivers import BadReply, InstrumentTimeout

    m = Model372(SerialTransport(emu372_pty.pty.link, 57600), timeout=1.0)
    with pytest.raises((BadReply, InstrumentTimeout), match="framing|ASCII"):
        m.connect()


@pytest.mark.slow
def test_serial_pty_240(emu240):
    m = Model240.serial(emu240.pty.link, expected_serial="LSA24AZ")
    m.connect()
    assert m.channel_count == 2
    r1, r2 = m.read(1), m.read(2)
    assert 40 < r1.kelvin < 45 and 2.5 < r2.kelvin < 3.5
    assert 0.9 < r1.sensor < 1.2 and r1.sensor_units == "V"
    curve = m.download_curve(1)
    assert curve.temperature(r1.sensor) == pytest.approx(r1.kelvin, rel=1e-3)
    m.set_input_name(2, "4K Stage")
    assert m.input_name(2) == "4K Stage"
    m.close()


def test_240_8p(emu240_8p):
    m = Model240.serial(emu240_8p.pty.link)
    m.connect()
    assert m.channel_count == 8
    assert all(m.read(ch).valid for ch in range(1, 9))
    m.close()


def test_pyvisa_py_socket(emu372):
    host, port = emu372.tcp.address
    m = Model372(VisaTransport(f"TCPIP::{host}::{port}::SOCKET"), timeout=2.0)
    m.connect()
    assert m.identity.serial == "LSA23JD"
    assert m.read("A").valid
    assert m.scan().channel in {str(i) for i in range(1, 17)}
    m.close()


def test_tcp_framing_survives_split_and_merged_segments():
    """A reply split byte by byte, and two replies in one segment, are framed correctly."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve():
        conn, _ = srv.accept()
        conn.recv(100)
        for b in b"+1.5E+00\r\n":
            conn.sendall(bytes([b]))
            time.sleep(0.002)  # one byte per segment
        conn.sendall(b"+2.5E+00\r\n+3.5E+00\r\n")
        done.wait(10)  # the connection stays open until the client has read all three
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    t = TcpTransport(*srv.getsockname())
    t.open()
    t.write(b"KRDG? 1\n")
    assert t.read_line(2) == b"+1.5E+00"
    assert t.read_line(2) == b"+2.5E+00"
    assert t.read_line(2) == b"+3.5E+00"
    done.set()
    t.close()
    srv.close()


def test_emulator_physics_rx102a_shape():
    """Colder is more resistance for a RuOx, through the real published curve."""
    c = rx102a()
    assert c.sensor(0.05) > c.sensor(1.0) > c.sensor(40.0)


@pytest.mark.slow
def test_visa_asrl_372_is_opened_7o1(emu372_pty):
    """A VISA serial resource on the emulator's pty: the 372 speaks 57600 7O1 (the emulator garbles
    replies to a client that did not ask for odd parity, as the real link does)."""
    m = Model372.visa(f"ASRL{emu372_pty.pty.link}::INSTR", timeout=1.0, expected_serial="LSA23JD")
    m.connect()
    assert m.input_name(5) == "MXC"
    assert m.read("A").valid
    m.close()
    m.connect()  # a reconnect opens the same pty again
    assert m.scan().channel in {str(i) for i in range(1, 17)}
    m.close()


@pytest.mark.slow
def test_visa_asrl_372_without_parity_garbles(emu372_pty):
    """The old settings (data_bits=7 only: 7N1) are what the fix removed: the replies arrive garbled."""
    from drivers import BadReply, InstrumentTimeout
    from drivers.transport import visa_serial_settings

    m = Model372(
        VisaTransport(f"ASRL{emu372_pty.pty.link}::INSTR", serial_settings=visa_serial_settings(57600, 7, "N", 1)),
        timeout=1.0,
    )
    with pytest.raises((BadReply, InstrumentTimeout)):
        m.connect()


def test_visa_asrl_240(emu240):
    m = Model240.visa(f"ASRL{emu240.pty.link}::INSTR", expected_serial="LSA24AZ")
    m.connect()
    assert m.channel_count == 2
    assert m.read(1).valid and m.input_name(2) == "4K Plate"
    m.close()
