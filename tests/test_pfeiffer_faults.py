"""The red team's Pfeiffer faults (issue 25), each against the real emulator over real TCP or a pty.

1. a unit change (UNI) while running: pressures stay in mbar, converted, and the change is an error
   (an event), never a number stored under the wrong unit;
2. a 256 A cycle that fails at PR4 keeps PR1-PR3;
3. one gauge's bad field (negative, unknown status) blinds only that gauge;
4. a stray line costs at most one reading, not every later one;
plus the power-up readings our connect swallows, ``garble -1`` refused, ``describe_error("0011")``.
"""

from __future__ import annotations

import socket
import threading

import pytest

from appliance import config as _config
from appliance.health import InstrumentHealth
from appliance.models import acquisition_for
from drivers.errors import BadReply, InstrumentTimeout
from drivers.pfeiffer import TPG366, describe_error
from drivers.transport import TcpTransport
from firmware_host.pfeiffer_device import fmt_pressure
from firmware_host.pfeiffer_emulator import PfeifferEmulator
from tests.conftest import wait_for

FROZEN = 1e-9  # simulated seconds per real second: the state does not move during a test


@pytest.fixture
def tpg366():
    emu = PfeifferEmulator.tpg366(time_scale=FROZEN, seed=3)
    emu.listen_tcp("127.0.0.1", 0)
    yield emu
    emu.stop()


@pytest.fixture
def maxigauge(tmp_path):
    emu = PfeifferEmulator.maxigauge(time_scale=FROZEN, seed=4)
    emu.listen_pty(str(tmp_path / "mg"))
    yield emu
    emu.stop()


def mbar(emu, n: int) -> float | None:
    """Gauge ``n``'s pressure in mbar as the wire rounds it (None: not a measurement)."""
    r = emu.device.reading(n)
    return float(fmt_pressure(r.value)) if r.code == 0 else None


def acquisition(tmp_path, text: str):
    cfg = _config.parse(text + f'[store]\npath = "{tmp_path}/k.db"\n').instrument[0]
    acq = acquisition_for(cfg, InstrumentHealth(cfg.name, cfg.model, cfg.transport))
    acq.instrument.connect()
    found = acq.discover_inputs()
    return acq, {ch: acq.plan_for(ch, i.name, i.sensor_units) for ch, i in found.items()}


def acq366(tmp_path, emu):
    host, port = emu.tcp.address
    return acquisition(
        tmp_path, f'[[instrument]]\nmodel = "tpg366"\nname = "G"\ntransport = "tcp"\nhost = "{host}"\nport = {port}\n'
    )


# -- fault 1: the unit ------------------------------------------------------------------------------
def test_a_unit_change_while_running_never_stores_a_number_under_the_wrong_unit(tmp_path, tpg366):
    acq, plans = acq366(tmp_path, tpg366)
    other = TPG366(TcpTransport(*tpg366.tcp.address), timeout=1.0)
    try:
        out: list = []
        acq.cycle(plans, 0, out)
        assert [(s.series.units, s.value) for s in out] == [("mbar", mbar(tpg366, n)) for n in range(1, 7)]
        other.connect()
        assert other.ask("UNI,2") == "2"  # another client (or the front panel) sets Pa
        out = []
        with pytest.raises(BadReply, match="unit changed from mbar to Pa"):
            acq.cycle(plans, 0, out)
        assert out == [], "readings whose unit is unknown were kept"
        out = []
        acq.cycle(plans, 0, out)  # now read in Pa, stored in mbar
        assert [s.series.units for s in out] == ["mbar"] * 6
        assert [s.value for s in out] == pytest.approx([mbar(tpg366, n) for n in range(1, 7)], rel=1e-4)
    finally:
        acq.instrument.close()
        other.close()


def test_a_series_is_planned_in_mbar_whatever_the_controllers_unit(tmp_path, tpg366):
    """After a restart with the controller in Torr, the series keep the unit they were created with."""
    other = TPG366(TcpTransport(*tpg366.tcp.address), timeout=1.0)
    other.connect()
    assert other.ask("UNI,1") == "1"
    other.close()
    acq, plans = acq366(tmp_path, tpg366)
    try:
        assert acq.instrument.units == "Torr"
        assert {p.sensor.units for p in plans.values()} == {"mbar"}
        out: list = []
        acq.cycle(plans, 0, out)
        assert out[0].value == pytest.approx(mbar(tpg366, 1), rel=1e-4)
    finally:
        acq.instrument.close()


