"""Model 336 / 350 driver: byte transcripts (no terminators) and the driver against the emulator over TCP."""

from __future__ import annotations

import pytest

from drivers import BadReply, InstrumentError, WrongInstrument
from drivers.ls336 import PID, HeaterSetup, InputType, Model336, Model350, OutputMode, OutputSetup
from drivers.testing import expected_protocol
from drivers.transport import TcpTransport
from firmware_host.emulator import Emulator

IDN = ("*IDN?", "LSCI,MODEL336,LSA336A/#######,2.9")


def test_connect_checks_identity_and_counts_inputs():
    # connect reads *ESR? last: the power-on bit is cleared, not reported with the first refusal
    with expected_protocol(Model336, [IDN, ("KRDG? 0", "+41.9838,+3.05450,+0.81993,+0.09500"), ("*ESR?", "128")]) as m:
        ident = m.connect()
    assert (ident.model, ident.serial) == ("MODEL336", "LSA336A") and m.inputs == ("A", "B", "C", "D")


def test_connect_finds_the_3062_scanner():
    eight = ",".join(["+1.00000"] * 8)
    with expected_protocol(Model336, [IDN, ("KRDG? 0", eight), ("*ESR?", "0")]) as m:
        m.connect()
        assert m.inputs[-4:] == ("D2", "D3", "D4", "D5")


def test_350_refuses_a_336():
    with pytest.raises(WrongInstrument, match="MODEL336"), expected_protocol(Model350, [IDN]) as m:
        m.connect()


def test_read_decodes_and_names_status_bits():
    with expected_protocol(Model336, [("KRDG? C;SRDG? C;RDGST? C", "+0.81993;+2666.04;016")]) as m:
        r = m.read("c", "ohm")
    assert r.status_bits == ("T_UNDER",) and r.kelvin is None and r.sensor == pytest.approx(2666.04)
    with expected_protocol(Model336, [("KRDG? A;SRDG? A;RDGST? A", "+0.00000;+0.00000;001")]) as m:
        r = m.read("A")
    assert r.status_bits == ("INVALID",) and r.sensor is None


@pytest.mark.parametrize("reply", ["+1;+1", "+1;x;000", "+1;+1;300", "nan;+1;000"])
def test_read_garbled_reply_raises_bad_reply(reply):
    with pytest.raises(BadReply), expected_protocol(Model336, [("KRDG? A;SRDG? A;RDGST? A", reply)]) as m:
        m.read("A")


def test_bad_arguments_name_themselves_and_send_nothing():
    with expected_protocol(Model336, []) as m:
        with pytest.raises(ValueError, match="'E'"):
            m.kelvin("E")
        with pytest.raises(ValueError, match="'D2'"):
            m.kelvin("D2")  # no 3062 seen
        with pytest.raises(ValueError, match="output 5"):
            m.setpoint(5)
        with pytest.raises(ValueError, match="range 4"):
            m.set_heater_range(1, 4)
        with pytest.raises(ValueError, match="PID"):
            m.set_pid(1, PID(0, 20, 0))
        with pytest.raises(ValueError, match="control input 'E'"):
            m.set_output_mode(1, OutputSetup(OutputMode.CLOSED_LOOP, "E", 0))


def test_setting_refused_by_esr_raises():
    m_ctx = expected_protocol(Model336, [("RANGE 1,3;*ESR?", "16")])
    with m_ctx as m, pytest.raises(InstrumentError, match="336 refused 'RANGE 1,3': execution error"):
        m.set_heater_range(1, 3)


def test_output_mode_transcript():
    with expected_protocol(Model336, [("OUTMODE? 1", "1,3,0"), ("OUTMODE 2,3,1,1;*ESR?", "0")]) as m:
        assert m.output_mode(1) == OutputSetup(OutputMode.CLOSED_LOOP, "C", 0)
        m.set_output_mode(2, OutputSetup(OutputMode.OPEN_LOOP, "A", 1))


