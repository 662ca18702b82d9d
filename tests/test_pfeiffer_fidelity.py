"""The emulated TPG 366 against socs' TPG 366 driver's byte exchange (firmware_host/FIDELITY.md, "Pfeiffer").

socs' driver is not imported: its exchange is written out here as bytes, citing
simonsobs/socs @ 24a4adeb ``socs/agents/pfeiffer_tpg366/drivers.py``, and every answer is parsed
the way socs parses it, then compared with what the emulator's state holds. socs' recorded byte
fixture (``tests/integration/test_pfeiffer_tpg366_agent_integration.py`` lines 19-26) is copied
below as test data, to check our driver reads the real controller's answer as socs' authors
recorded it (from the TPG 366 protocol manual, page 11).
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from drivers.pfeiffer import TPG366
from drivers.transport import TcpTransport
from firmware_host.pfeiffer_device import fmt_pressure
from firmware_host.pfeiffer_emulator import PfeifferEmulator

# socs tests/integration/test_pfeiffer_tpg366_agent_integration.py:21-22 (copied: its recorded answers)
SOCS_FIXTURE = {
    b"PRX": b"\x06\r\n",
    b"\x05": b"0,+1.2345E+01,0,+2.3456E+01,0,+3.4567E+01,0,+4.5678E+01,0,+5.6789E+01,0,+6.7891E+01\r\n",
}
GAUGE = rb"[0-6],[+-]\d\.\d{4}E[+-]\d{2}"
PRX_SHAPE = re.compile(GAUGE + rb"(?:," + GAUGE + rb"){5}\r\n")


@pytest.fixture
def emu():
    e = PfeifferEmulator.tpg366(time_scale=1e-9, seed=8)  # frozen: the state does not move during a test
    e.listen_tcp("127.0.0.1", 0)
    yield e
    e.stop()


def recv(sock: socket.socket, timeout: float = 2.0) -> bytes:
    """One ``recv(4096)`` as socs' TCPInterface.recv does (socs/tcp.py:119-180), bounded."""
    sock.settimeout(timeout)
    return sock.recv(4096)


def socs_connect(address) -> socket.socket:
    """socs drivers.py:34-43: connect, then one ENQ "which stops transmission" and one recv."""
    sock = socket.create_connection(address, timeout=2)
    sock.sendall(b"\x05")
    recv(sock)  # socs prints it and goes on: the power-up readings, the error word, or both
    return sock


def socs_send_mnemonic(sock: socket.socket, message: bytes, depth: int = 0) -> bytes:
    """socs drivers.py:45-70: send, recv, the last line must be ACK; otherwise drain once (a recv)
    and resend (socs recurses without bound; bounded here)."""
    sock.sendall(message)
    resp = recv(sock)
    if resp.splitlines()[-1].strip() != b"\x06":
        assert depth < 3, resp
        recv(sock)
        return socs_send_mnemonic(sock, message, depth + 1)
    return resp


def socs_send_and_recv(sock: socket.socket, message: bytes) -> str:
    """socs drivers.py:97-101: _send_mnemonic, ENQ, recv, decode."""
    socs_send_mnemonic(sock, message)
    sock.sendall(b"\x05")  # drivers.py:73-74 (ENQ = '\x05', line 8)
    return recv(sock).decode()


def wire(emu, n: int) -> tuple[int, float]:
    r = emu.device.reading(n)
    return r.code, float(fmt_pressure(r.value))


def test_socs_read_pressure_all(emu):
    """socs drivers.py:151-162: 'PRX\\r\\n'; states = fields[::2] as int, pressures = fields[1::2] as
    float, a pressure set to 0. wherever the state is not 0."""
    emu.control("sensor off 3")
    with socs_connect(emu.tcp.address) as s:
        read_str = socs_send_and_recv(s, b"PRX\r\n")
    assert PRX_SHAPE.fullmatch(read_str.encode()), read_str
    pressure_str = read_str.split("\r")[0]
    states = [int(x) for x in pressure_str.split(",")[::2]]
    pressures = [float(p) for p in pressure_str.split(",")[1::2]]
    for j, st in enumerate(states):
        if st != 0:
            pressures[j] = 0.0
    expect = [wire(emu, n) for n in range(1, 7)]
    assert states == [c for c, _ in expect] == [0, 0, 4, 0, 0, 0]
    assert pressures == [v if c == 0 else 0.0 for c, v in expect]


def test_socs_read_pressure_and_channel_power(emu):
    """socs drivers.py:135-139 ('PR%d\\r\\n', the number after the last comma) and 113-116 ('SEN\\r\\n')."""
    with socs_connect(emu.tcp.address) as s:
        for ch in range(1, 7):
            read_str = socs_send_and_recv(s, b"PR%d\r\n" % ch)
            assert float(read_str.split(",")[-1].split("\r")[0]) == wire(emu, ch)[1]
        power = [int(x) for x in socs_send_and_recv(s, b"SEN\r\n").split("\r")[0].split(",")]
    assert power == [2, 2, 2, 2, 2, 2]


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    """One CR LF line from ``sock`` (bounded by the socket's timeout)."""
    while b"\r\n" not in buf:
        chunk = recv(sock)
        assert chunk, "connection closed"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def test_power_up_readings_then_enq_without_a_request_answers_the_error_word(emu):
    """TPG 261 manual p.65: after power-up the controller sends a reading every second until a
    character arrives (socs drivers.py:37-38: a booted TPG 366 is in "continuous transmission").
    p.67: "If <ENQ> is received without a valid request, the ERROR word is transmitted": after
    nothing, after a NAK (the syntax error's word), after ETX. A second ENQ after an acknowledged
    mnemonic repeats its measurement (the TPG 300 manual's example: PA2, ACK, ENQ, answer, ENQ, answer)."""
    buf = bytearray()
    with socket.create_connection(emu.tcp.address, timeout=2) as s:
        assert PRX_SHAPE.fullmatch(read_line(s, buf) + b"\r\n")  # unasked, before we sent a byte
        s.sendall(b"\x05")
        assert read_line(s, buf) == b"0000"  # no request: the (empty) error word
        s.sendall(b"XYZ\r\n")
        assert read_line(s, buf) == b"\x15"  # NAK <CR><LF> for an unknown mnemonic
        s.sendall(b"\x05")
        assert read_line(s, buf) == b"0001"  # the syntax error's word
        s.sendall(b"PR1\r\n")
        assert read_line(s, buf) == b"\x06"
        s.sendall(b"\x05")
        first = read_line(s, buf)
        s.sendall(b"\x05")
        assert read_line(s, buf) == first
        s.sendall(b"\x03\x05")  # ETX resets the interface: the ENQ has no request
        assert re.fullmatch(rb"\d{4}", read_line(s, buf))
    assert emu.device.announcement() is None  # a character came: no more unasked readings


