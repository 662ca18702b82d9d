"""Lake Shore's own ``lakeshore`` package (``Model336``, ``Model350``) over TCP against the emulated
controllers: each call parses what the emulator answers, and what it reads is what the emulator's state
holds. The package hardcodes nothing but the default port: ``tcp_port=`` points it at the emulator's.

Every call into the vendor's driver has an outer timeout: it can spin if a socket closes.
"""

from __future__ import annotations

import lakeshore
import pytest

from firmware_host.emulator import Emulator

from .conftest import run_with_timeout as within
from .test_oracle import fake_usb  # noqa: F401 (a fixture)

M = lakeshore.Model336


@pytest.fixture(scope="module")
def emu():
    e = Emulator.ls336(seed=11)
    e.listen_tcp("127.0.0.1", 0)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def ls(emu):
    host, port = emu.tcp.address
    inst = within(lambda: lakeshore.Model336(ip_address=host, tcp_port=port, timeout=2))
    yield inst
    within(lambda: inst.disconnect_tcp())


def test_identity(ls, emu):
    assert ls.model_number == "MODEL336" and ls.serial_number == emu.device.serial


def test_readings_are_the_emulators(ls, emu):
    dev = emu.device
    k = within(lambda: ls.get_kelvin_reading("B"))
    assert k == pytest.approx(dev.reading("B").kelvin, rel=1e-3)
    assert within(lambda: ls.get_sensor_reading("C")) == pytest.approx(dev.reading("C").sensor, rel=1e-3)
    assert len(within(lambda: ls.get_all_kelvin_reading())) == 4
    status = within(lambda: ls.get_input_reading_status("A"))
    assert not status.invalid_reading and not status.temp_overrange


def test_input_setup_round_trip(ls, emu):
    s = within(lambda: ls.get_input_sensor("C"))
    assert s.sensor_type == M.InputSensorType.NTC_RTD and s.autorange_enable and s.units == M.InputSensorUnits.KELVIN
    new = lakeshore.Model336InputSensorSettings(M.InputSensorType.DIODE, False, False, M.InputSensorUnits.SENSOR, 1)
    within(lambda: ls.set_input_sensor("D", new))
    assert emu.device.ins["D"].sensor_type == 1 and emu.device.ins["D"].range == 1
    assert within(lambda: ls.get_input_sensor("D")).input_range == M.DiodeRange.TEN_VOLTS
    within(lambda: ls.set_sensor_name("D", "Pump"))
    assert within(lambda: ls.get_sensor_name("D")) == "Pump" == emu.device.ins["D"].name
    within(lambda: ls.set_input_curve("D", 1))  # DT-670 suits a diode
    assert within(lambda: ls.get_input_curve("D")) == 1
    with pytest.raises(lakeshore.InstrumentException, match="does not match"):
        within(lambda: ls.set_input_curve("D", 8))  # an RX-102A does not: the firmware falls back to 0
    assert within(lambda: ls.get_filter("A"))["data_points"] == 10
    assert within(lambda: ls.get_temperature_limit("A")) == 0.0


def test_outputs_round_trip(ls, emu):
    o = emu.device.outputs
    within(lambda: ls.set_heater_setup(1, M.HeaterResistance.HEATER_50_OHM, 0.6, M.HeaterOutputUnits.POWER))
    setup = within(lambda: ls.get_heater_setup(1))
    assert setup["heater_resistance"] == M.HeaterResistance.HEATER_50_OHM and setup["max_current"] == 0.6
    assert (o[1].resistance, o[1].max_user_current, o[1].display) == (2, 0.6, 2)
    within(lambda: ls.set_heater_output_mode(1, M.HeaterOutputMode.CLOSED_LOOP, M.InputChannel.CHANNEL_C, True))
    mode = within(lambda: ls.get_heater_output_mode(1))
    assert mode == {"mode": M.HeaterOutputMode.CLOSED_LOOP, "channel": M.InputChannel.CHANNEL_C, "powerup_enable": True}
    within(lambda: ls.set_heater_pid(1, 40, 25, 5))
    assert within(lambda: ls.get_heater_pid(1)) == {"gain": 40, "integral": 25, "derivative": 5}
    within(lambda: ls.set_control_setpoint(1, 1.05))
    assert within(lambda: ls.get_control_setpoint(1)) == pytest.approx(1.05) and o[1].setp == pytest.approx(1.05)
    within(lambda: ls.set_heater_range(1, M.HeaterRange.LOW))
    assert within(lambda: ls.get_heater_range(1)) == M.HeaterRange.LOW and o[1].range == 1
    within(lambda: ls.set_heater_range(3, M.HeaterVoltageRange.VOLTAGE_ON))
    assert within(lambda: ls.get_heater_range(3)) == M.HeaterVoltageRange.VOLTAGE_ON
    emu.clock.advance(120)
    pct = within(lambda: ls.get_heater_output(1))
    assert pct > 0 and pct == pytest.approx(round(emu.device.output_percent(1), 1))
    within(lambda: ls.set_manual_output(2, 12.5))
    assert within(lambda: ls.get_manual_output(2)) == 12.5
    assert within(lambda: ls.get_analog_output_percentage(3)) == 0.0
    within(lambda: ls.set_setpoint_ramp_parameter(1, True, 2.5))
    assert within(lambda: ls.get_setpoint_ramp_parameter(1)) == {"ramp_enable": True, "rate_value": 2.5}
    within(lambda: ls.all_heaters_off())
    assert [o[n].range for n in (1, 2, 3, 4)] == [0, 0, 0, 0]


