"""The Pfeiffer driver against the emulated TPG 366 (TCP) and TPG 256 A (pty, VISA ASRL).

Every value the driver returns is checked against what the emulator's state holds; a gauge that
is off reads as no pressure with its SENSOR_OFF bit, never as a number; a refused mnemonic is an
``InstrumentError`` naming it and the controller's error word; garbled, muted and dropped links
are the typed errors the poller counts.
"""

from __future__ import annotations

import json
import os

import pytest

from drivers.errors import BadReply, ConnectionLost, InstrumentError, InstrumentTimeout
from drivers.pfeiffer import PFEIFFER_STATUS_BITS, TPG256A, TPG366, describe_error, parse_gauge
from drivers.transport import TcpTransport
from firmware_host.pfeiffer_device import PfeifferDevice, fmt_pressure
from firmware_host.pfeiffer_emulator import PfeifferEmulator
from firmware_host.sim_clock import SimClock
from tests.conftest import wait_for

FROZEN = 1e-9  # simulated seconds per real second: the emulator's state does not move during a test


@pytest.fixture
def tpg366():
    emu = PfeifferEmulator.tpg366(time_scale=FROZEN, seed=3)
    emu.listen_tcp("127.0.0.1", 0)
    yield emu
    emu.stop()


@pytest.fixture
def maxigauge(tmp_path):
    emu = PfeifferEmulator.maxigauge(time_scale=FROZEN, seed=4)
    emu.listen_pty(str(tmp_path / "maxigauge"))
    yield emu
    emu.stop()


def gauge366(emu, timeout: float = 1.0) -> TPG366:
    host, port = emu.tcp.address
    g = TPG366(TcpTransport(host, port), timeout=timeout)
    g.connect()
    return g


def on_wire(emu, channel: int) -> tuple[int, float]:
    """What the emulator's state says gauge ``channel`` reads now, as the wire rounds it."""
    r = emu.device.reading(channel)
    return r.code, float(fmt_pressure(r.value))


def test_tpg366_reads_what_the_emulator_holds(tpg366):
    g = gauge366(tpg366)
    try:
        assert g.identity.model == "TPG 366" and g.identity.serial == "44990000"
        assert g.gauge_ids == tuple(tpg366.device.gauges) and g.units == "mbar"
        readings = g.read_all()
        assert [r.channel for r in readings] == [1, 2, 3, 4, 5, 6]
        for r in readings:
            code, value = on_wire(tpg366, r.channel)
            assert (r.code, r.pressure, r.status_bits) == (code, value, ())
        assert g.read(3).pressure == on_wire(tpg366, 3)[1]
        assert g.sensor_states() == (2, 2, 2, 2, 2, 2)
    finally:
        g.close()


def test_sensor_off_reads_as_no_pressure_with_its_status(tpg366):
    g = gauge366(tpg366)
    try:
        assert tpg366.control("sensor off 2") == "ok"
        r = g.read_all()[1]
        assert r.pressure is None and r.code == 4 and r.status_bits == ("SENSOR_OFF",)
        assert r.status == 8 and PFEIFFER_STATUS_BITS[r.status] == "SENSOR_OFF"
        assert g.read(2).pressure is None and g.sensor_states()[1] == 1
        assert tpg366.control("sensor on 2") == "ok"
        assert g.read(2).pressure == on_wire(tpg366, 2)[1]
    finally:
        g.close()


def test_refused_mnemonic_names_itself_and_the_error_word(tpg366):
    g = gauge366(tpg366)
    try:
        with pytest.raises(InstrumentError, match=r"PR7 refused \(NAK\): error word 0001 \(syntax error\)"):
            g.ask("PR7")
        with pytest.raises(InstrumentError, match=r"SEN,3 refused \(NAK\): error word 0010 \(inadmissible"):
            g.ask("SEN,3")
        assert g.read(1).code == 0  # the link is fine afterwards; reading ERR cleared the word
        assert g.ask("ERR") == "0000"
        with pytest.raises(ValueError, match=r"refused to send 'PR1\\x05': a mnemonic is printable ASCII"):
            g.ask("PR1\x05")
        with pytest.raises(ValueError, match="gauge 7 is not 1-6"):
            g.read(7)
        heard = list(tpg366.ledger.heard)
        assert g.read(2).code == 0 and list(tpg366.ledger.heard)[len(heard) :] == ["PR2", "<ENQ>"]
    finally:
        g.close()


