"""`.340` files: Lake Shore's published curves parse; write/parse round-trips; bad files name the line."""

import pytest

from drivers.curves import Curve, CurveError, parse_340, read_340, write_340

from .conftest import ROOT

SHARED = ROOT / "firmware_host" / "curves"


def test_rx102a():
    c = read_340(SHARED / "RX-102A.340")
    assert (c.name, c.serial, c.data_format, c.limit, c.coefficient) == (
        "RX-102A-AA-0.05D-0.05B",
        "UMEN102",
        4,
        40.0,
        1,
    )
    assert len(c.points) == 104 and c.points[0] == (3.02081, 40.0) and c.t_range == (0.05, 40.0)
    # log10(ohms): 40 K is about 1 kOhm, and interpolation inverts itself
    assert c.sensor(40.0) == pytest.approx(10**3.02081)
    assert c.temperature(c.sensor(1.234)) == pytest.approx(1.234, rel=1e-9)


def test_dt670_mixed_number_styles():
    c = read_340(SHARED / "DT-670.340")
    assert c.data_format == 2 and len(c.points) == 109
    assert c.points[0] == (0.0905392, 500.0) and c.points[1] == (0.113581, 489.5)
    assert c.temperature(c.sensor(77.0)) == pytest.approx(77.0)


def test_round_trip():
    c = read_340(SHARED / "DT-670.340")
    again = parse_340(write_340(c))
    assert again.points == c.points and again.name == c.name and again.limit == c.limit


def test_extra_header_lines_tolerated():
    text = (
        "Comment: calibrated 2024\nSensor Model: X\nSerial Number: 1\nData Format: 3 (Ohms/Kelvin)\n"
        "SetPoint Limit: 300.\nTemperature coefficient: 2 (Positive)\nNumber of Breakpoints: 2\n\n"
        "No. Units Temperature (K)\n\n1 100.0 273.15\n2 110.0 300\n"
    )
    c = parse_340(text)
    assert c.coefficient == 2 and c.points == [(100.0, 273.15), (110.0, 300.0)]


@pytest.mark.parametrize(
    "text,match",
    [
        ("Sensor Model: X\n1 1.0 2.0\n", "serial number"),
        (
            "Sensor Model: X\nSerial Number: 1\nData Format: 4\nSetPoint Limit: 1\nTemperature coefficient: 1\n"
            "1 1.0 2.0\n3 1.0 2.0\n",
            r"<curve>:7: breakpoint number 3",
        ),
        (
            "Sensor Model: X\nSerial Number: 1\nData Format: 9\nSetPoint Limit: 1\nTemperature coefficient: 1\n1 1 1\n",
            "data format 9",
        ),
        (
            "Sensor Model: X\nSerial Number: 1\nData Format: 4\nSetPoint Limit: 1\nTemperature coefficient: 1\n"
            "Number of Breakpoints: 5\n1 1 1\n",
            "says 5 breakpoints",
        ),
    ],
)
def test_bad_files_name_the_problem(text, match):
    with pytest.raises(CurveError, match=match):
        parse_340(text)


def test_too_many_points():
    with pytest.raises(CurveError):
        Curve("x", "y", 3, 1.0, 1, [(float(i), float(i)) for i in range(201)])