def test_socs_startup_enquiry_swallows_the_power_up_readings(emu):
    """socs' own startup (one ENQ, one recv) and mnemonic discipline read the pressures after power-up."""
    with socs_connect(emu.tcp.address) as s:
        read_str = socs_send_and_recv(s, b"PR1\r\n")
    assert float(read_str.split(",")[-1].split("\r")[0]) == wire(emu, 1)[1]


def test_our_driver_reads_socs_recorded_answers():
    """socs' fixture served as socs' device emulator serves it (one reply per message, by its
    stripped text); our driver's PRX reads the six pressures it records."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(2)
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(0.2)
            while not stop.is_set():
                try:
                    msg = conn.recv(4096)
                except TimeoutError:
                    continue
                if not msg:
                    return
                reply = SOCS_FIXTURE.get(msg.strip(b"\r\n"))
                if reply is not None:
                    conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    g = TPG366(TcpTransport(*srv.getsockname()), timeout=1.0)
    try:
        g.transport.open()  # the fixture knows PRX and ENQ only: no TID/AYT, so no connect()
        started = time.monotonic()
        readings = g.read_all()
        assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        g.close()
        t.join(3)
        srv.close()
    assert [r.pressure for r in readings] == [12.345, 23.456, 34.567, 45.678, 56.789, 67.891]
    assert all(r.code == 0 and r.status_bits == () for r in readings)
    assert PRX_SHAPE.fullmatch(SOCS_FIXTURE[b"\x05"])  # the emulator's answer shape is the recorded one


# -- the TPG 256 A against PyMaxiGauge (pklaus/MaxiGauge @ 5d48e32, PfeifferVacuum.py), a driver
# written against a real 256 A; its exchange written out over the emulator's real pty.
PYMAXIGAUGE_SYSTEM = {
    0: "No error",
    4096: "Syntax error",
    8192: "Inadmissible parameter",
}  # lines 296-311 (ERR_CODES[0], p.97)
PYMAXIGAUGE_GAUGE = {0: "No error"}  # lines 312-326 (ERR_CODES[1])


def pymaxigauge_send(port, mnemonic: bytes, enquiries: int) -> list[bytes]:
    """PfeifferVacuum.py:161-171 send(): flushInput, mnemonic + CR LF, getACQorNAK (190-206:
    readline; on NAK, ENQ and read the 'system,gauge' error, looked up in ERR_CODES), then per
    enquiry ENQ and read up to CR LF (177-188)."""
    port.reset_input_buffer()
    port.write(mnemonic + b"\r\n")
    returncode = port.readline()
    if len(returncode) > 2 and returncode[-3:-2] == b"\x15":
        port.write(b"\x05")
        error = port.read_until(b"\r\n")[:-2].decode().split(",", 1)
        raise LookupError(PYMAXIGAUGE_SYSTEM[int(error[0])], PYMAXIGAUGE_GAUGE[int(error[1])])
    assert len(returncode) > 2 and returncode[-3:-2] == b"\x06", returncode
    out = []
    for _ in range(enquiries):
        port.write(b"\x05")
        out.append(port.read_until(b"\r\n")[:-2])
    return out


def test_pymaxigauge_reads_the_emulated_256a(tmp_path):
    import serial

    emu = PfeifferEmulator.maxigauge(time_scale=1e-9, seed=9)
    link = emu.listen_pty(str(tmp_path / "mg"))
    try:
        emu.control("sensor off 6")
        with serial.Serial(link, baudrate=9600, timeout=1.0) as port:  # PfeifferVacuum.py:34-37: 9600 baud
            for sensor in range(1, 7):  # pressure(), lines 65-74: status int(r[0]), pressure float(r[-1])
                r = pymaxigauge_send(port, b"PR%d" % sensor, 1)[0].decode().split(",")
                assert (int(r[0]), float(r[-1])) == wire(emu, sensor)
            assert int(r[0]) == 4  # gauge 6 is off: PRESSURE_READING_STATUS[4] 'Sensor off' (line 335)
            assert pymaxigauge_send(port, b"TID", 0) == []  # send(mnemonic, 0): the ACK only, no enquiry
            with pytest.raises(LookupError) as e:
                pymaxigauge_send(port, b"PR7", 1)
            assert e.value.args == ("Syntax error", "No error")
            with pytest.raises(LookupError) as e:
                pymaxigauge_send(port, b"SEN,9,9,9,9,9,9", 1)
            assert e.value.args == ("Inadmissible parameter", "No error")
            assert pymaxigauge_send(port, b"PR1", 1)[0].startswith(b"0,")  # the link is fine after refusals
    finally:
        emu.stop()
