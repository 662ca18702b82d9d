"""Model 372 driver, byte for byte: (sent line, reply) transcripts, no terminators."""

import pytest

from drivers import BadReply, InstrumentError, WrongInstrument
from drivers.curves import Curve
from drivers.ls372 import (
    PID,
    FilterSetup,
    HeaterSetup,
    InputSetup,
    InputType,
    Model372,
    OutputMode,
    OutputSetup,
    ScanState,
)
from drivers.testing import expected_protocol


def test_connect_checks_identity():
    with expected_protocol(Model372, [("*IDN?", "LSCI,MODEL372,LSA23JD,1.3")], expected_serial="LSA23JD") as m:
        ident = m.connect()
    assert (ident.model, ident.serial, ident.firmware) == ("MODEL372", "LSA23JD", "1.3")


def test_connect_refuses_other_serial():
    with pytest.raises(WrongInstrument, match="LSA99ZZ"):
        with expected_protocol(Model372, [("*IDN?", "LSCI,MODEL372,LSA99ZZ,1.3")], expected_serial="LSA23JD") as m:
            m.connect()


def test_connect_refuses_other_model():
    with pytest.raises(WrongInstrument, match="MODEL240-2P"):
        with expected_protocol(Model372, [("*IDN?", "LSCI,MODEL240-2P,LSA24AZ,1.0")]) as m:
            m.connect()


def test_read_decodes_value_units_status():
    with expected_protocol(Model372, [("KRDG? 5;RDGR? 5;RDGST? 5", "+011.500E-03;+683.521E+03;000")]) as m:
        r = m.read(5)
    assert r.channel == "5" and r.kelvin == pytest.approx(0.0115) and r.sensor == pytest.approx(683521)
    assert r.sensor_units == "ohm" and r.status == 0 and r.valid


def test_read_flags_invalid_reading():
    with expected_protocol(Model372, [("KRDG? A;RDGR? A;RDGST? A", "+040.000E+00;+001.047E+03;064")]) as m:
        r = m.read("A")
    assert r.status_bits == ("T_OVER",) and r.kelvin is None and r.sensor == pytest.approx(1047)
    assert r.raw_kelvin == 40.0


def test_read_zero_kelvin_without_curve_is_not_a_temperature():
    with expected_protocol(Model372, [("KRDG? 4;RDGR? 4;RDGST? 4", "+000.000E+00;+001.000E+03;000")]) as m:
        r = m.read(4)
    assert r.kelvin is None and r.sensor == 1000.0


@pytest.mark.parametrize("reply", ["+1.0E+00;+2.0E+00", "+1.0E+00;garbage;000", "nan;+1;000", "+1;+1;999"])
def test_read_garbled_reply_raises_bad_reply(reply):
    with pytest.raises(BadReply), expected_protocol(Model372, [("KRDG? 1;RDGR? 1;RDGST? 1", reply)]) as m:
        m.read(1)


def test_single_readings():
    with expected_protocol(
        Model372,
        [
            ("KRDG? 1", "+293.873E+00"),
            ("RDGR? 2", "+108.278E+00"),
            ("SRDG? 3", "+1.5E+03"),
            ("RDGPWR? 4", "+012.000E-15"),
            ("QRDG? 5", "-000.500E+00"),
            ("RDGST? A", "128"),
        ],
    ) as m:
        assert m.kelvin(1) == 293.873
        assert m.resistance(2) == 108.278
        assert m.sensor(3) == 1500.0
        assert m.excitation_power(4) == pytest.approx(12e-15)
        assert m.quadrature(5) == -0.5
        assert m.reading_status("A") == 128


def test_scan_and_inset():
    with expected_protocol(
        Model372,
        [
            ("SCAN?", "01,1"),
            ("SCAN 5,0;*ESR?", "0"),
            ("INSET? 1", "1,007,003,21,1"),
            ("INSET 2,1,10,5,21,1;*ESR?", "0"),
        ],
    ) as m:
        assert m.scan() == ScanState("1", True)
        m.set_scan(5, False)
        assert m.input_setup(1) == InputSetup(True, 7, 3, 21, 1)
        m.set_input_setup(2, InputSetup(True, 10, 5, 21, 1))


def test_command_ignored_by_372_raises():
    with pytest.raises(InstrumentError, match="execution error"):
        with expected_protocol(Model372, [("MOUT 0,150;*ESR?", "16")]) as m:
            m.set_manual_output(0, 150)


def test_intype_filter_name_tlimit():
    with expected_protocol(
        Model372,
        [
            ("INTYPE? A", "1,04,0,15,0,2"),
            ("INTYPE 1,0,3,1,10,0,1;*ESR?", "0"),
            ("FILTER? 1", "1,010,02"),
            ("FILTER 0,1,10,2;*ESR?", "0"),
            ("INNAME? 5", "MXC"),
            ('INNAME 5,"MXC Plate";*ESR?', "0"),
            ("TLIMIT? A", "+0000"),
            ("TLIMIT 1,4;*ESR?", "0"),
        ],
    ) as m:
        assert m.input_type("A") == InputType(1, 4, 0, 15, 0, 2)
        m.set_input_type(1, InputType(0, 3, 1, 10, 0, 1))
        assert m.filter(1) == FilterSetup(True, 10, 2)
        m.set_filter(0, FilterSetup(True, 10, 2))
        assert m.input_name(5) == "MXC"
        m.set_input_name(5, "MXC Plate")
        assert m.temperature_limit("A") == 0
        m.set_temperature_limit(1, 4)