def test_350_has_five_heater_ranges():
    with expected_protocol(Model350, [("RANGE 1,5;*ESR?", "0")]) as m:
        m.set_heater_range(1, 5)


@pytest.fixture(params=["336", "350"])
def emu(request):
    e = Emulator.ls336(seed=5, model=request.param, serial=f"LSA{request.param}X")
    e.listen_tcp("127.0.0.1", 0)
    yield e
    e.stop()


def test_driver_against_emulator(emu):
    cls = Model350 if emu.device.model == "350" else Model336
    m = cls(TcpTransport(*emu.tcp.address), timeout=2, pacing=None)
    m.pacing = type(m.pacing)(0, 0, 0)
    m.connect()
    try:
        dev = emu.device
        assert m.inputs == ("A", "B", "C", "D")
        r = m.read("B", m.sensor_units("B"))
        assert r.valid and 2.9 < r.kelvin < 3.2 and r.sensor_units == "V" and 1.5 < r.sensor < 1.7
        assert m.sensor_units("C") == "ohm" and m.input_name("C") == "Still"
        assert m.input_type("C") == InputType(3, 1, 0, 0, 1)
        m.set_input_name("D", "Cold Plate 2")
        assert dev.ins["D"].name == "Cold Plate 2"
        m.set_heater_setup(1, HeaterSetup(2, 0, 0.5, 2))
        assert m.heater_setup(1) == HeaterSetup(2, 0, 0.5, 2)
        m.set_output_mode(1, OutputSetup(OutputMode.CLOSED_LOOP, "C", 0))
        with pytest.raises(InstrumentError, match="command error"):
            m.command("NOSUCH 1")
        with pytest.raises(InstrumentError, match="execution error"):
            m.command("INCRV A,60")
        with pytest.raises(ValueError, match="curve 60"):
            m.set_input_curve("A", 60)
        top = 5 if cls is Model350 else 3
        m.set_heater_range(2, top)
        assert dev.outputs[2].range == top
        h = m.curve_header(1)
        assert h.name == "DT-670" and h.data_format == 2
        snap = m.configuration(["A", "C"])
        assert snap["channels"]["C"]["curve"] == 8 and snap["outputs"]["1"]["outmode"]["input"] == "C"
    finally:
        m.close()


@pytest.mark.slow  # ten simulated minutes of the loop: about a second of CPU
def test_closed_loop_holds_the_still_at_its_setpoint(emu):
    cls = Model350 if emu.device.model == "350" else Model336
    # the loop's physics runs lazily on the next query: on a loaded machine that takes seconds
    m = cls(TcpTransport(*emu.tcp.address), timeout=15)
    m.pacing = type(m.pacing)(0, 0, 0)
    m.connect()
    try:
        m.set_heater_setup(1, HeaterSetup(2, 0, 0.5, 2))  # 50 ohm, 0.5 A: 12.5 W at the top range
        m.set_output_mode(1, OutputSetup(OutputMode.CLOSED_LOOP, "C", 0))
        m.set_pid(1, PID(50, 20, 0))
        m.set_setpoint(1, 1.0)
        m.set_heater_range(1, 1 if cls is Model336 else 3)  # 125 mW full scale on either
        emu.clock.advance(600)
        assert m.heater_output(1) > 0 and m.kelvin("C") == pytest.approx(1.0, abs=0.02)
    finally:
        m.close()


def test_all_readings_with_the_3062():
    e = Emulator.ls336(seed=6, scanner=True)
    e.listen_tcp("127.0.0.1", 0)
    try:
        m = Model336(TcpTransport(*e.tcp.address), timeout=2)
        m.connect()
        # the mixing chamber (11.5 mK) is colder than the standard RX-102A curve reaches (50 mK)
        assert len(m.inputs) == 8 and m.read("D2").status_bits == ("T_UNDER",)
        assert m.read("d1").channel == "D"
        m.close()
    finally:
        e.stop()