def test_garbled_muted_and_dropped_links_are_typed_errors(tpg366):
    g = gauge366(tpg366, timeout=0.3)
    try:
        tpg366.control("garble 1")
        with pytest.raises(BadReply, match="ACK"):
            g.read_all()
        assert tpg366.control("mute on") == "ok"
        with pytest.raises(InstrumentTimeout):
            g.read(1)
        tpg366.control("mute off")
        assert g.read(1).code == 0  # after a timeout the driver opens a fresh connection first
        tpg366.control("drop")
        with pytest.raises(ConnectionLost):
            g.read(1)
        # only the answer that left whole counts: the faults hit acknowledgements, not readings
        # (the emulator notes an answer just after sending it: wait for that, bounded)
        wait_for(lambda: tpg366.ledger.counts() == {"1/pressure": 1}, 2, 0.01, what="the answer in the ledger")
        assert tpg366.ledger.faulted == 0
    finally:
        g.close()


def test_soft_vacuum_raises_p1_in_simulated_time(tpg366):
    g = gauge366(tpg366)
    try:
        before = g.read(1).pressure
        assert tpg366.control("soft 60") == "ok"
        tpg366.control("advance 600")  # ten time constants: e^10 times the base pressure
        after = g.read(1).pressure
        assert before is not None and after is not None and after > 1e3 * before
        assert g.read(2).pressure == on_wire(tpg366, 2)[1]  # the other gauges hold
        tpg366.control("soft 0")
        assert g.read(1).pressure < 1e-5
    finally:
        g.close()


def test_fault_words_refuse_bad_input_by_name(tpg366):
    assert tpg366.control("sensor off 9") == "error: sensor: gauge 9 is not 1-6"
    assert tpg366.control("sensor sideways 1") == "error: sensor: usage: sensor off|on N"
    assert tpg366.control("soft -1") == "error: soft: time constant -1.0 is not a positive number of seconds"
    assert tpg366.control("warm").startswith("error: 'warm' is a thermometry word")
    assert tpg366.control("frobnicate") == "error: unknown command 'frobnicate'"
    status = json.loads(tpg366.control("status"))
    assert status["gauges"]["1"]["code"] == 0 and status["gauges"]["1"]["kind"] == "PKR"
    assert all(g["code"] == 0 for g in status["gauges"].values())  # nothing changed by the refusals


def test_emulator_refuses_bad_construction():
    with pytest.raises(ValueError, match="unknown Pfeiffer model 'tpg999'"):
        PfeifferDevice("tpg999", SimClock())
    with pytest.raises(ValueError, match="gauges must be 6"):
        PfeifferDevice("tpg366", SimClock(), gauges=("PKR",))


def test_out_of_range_and_missing_gauges_carry_their_status():
    dev = PfeifferDevice("tpg366", SimClock(FROZEN), gauges=("PKR", "TPR", "CMR", "TPR", "noSen", "IKR"))
    dev.vacuum.base.update({2: 1e-6, 6: 1.0})  # below a Pirani's range; above a cold cathode's
    assert (dev.reading(2).code, dev.reading(2).value) == (1, 5e-4)
    assert dev.reading(5).code == 5 and dev.reading(5).value == 2.0e-2
    assert (dev.reading(6).code, dev.reading(6).value) == (2, 1e-2)
    with pytest.raises(ValueError, match="gauge 5: no sensor connected"):
        dev.set_sensor(5, True)


def test_a_gauge_field_without_a_comma_is_a_bad_reply():
    with pytest.raises(BadReply, match="expected 'status,pressure'"):
        parse_gauge("0", 1, "PR1", b"0", 0.0)


@pytest.mark.parametrize("text", ["7,+1.0000E-03", "x,+1.0000E-03", "0,nan", "0,junk"])
def test_a_garbled_gauge_field_is_that_gauges_bad_field(text):
    """Not a BadReply: a bad field is its own gauge's flagged reading (no value, BAD_FIELD)."""
    r = parse_gauge(text, 1, "PR1", text.encode(), 0.0)
    assert (r.pressure, r.status_bits) == (None, ("BAD_FIELD",))


def test_maxigauge_over_a_real_pty(maxigauge):
    g = TPG256A.serial(maxigauge.pty.link, timeout=1.0)
    try:
        assert g.connect().firmware == "BG5930-E"
        readings = g.read_gauges()
        assert [(r.code, r.pressure) for r in readings] == [on_wire(maxigauge, n) for n in range(1, 7)]
        with pytest.raises(InstrumentError, match=r"PRX refused \(NAK\): error word 4096,0 \(syntax error\)"):
            g.read_all()  # PR1-PR6 are the 256 A's measurement mnemonics (its list has no PRX)
        assert g.ask("ERR") == "0,0"  # reading the error status cleared it
        maxigauge.control("sensor off 1")
        assert g.read(1).status_bits == ("SENSOR_OFF",) and g.read(1).pressure is None
    finally:
        g.close()