def test_the_tpg366_takes_every_pressure_unit_of_its_manual(tpg366):
    g = TPG366(TcpTransport(*tpg366.tcp.address), timeout=1.0)
    g.connect()
    try:
        for code, name in (("3", "micron"), ("4", "hPa"), ("0", "mbar")):
            assert g.ask(f"UNI,{code}") == code
            assert g.read_unit() == name
    finally:
        g.close()


# -- fault 2: a failed 256 A cycle keeps what it read --------------------------------------------------
def test_a_256a_cycle_failing_at_pr4_keeps_pr1_to_pr3(tmp_path, maxigauge):
    acq, plans = acquisition(
        tmp_path,
        f'[[instrument]]\nmodel = "maxigauge"\nname = "MG"\ntransport = "serial"\n'
        f'device = "{maxigauge.pty.link}"\ntimeout = 0.15\n',
    )
    try:
        maxigauge.control("slow 0.3 PR4")  # PR4's ACK held past the timeout
        out: list = []
        with pytest.raises(InstrumentTimeout):
            acq.cycle(plans, 0, out)
        assert [s.value for s in out] == [mbar(maxigauge, n) for n in (1, 2, 3)]
        # what the controller delivered on time is what was kept (the ledger is noted after each send)
        want = {"1/pressure": 1, "2/pressure": 1, "3/pressure": 1}
        wait_for(lambda: maxigauge.ledger.counts() == want, 2, 0.01, what="PR1-PR3 in the ledger")
    finally:
        acq.instrument.close()


