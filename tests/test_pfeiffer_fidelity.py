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


def socs_send_and_recv(sock: socket.socket, message: bytes) -> str:
    """socs drivers.py:97-101: _send_mnemonic (59-66: send, recv, last line must be ACK), ENQ, recv, decode."""
    sock.sendall(message)
    resp = recv(sock)
    assert resp.splitlines()[-1].strip() == b"\x06", resp  # drivers.py:64-66
    sock.sendall(b"\x05")  # drivers.py:73-74 (ENQ = '\x05', line 8)
    return recv(sock).decode()


def wire(emu, n: int) -> tuple[int, float]:
    r = emu.device.reading(n)
    return r.code, float(fmt_pressure(r.value))


def test_socs_read_pressure_all(emu):
    """socs drivers.py:151-162: 'PRX\\r\\n'; states = fields[::2] as int, pressures = fields[1::2] as
    float, a pressure set to 0. wherever the state is not 0."""
    emu.control("sensor off 3")
    with socket.create_connection(emu.tcp.address, timeout=2) as s:
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
    with socket.create_connection(emu.tcp.address, timeout=2) as s:
        for ch in range(1, 7):
            read_str = socs_send_and_recv(s, b"PR%d\r\n" % ch)
            assert float(read_str.split(",")[-1].split("\r")[0]) == wire(emu, ch)[1]
        power = [int(x) for x in socs_send_and_recv(s, b"SEN\r\n").split("\r")[0].split(",")]
    assert power == [2, 2, 2, 2, 2, 2]


def test_socs_startup_enquiry_and_repeated_enq(emu):
    """socs drivers.py:39-41 sends a lone ENQ on connect and reads one answer. With no mnemonic
    acknowledged, what the firmware sends is UNVERIFIED (socs' comment: a booted TPG 366 streams
    values, which the ENQ stops); the emulator sends nothing, so socs' first recv waits its timeout
    and the exchange after it is unaffected. A second ENQ repeats the last mnemonic's measurement
    (the TPG 300 manual's example: PA2, ACK, ENQ, answer, ENQ, answer)."""
    with socket.create_connection(emu.tcp.address, timeout=2) as s:
        s.sendall(b"\x05")
        with pytest.raises(TimeoutError):
            recv(s, 0.2)
        first = socs_send_and_recv(s, b"PR1\r\n")
        s.sendall(b"\x05")
        assert recv(s).decode() == first
        s.sendall(b"XYZ\r\n")
        assert recv(s) == b"\x15\r\n"  # NAK <CR><LF> for an unknown mnemonic


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