def test_maxigauge_answers_the_error_status_at_the_enq_after_a_nak(maxigauge):
    """As PyMaxiGauge (written against a 256 A) reads a refusal: NAK, then ENQ gives 'system,gauge'."""
    import serial

    with serial.Serial(maxigauge.pty.link, 9600, timeout=0.5) as port:
        port.write(b"PR9\r\n")
        assert port.read_until(b"\n") == b"\x15\r\n"
        port.write(b"\x05")
        assert port.read_until(b"\n") == b"4096,0\r\n"
        port.write(b"SEN,1,1\r\n")
        assert port.read_until(b"\n") == b"\x15\r\n"
        port.write(b"\x05")
        assert port.read_until(b"\n") == b"8192,0\r\n"


@pytest.mark.parametrize(
    "word, said",
    [
        ("0001", "syntax error"),
        ("4096,0", "syntax error"),
        ("12288,0", "syntax error, inadmissible parameter"),
        ("0,2", "gauge error bits 2"),
        ("0,0", "no error"),
        ("zz", "unknown"),
    ],
)
def test_error_words_are_described(word, said):
    assert describe_error(word) == said


def test_maxigauge_over_visa_asrl(maxigauge):
    g = TPG256A.visa(f"ASRL{os.path.realpath(maxigauge.pty.link)}::INSTR", timeout=1.0)
    try:
        g.connect()
        assert g.read(4).pressure == on_wire(maxigauge, 4)[1]
        assert g.transport.serial_settings["baud_rate"] == 9600
    finally:
        g.close()


def test_probe_reports_the_gauges_and_changes_nothing(tpg366, maxigauge):
    from appliance.probe import open_instrument, probe

    tpg366.control("sensor off 5")
    host, port = tpg366.tcp.address
    text = probe(open_instrument("tpg366", host=host, port=port, timeout=1.0)).text()
    assert "gauges (TID): PKR,PKR,CMR,TPR,CMR,TPR; unit (UNI): mbar" in text
    assert "sensor states (SEN, 0 none/fixed 1 off 2 on): 2,2,2,2,1,2" in text
    assert "  5 no pressure  status 4 SENSOR_OFF" in text and "problems" not in text  # not "0.0 mbar"
    assert all("," not in line for line in tpg366.ledger.heard), "the probe sent a setting"
    assert tpg366.device.on == [True, True, True, True, False, True]
    text = probe(open_instrument("maxigauge", device=maxigauge.pty.link, timeout=1.0)).text()
    assert "identity: Pfeiffer Vacuum,TPG 256 A,,BG5930-E" in text and "problems" not in text
    with pytest.raises(ValueError, match="TPG 256 A is reached through --device or --resource"):
        open_instrument("maxigauge", host="127.0.0.1")
    with pytest.raises(ValueError, match="a TPG 366 is reached through --host, --device or --resource"):
        open_instrument("tpg366")


@pytest.mark.slow  # two emulator processes
def test_kelvinpi_emulate_tpg366_and_maxigauge(tmp_path):
    import signal
    import subprocess
    import sys

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "emulate", "tpg366", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "emulate", "maxigauge", "--serial-link", str(tmp_path / "mg")],
            stdout=subprocess.PIPE,
            text=True,
        ),
    ]
    try:
        ready = [p.stdout.readline() for p in procs]  # type: ignore[union-attr]
        assert ready[0].startswith("emulated TPG 366 ready: tcp 127.0.0.1:")
        assert ready[1] == f"emulated MaxiGauge TPG 256 A ready: serial {tmp_path / 'mg'}\n"
        port = int(ready[0].rsplit(":", 1)[1])
        g = TPG366(TcpTransport("127.0.0.1", port), timeout=2.0)
        m = TPG256A.serial(str(tmp_path / "mg"), timeout=2.0)
        try:
            assert g.connect().model == "TPG 366" and len(g.read_all()) == 6
            assert m.connect().model == "TPG 256 A" and m.read(1).code == 0
        finally:
            g.close()
            m.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(10) for p in procs] == [0, 0]


