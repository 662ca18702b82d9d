"""Model 240 driver, byte for byte. The 240 has no ESR: setters read back."""

import pytest

from drivers import BadReply, InstrumentError
from drivers.ls240 import CurveHeader, InputType, Model240
from drivers.testing import expected_protocol


def test_connect_sets_channel_count():
    with expected_protocol(Model240, [("*IDN?", "LSCI,MODEL240-2P,LSA24AZ,1.6")]) as m:
        m.connect()
        assert m.channel_count == 2
        with pytest.raises(ValueError):
            m.kelvin(3)


def test_read_with_manual_status_bits():
    with expected_protocol(
        Model240,
        [("KRDG? 1;SRDG? 1;RDGST? 1", "+42.0000;+1.04600;000"), ("KRDG? 2;SRDG? 2;RDGST? 2", "+1.40000;+1.64430;016")],
    ) as m:
        a = m.read(1)
        b = m.read(2)
    assert a.kelvin == 42.0 and a.sensor == 1.046 and a.sensor_units == "V" and a.valid
    assert b.status_bits == ("T_UNDER",) and b.kelvin is None and b.sensor == pytest.approx(1.6443)


def test_single_readings_and_settings():
    with expected_protocol(
        Model240,
        [
            ("KRDG? 1", "+293.873"),
            ("CRDG? 1", "+20.7230"),
            ("FRDG? 1", "+69.3014"),
            ("SRDG? 2", "+0.52042"),
            ("RDGST? 2", "128"),
            ("INTYPE? 1", "1,0,0,0,1,1"),
            ("INTYPE 2,3,1,4,1,1,1", None),
            ("INTYPE? 2", "3,1,6,1,1,1"),
            ("INNAME? 1", "50K Plate"),
            ('INNAME 1,"50K Stage"', None),
            ("INNAME? 1", "50K Stage"),
            ("MODNAME?", "Kelvinpi"),
            ("FILTER? 1", "100"),
            ("FILTER 1,10", None),
            ("FILTER? 1", "010"),
            ("BRIGT?", "004"),
            ("ADDR?", "126"),
            ("PROFINUM?", "1"),
            ("PROFISLOT? 1", "1,1"),
            ("PROFISTAT?", "0,"),
        ],
    ) as m:
        assert m.kelvin(1) == 293.873 and m.celsius(1) == 20.723 and m.fahrenheit(1) == 69.3014
        assert m.sensor(2) == 0.52042 and m.reading_status(2) == 128
        assert m.input_type(1) == InputType(1, 0, 0, 0, 1, 1)
        m.set_input_type(2, InputType(3, 1, 4, 1, 1, 1))  # autorange: range read back may differ
        assert m.input_name(1) == "50K Plate"
        m.set_input_name(1, "50K Stage")
        assert m.module_name() == "Kelvinpi"
        assert m.filter(1) == 100
        m.set_filter(1, 10)
        assert m.brightness() == 4 and m.profibus_address() == 126 and m.profibus_slots() == 1
        assert m.profibus_slot(1) == (1, 1) and m.profibus_status() == 0


def test_ignored_setting_raises():
    with pytest.raises(InstrumentError, match="ignored FILTER"):
        with expected_protocol(Model240, [("FILTER 1,10", None), ("FILTER? 1", "100")]) as m:
            m.set_filter(1, 10)


def test_curve_header_point():
    with expected_protocol(
        Model240,
        [
            ("CRVHDR? 1", "DT-600,Standard C,2,+500.000,1"),
            ('CRVHDR 2,"DT-670","00011134",2,325,1', None),
            ("CRVPT? 1,1", "+0.090539,+500.000"),
            ("CRVPT 1,2,0.10191,470", None),
            ("CRVDEL 2", None),
        ],
    ) as m:
        assert m.curve_header(1) == CurveHeader("DT-600", "Standard C", 2, 500.0, 1)
        m.set_curve_header(2, CurveHeader("DT-670", "00011134", 2, 325.0, 1))
        assert m.curve_point(1, 1) == (0.090539, 500.0)
        m.set_curve_point(1, 2, 0.10191, 470.0)
        m.delete_curve(2)


@pytest.mark.parametrize("reply", ["", "+1.0;+2.0", "1e400x;1;000", "\xff\xfe;1;0"])
def test_garbage_is_bad_reply(reply):
    with pytest.raises(BadReply):
        with expected_protocol(Model240, [("KRDG? 1;SRDG? 1;RDGST? 1", reply.encode("latin-1"))]) as m:
            m.read(1)


def test_profibus_setters_read_back():
    with expected_protocol(
        Model240,
        [
            ("ADDR 5", None),
            ("ADDR?", "005"),
            ("PROFINUM 2", None),
            ("PROFINUM?", "2"),
            ("PROFISLOT 2,2,3", None),
            ("PROFISLOT? 2", "2,3"),
            ("ADDR 9", None),
            ("ADDR?", "005"),
        ],
    ) as m:
        m.set_profibus_address(5)
        m.set_profibus_slots(2)
        m.set_profibus_slot(2, 2, 3)
        with pytest.raises(InstrumentError):
            m.set_profibus_address(9)
