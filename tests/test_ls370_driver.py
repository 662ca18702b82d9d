"""Model 370 driver, byte for byte: (sent line, reply) transcripts, no terminators.

The replies are the shapes the 370 manual gives where it was at hand (RDGRNG? n,nn,nn,n,n and
RDGST? nnn, p.6-34; HTRRNG? n, the manual's example program) and socs' 370 driver parses
otherwise (firmware_host/FIDELITY.md, "Model 370").
"""

import pytest

from drivers import BadReply, InstrumentError, WrongInstrument
from drivers.ls370 import SERIAL_FRAMING, ControlMode, ControlSetup, Model370, ReadingRange
from drivers.ls372 import PID, InputSetup
from drivers.testing import expected_protocol


def test_serial_framing_is_the_manuals():
    assert SERIAL_FRAMING == {"baudrate": 9600, "bytesize": 7, "parity": "O", "stopbits": 1}
    m = Model370.serial("/dev/null-370")
    assert m.transport.framing == "9600 7O1" and m.pacing.after_query == 0.05


def test_visa_resource_gets_the_serial_framing():
    from pyvisa import constants

    m = Model370.visa("ASRL/dev/ttyUSB9::INSTR")
    assert m.transport.serial_settings["baud_rate"] == 9600
    assert m.transport.serial_settings["parity"] == constants.Parity.odd


def test_connect_checks_identity():
    with expected_protocol(Model370, [("*IDN?", "LSCI,MODEL370,370A1B,04102008")], expected_serial="370A1B") as m:
        assert m.connect().model == "MODEL370"


def test_connect_refuses_a_372():
    with (
        pytest.raises(WrongInstrument, match="MODEL372"),
        expected_protocol(Model370, [("*IDN?", "LSCI,MODEL372,LSA23JD,1.3")]) as m,
    ):
        m.connect()


def test_read_is_three_single_query_exchanges():
    pairs = [("RDGK? 5", "+011.500E-03"), ("RDGR? 5", "+683.521E+03"), ("RDGST? 5", "000")]
    with expected_protocol(Model370, pairs) as m:
        r = m.read("05")
    assert (r.kelvin, r.sensor, r.status, r.status_bits) == (0.0115, 683521.0, 0, ())


def test_read_names_status_bits_as_the_manual():
    pairs = [("RDGK? 3", "+000.000E+00"), ("RDGR? 3", "+000.000E+00"), ("RDGST? 3", "017")]
    with expected_protocol(Model370, pairs) as m:
        r = m.read(3)
    assert r.status_bits == ("CS_OVL", "R_OVER") and r.kelvin is None and r.sensor is None


def test_channel_a_and_17_refused_before_sending():
    with expected_protocol(Model370, []) as m:
        for bad in ("A", 17, 0):
            with pytest.raises(ValueError, match="not one of"):
                m.read(bad)


def test_scanner_and_input_setup():
    pairs = [
        ("SCAN?", "05,1"),
        ("INSET? 5", "1,010,003,02,1"),
        ("RDGRNG? 5", "0,03,10,1,0"),
        ("INSET 5,1,12,4,2,1;*ESR?", "0"),
        ("RDGRNG 5,1,7,8,0,0;*ESR?", "0"),
        ("SCAN 7,0;*ESR?", "0"),
    ]
    with expected_protocol(Model370, pairs) as m:
        assert m.scan().channel == "5"
        assert m.input_setup(5) == InputSetup(True, 10, 3, 2, 1)
        assert m.reading_range(5) == ReadingRange(0, 3, 10, 1, 0)
        m.set_input_setup(5, InputSetup(True, 12, 4, 2, 1))
        m.set_reading_range(5, ReadingRange(1, 7, 8, 0, 0))
        m.set_scan(7, False)


def test_inset_curve_past_20_refused_before_sending():
    with expected_protocol(Model370, []) as m, pytest.raises(ValueError, match="curve 0-20"):
        m.set_input_setup(5, InputSetup(True, 10, 3, 21, 1))


def test_heater_commands():
    pairs = [
        ("CMODE?", "1"),
        ("CSET?", "05,0,1,010,1,8,120"),
        ("HTRRNG?", "4"),
        ("PID?", "+0020.0,+0100.0,+0000.0"),
        ("SETP?", "+015.000E-03"),
        ("HTR?", "+005.162E+00"),
        ("CMODE 3;*ESR?", "0"),
        ("CSET 5,0,1,10,2,6,100;*ESR?", "0"),
        ("HTRRNG 2;*ESR?", "0"),
        ("PID 10,20,0;*ESR?", "0"),
        ("SETP 0.02;*ESR?", "0"),
        ("MOUT 12.5;*ESR?", "0"),
    ]
    with expected_protocol(Model370, pairs) as m:
        assert m.control_mode() is ControlMode.CLOSED_LOOP
        assert m.control_setup() == ControlSetup("5", 0, 1, 10, 1, 8, 120.0)
        assert m.heater_range(0) == 4
        assert m.pid(0) == PID(20, 100, 0)
        assert m.setpoint(0) == 0.015
        assert m.sample_heater_output() == 5.162
        m.set_control_mode(ControlMode.OPEN_LOOP)
        m.set_control_setup(ControlSetup("5", 0, 1, 10, 2, 6, 100.0))
        m.set_heater_range(0, 2)
        m.set_pid(0, PID(10, 20, 0))
        m.set_setpoint(0, 0.02)
        m.set_manual_output(0, 12.5)


def test_one_heater_output_only():
    with expected_protocol(Model370, []) as m, pytest.raises(ValueError, match="one heater output"):
        m.set_setpoint(1, 0.1)


def test_refused_setting_raises_naming_the_command():
    with (
        expected_protocol(Model370, [("HTRRNG 9;*ESR?", "16")]) as m,
        pytest.raises(InstrumentError, match="HTRRNG 9.*execution error"),
    ):
        m.set_heater_range(0, 9)


def test_garbled_reading_is_bad_reply():
    with expected_protocol(Model370, [("RDGK? 1", "+1.0E+00#")]) as m, pytest.raises(BadReply):
        m.kelvin(1)


def test_ocs_names_are_socs_agents():
    assert Model370.ocs_names("5", "MXC") == ("Channel_5_T", "Channel_5_R")
    assert Model370.OCS_AGENT_CLASS == "LS370_Agent"