def test_slow_answers_arrive_late_and_are_counted_late(tpg366):
    g = gauge366(tpg366, timeout=1.0)
    try:
        tpg366.control("slow 0.05 PR1")  # the ACK and the answer to PR1 each held 50 ms
        assert g.read(1).pressure == on_wire(tpg366, 1)[1]
        assert g.read(2).code == 0  # not held
        wait_for(lambda: tpg366.ledger.late_total() == 1, 2, 0.01, what="the late answer counted")
        # the emulator notes an answer after sending it: wait for the note, as for the late one
        wait_for(lambda: tpg366.ledger.counts() == {"2/pressure": 1}, 2, 0.01, what="the on-time answer counted")
    finally:
        g.close()


def test_acquisition_reads_the_configured_gauges_as_p_fields(tpg366, tmp_path):
    """Only the listed gauges, under p<n> (the name labels them), pressures as samples; a gauge that
    is off is a sample with no value and its SENSOR_OFF bit; an empty port is left out unless listed."""
    from appliance import config as _config
    from appliance.health import InstrumentHealth
    from appliance.models import acquisition_for

    tpg366.device.gauges[5] = "noSen"
    tpg366.device.power_on()
    host, port = tpg366.tcp.address
    text = (
        f'[[instrument]]\nmodel = "tpg366"\nname = "G"\ntransport = "tcp"\nhost = "{host}"\nport = {port}\n'
        f'[store]\npath = "{tmp_path / "k.db"}"\n'
    )
    listed = text.replace(
        "[store]", '[[instrument.channel]]\nnumber = 1\nname = "OVC"\n[[instrument.channel]]\nnumber = 4\n[store]'
    )
    every = acquisition_for(_config.parse(text).instrument[0], InstrumentHealth("G", "tpg366", "tcp"))
    acq = acquisition_for(_config.parse(listed).instrument[0], InstrumentHealth("G", "tpg366", "tcp"))
    try:
        every.instrument.connect()
        assert list(every.discover_inputs()) == ["1", "2", "3", "4", "5"]  # port 6 has no sensor
        acq.instrument.connect()
        found = acq.discover_inputs()
        assert {ch: i.name for ch, i in found.items()} == {"1": "OVC", "4": "P4"}
        plans = {ch: acq.plan_for(ch, i.name, i.sensor_units) for ch, i in found.items()}
        key = plans["1"].sensor
        assert (key.name, key.units, key.ocs, plans["1"].kelvin) == ("G::p1", "mbar", "pressure_ch1", None)
        tpg366.control("sensor off 4")
        out: list = []
        acq.cycle(plans, 0, out)
        assert [(s.series.field, s.value, s.status) for s in out] == [
            ("p1", on_wire(tpg366, 1)[1], 0),
            ("p4", None, 8),
        ]
    finally:
        every.instrument.close()
        acq.instrument.close()


def test_emulate_cli_names_a_bad_listen_address_or_link(tmp_path, capsys):
    import argparse

    from firmware_host import pfeiffer_emulator

    parser = argparse.ArgumentParser()
    pfeiffer_emulator.add_parsers(parser.add_subparsers(dest="model"))
    args = parser.parse_args(["tpg366", "--listen", "127.0.0.1:notaport"])
    assert pfeiffer_emulator.run(args) == 2
    assert "kelvinpi emulate tpg366: cannot listen on 127.0.0.1:notaport" in capsys.readouterr().err
    args = parser.parse_args(["maxigauge", "--serial-link", str(tmp_path / "no" / "such" / "dir" / "mg")])
    assert pfeiffer_emulator.run(args) == 2
    assert f"kelvinpi emulate maxigauge: cannot make {tmp_path / 'no'}" in capsys.readouterr().err


def test_tpg366_over_a_visa_socket_and_the_control_socket(tpg366, tmp_path):
    from drivers.transport import VisaTransport
    from firmware_host.emulator import send_control

    ctl = tpg366.listen_control(str(tmp_path / "tpg.ctl"))
    assert send_control(ctl, "sensor off 3") == "ok"  # what `kelvinpi emulate ctl` sends
    assert send_control(ctl, "sensor off 0") == "error: sensor: gauge 0 is not 1-6"
    host, port = tpg366.tcp.address
    g = TPG366(VisaTransport(f"TCPIP::{host}::{port}::SOCKET"), timeout=1.0)
    try:
        assert g.connect().serial == "44990000"
        codes = [r.code for r in g.read_all()]
        assert codes == [0, 0, 4, 0, 0, 0]
    finally:
        g.close()