# -- fault 3: one gauge's bad field blinds only that gauge ---------------------------------------------
def canned_server(answer: bytes):
    """A controller that ACKs every mnemonic and answers every ENQ with ``answer`` (one connection)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(2)

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(2)
                asked = False  # an ENQ without a request is answered by the error word (TPG 261 p.67)
                while data := conn.recv(4096):
                    for line in data.replace(b"\x05", b"\x05\n").split(b"\n"):
                        if line.endswith(b"\x05"):
                            conn.sendall((answer if asked else b"0000") + b"\r\n")
                        elif line.strip(b"\r\x03"):
                            asked = True
                            conn.sendall(b"\x06\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()


@pytest.mark.parametrize("third", [b"1,-1.0000E-03", b"0,-2.0000E-03", b"7,+1.0000E-03", b"0,junk"])
def test_one_gauges_bad_field_blinds_only_that_gauge(third):
    good = b"0,+1.0000E-06"
    host, port = canned_server(b",".join([good, good, third, good, good, good]))
    g = TPG366(TcpTransport(host, port), timeout=1.0)
    try:
        g.transport.open()  # no identify: this controller knows one answer
        rs = g.read_all()
    finally:
        g.close()
    assert [r.pressure for i, r in enumerate(rs) if i != 2] == [1e-6] * 5
    code, _, value = third.decode().partition(",")
    if third == b"0,-2.0000E-03":  # the wire is signed (TPG 261 manual p.71): an offset gauge below zero
        assert (rs[2].pressure, rs[2].status_bits) == (-2e-3, ())
    elif code == "1":
        assert (rs[2].pressure, rs[2].status_bits) == (None, ("UNDERRANGE",))
    else:
        assert (rs[2].pressure, rs[2].status_bits) == (None, ("BAD_FIELD",))


# -- fault 4: a stray line --------------------------------------------------------------------------
def server_side(emu) -> socket.socket:
    wait_for(lambda: len(emu.tcp.clients) == 1, 2, 0.01, what="the emulator's end of the connection")
    return next(iter(emu.tcp.clients))


@pytest.mark.parametrize("stray", [b"\r\n", b"junk\r\n"])
def test_a_stray_line_costs_at_most_one_reading(tpg366, stray):
    g = TPG366(TcpTransport(*tpg366.tcp.address), timeout=1.0)
    g.connect()
    try:
        server_side(tpg366).sendall(stray)  # a stray line from the controller's side, before the next ACK
        results = []
        for _ in range(3):
            try:
                results.append([r.pressure for r in g.read_all()])
            except BadReply:
                results.append(None)
        expect = [mbar(tpg366, n) for n in range(1, 7)]
        assert results[1:] == [expect, expect]
        assert results[0] == (expect if stray == b"\r\n" else None)  # an empty line is skipped outright
    finally:
        g.close()


# -- the power-up readings ---------------------------------------------------------------------------
def test_our_connect_swallows_the_power_up_readings(tpg366, maxigauge):
    """A controller fresh from power-up sends a reading every second until it hears a character
    (TPG 261 manual p.65): the emulator sends the first before it reads a byte, and our connect
    (ETX ENQ, a pause, flush) leaves none of them to be taken for an answer."""
    g = TPG366(TcpTransport(*tpg366.tcp.address), timeout=1.0)
    g.connect()
    try:
        assert [r.pressure for r in g.read_all()] == [mbar(tpg366, n) for n in range(1, 7)]
    finally:
        g.close()
    assert tpg366.device.announcement() is None
    assert "PRX" in tpg366.ledger.heard
    m = maxigauge.pty._session
    assert m.announced >= 1  # on the serial line since the emulator started
    from drivers.pfeiffer import TPG256A

    g2 = TPG256A.serial(maxigauge.pty.link, timeout=1.0)
    g2.connect()
    try:
        assert [r.pressure for r in g2.read_gauges()] == [mbar(maxigauge, n) for n in range(1, 7)]
    finally:
        g2.close()


def test_power_up_readings_were_sent_before_any_byte(tpg366):
    with socket.create_connection(tpg366.tcp.address, timeout=2) as s:
        line = s.recv(4096)
    assert line.count(b",") == 11 and line.endswith(b"\r\n"), line


# -- minor ------------------------------------------------------------------------------------------
def test_garble_minus_one_is_refused(tpg366):
    assert tpg366.control("garble -1").startswith("error: garble")
    assert tpg366.faults.garbage == 0


def test_describe_error_names_every_flag_of_the_word():
    assert describe_error("0011") == "inadmissible parameter, syntax error"
    assert describe_error("1100") == "controller error, no hardware"
    assert describe_error("0000") == "no error"


# -- fault 5's plumbing: a flagged gauge's limit reaches the alarms, in mbar -------------------------------
def test_a_flagged_gauge_sample_carries_its_limit_in_mbar(tmp_path, tpg366):
    from appliance.latest import LatestReadings

    tpg366.device.gauges[0] = "CMR"  # a capacitance gauge on the OVC's high vacuum: UNDERRANGE at 0.1 mbar
    acq, plans = acq366(tmp_path, tpg366)
    other = TPG366(TcpTransport(*tpg366.tcp.address), timeout=1.0)
    try:
        other.connect()
        other.ask("UNI,2")  # the controller sends 10 Pa beside the flag
        acq.instrument.read_unit()
        out: list = []
        acq.cycle(plans, 0, out)
    finally:
        acq.instrument.close()
        other.close()
    assert (out[0].value, out[0].limit, out[0].status) == (None, pytest.approx(0.1), 1)
    assert out[1].limit is None  # a measurement carries none
    latest = LatestReadings()
    latest.update(out)
    assert latest.snapshot()[out[0].series.name].limit == pytest.approx(0.1)


def test_the_ledger_tells_connections_apart(tpg366):
    """A second client's readings are its connection's, so the appliance's can be reconciled alone."""
    a = TPG366(TcpTransport(*tpg366.tcp.address), timeout=1.0)
    b = TPG366(TcpTransport(*tpg366.tcp.address), timeout=1.0)
    a.connect()
    b.connect()
    try:
        a.read_all()
        a.read(1)
        b.read(2)
    finally:
        a.close()
        b.close()
    first, second = tpg366.ledger.connections
    want = {"1/pressure": 2, "2/pressure": 1, "3/pressure": 1, "4/pressure": 1, "5/pressure": 1, "6/pressure": 1}
    wait_for(lambda: first.counts() == want, 2, 0.01, what="the first connection's readings")
    wait_for(lambda: second.counts() == {"2/pressure": 1}, 2, 0.01, what="the second's")
    assert tpg366.ledger.total() == first.total() + second.total()