def test_heater_commands():
    with expected_protocol(
        Model372,
        [
            ("OUTMODE? 0", "2,6,1,0,0,001"),
            ("OUTMODE 0,5,A,0,0,0,1;*ESR?", "0"),
            ("RANGE? 0", "0"),
            ("RANGE 0,4;*ESR?", "0"),
            ("HTRSET? 0", "+120.000,8,+0000.00,1"),
            ("HTRSET 0,120,2,0,2;*ESR?", "0"),
            ("PID? 0", "+00010.0,+00020.0,+0000.0"),
            ("PID 0,10,20,0;*ESR?", "0"),
            ("SETP? 0", "+010.000E-03"),
            ("SETP 0,0.02;*ESR?", "0"),
            ("MOUT? 0", "+050.000"),
            ("MOUT 0,50;*ESR?", "0"),
            ("HTR?", "+00.0005E+00"),
            ("STILL?", "+10.60"),
            ("STILL 12.5;*ESR?", "0"),
            ("AOUT? 2", "+12.50"),
        ],
    ) as m:
        assert m.output_mode(0) == OutputSetup(OutputMode.OPEN_LOOP, "6", 1, 0, 0, 1)
        m.set_output_mode(0, OutputSetup(OutputMode.CLOSED_LOOP, "A", 0, 0, 0, 1))
        assert m.heater_range(0) == 0
        m.set_heater_range(0, 4)
        assert m.heater_setup(0) == HeaterSetup(120.0, 8, 0.0, 1)
        m.set_heater_setup(0, HeaterSetup(120.0, 2, 0.0, 2))
        assert m.pid(0) == PID(10, 20, 0)
        m.set_pid(0, PID(10, 20, 0))
        assert m.setpoint(0) == pytest.approx(0.01)
        m.set_setpoint(0, 0.02)
        assert m.manual_output(0) == 50.0
        m.set_manual_output(0, 50)
        assert m.sample_heater_output() == 0.0005
        assert m.still_output() == 10.6
        m.set_still_output(12.5)
        assert m.analog_output(2) == 12.5


def test_curve_upload_reads_back_and_download():
    curve = Curve("RX-TEST", "SN1", 4, 40.0, 1, [(3.0, 40.0), (3.5, 1.0)])
    transcript = [
        ("CRVDEL 23;*ESR?", "0"),
        ('CRVHDR 23,"RX-TEST","SN1",4,40,1;*ESR?', "0"),
        ("CRVPT 23,1,3,40;*ESR?", "0"),
        ("CRVPT 23,2,3.5,1;*ESR?", "0"),
        ("CRVPT? 23,1", "+3.00000,+40.0000"),
        ("CRVPT? 23,2", "+3.50000,+1.00000"),
        ("CRVHDR? 23", "RX-TEST,SN1,4,+040.000,1"),
        ("CRVPT? 23,1", "+3.00000,+40.0000"),
        ("CRVPT? 23,2", "+3.50000,+1.00000"),
        ("CRVPT? 23,3", "+0.00000,+0.00000"),
    ]
    with expected_protocol(Model372, transcript) as m:
        m.upload_curve(23, curve)
        got = m.download_curve(23)
    assert got.points == curve.points and got.name == "RX-TEST"


def test_curve_upload_mismatch_raises():
    curve = Curve("X", "Y", 3, 10.0, 1, [(100.0, 10.0)])
    with (
        pytest.raises(InstrumentError, match="read back"),
        expected_protocol(
            Model372,
            [
                ("CRVDEL 21;*ESR?", "0"),
                ('CRVHDR 21,"X","Y",3,10,1;*ESR?', "0"),
                ("CRVPT 21,1,100,10;*ESR?", "0"),
                ("CRVPT? 21,1", "+0.00000,+0.00000"),
            ],
        ) as m,
    ):
        m.upload_curve(21, curve)


def test_status_commands():
    with expected_protocol(Model372, [("*ESR?", "160"), ("*CLS", None), ("*RST", None), ("*OPC?", "1")]) as m:
        assert m.esr() == 160
        m.clear_status()
        m.reset()
        assert m.operation_complete()


def test_bad_channel_never_sent():
    with expected_protocol(Model372, []) as m:
        with pytest.raises(ValueError):
            m.kelvin(17)
        with pytest.raises(ValueError):
            m.set_input_name(1, "a,b")


def test_frequency_cmr_warmup():
    with expected_protocol(
        Model372,
        [
            ("FREQ? 0", "1"),
            ("FREQ A,3;*ESR?", "0"),
            ("CMR?", "0"),
            ("CMR 1;*ESR?", "0"),
            ("WARMUP?", "0,+000.000"),
            ("WARMUP 1,50;*ESR?", "0"),
        ],
    ) as m:
        assert m.excitation_frequency("0") == 1
        m.set_excitation_frequency("A", 3)
        assert m.common_mode_reduction() is False
        m.set_common_mode_reduction(True)
        assert m.warmup() == (0, 0.0)
        m.set_warmup(1, 50)