def test_curves_round_trip(ls, emu):
    h = within(lambda: ls.get_curve_header(1))
    assert h.curve_name == "DT-670" and h.curve_data_format == M.CurveFormat.VOLTS_PER_KELVIN
    header = lakeshore.Model336CurveHeader("PUMP DIODE", "D12345", M.CurveFormat.VOLTS_PER_KELVIN, 325.0, 1)
    within(lambda: ls.set_curve_header(30, header))
    within(lambda: ls.set_curve_data_point(30, 1, 0.1, 475.0))
    within(lambda: ls.set_curve_data_point(30, 2, 1.6, 4.0))
    assert within(lambda: ls.get_curve_data_point(30, 2)) == (1.6, 4.0)
    assert emu.device.curves.slot(30).name == "PUMP DIODE"
    within(lambda: ls.delete_curve(30))
    assert within(lambda: ls.get_curve_header(30)).curve_name == "User Curve"  # still parses after a delete


def test_status_registers(ls, emu):
    mask = lakeshore.Model336StandardEventRegister(True, True, True, True, False)  # 1+4+16+32
    within(lambda: ls.set_standard_event_enable_mask(mask))
    assert within(lambda: ls.get_standard_event_enable_mask()).to_integer() == 53 == emu.device.ese
    assert within(lambda: ls.get_self_test()) is False
    with pytest.raises(lakeshore.InstrumentException, match="Command Error"):
        within(lambda: ls.command("NOSUCH"))


def test_model_350_generic_client():
    e = Emulator.ls336(seed=12, model="350", serial="LSA350B")
    e.listen_tcp("127.0.0.1", 0)
    try:
        host, port = e.tcp.address
        ls = within(lambda: lakeshore.Model350(ip_address=host, tcp_port=port, timeout=2))
        assert ls.model_number == "MODEL350" and ls.serial_number == "LSA350B"
        within(lambda: ls.command("RANGE 1,5"))
        assert within(lambda: ls.query("RANGE? 1")) == "5" and e.device.outputs[1].range == 5
        assert float(within(lambda: ls.query("KRDG? B"))) == pytest.approx(e.device.reading("B").kelvin, rel=1e-3)
        within(lambda: ls.disconnect_tcp())
    finally:
        e.stop()


@pytest.mark.parametrize(("model", "pid"), [("336", 0x0301), ("350", 0x0302)])
def test_vendor_client_over_the_usb_pty(tmp_path, request, model, pid):
    """The package's USB path (57600 7O1, found by VID/PID) on the emulator's pty."""
    e = Emulator.ls336(seed=13, model=model, serial=f"LSA{model}U")
    link = e.listen_pty(str(tmp_path / f"ls{model}"))
    request.getfixturevalue("fake_usb")(link, pid, f"LSA{model}U")  # test_oracle's port-scan stand-in
    try:
        cls = lakeshore.Model336 if model == "336" else lakeshore.Model350
        ls = within(lambda: cls(com_port=link, timeout=1))
        assert ls.serial_number == f"LSA{model}U"
        assert float(within(lambda: ls.query("KRDG? C"))) == pytest.approx(e.device.reading("C").kelvin, rel=1e-3)
        within(lambda: ls.command('INNAME A,"Over USB"'))  # the 350's generic command() only writes
        assert within(lambda: ls.query("INNAME? A")) == "Over USB" == e.device.ins["A"].name
        within(lambda: ls.disconnect_usb())
    finally:
        e.stop()
