"""Lake Shore's own ``lakeshore`` package (its high-level ``Model372`` API) over TCP against the
emulated 372: every method that failed before issue 24 (a time-out, an ESR error raised as an
exception, or a reply its parser could not read), and the emulator's state read back through it.

Every call into the vendor's driver has an outer timeout: it can spin if a socket closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lakeshore
import pytest

from .conftest import run_with_timeout as within

M = lakeshore.Model372
Check = Callable[[Any, Any], None]  # (vendor driver, emulated device) -> asserts


@pytest.fixture
def oracle(emu372):
    host, port = emu372.tcp.address
    inst = within(lambda: lakeshore.Model372(baud_rate=None, ip_address=host, tcp_port=port, timeout=2))
    yield inst
    within(lambda: inst.disconnect_tcp())


def event_enable_mask(ls, dev) -> None:  # *ESE / *ESE?
    mask = lakeshore.model_372.Model372StandardEventRegister(True, True, True, True, False)  # 1+4+16+32
    ls.set_standard_event_enable_mask(mask)
    got = ls.get_standard_event_enable_mask()
    assert got.to_integer() == 53 and dev.ese == 53


def self_test(ls, dev) -> None:  # *TST?
    assert ls.get_self_test() is False  # False: no errors found


def setpoint_kelvin(ls, dev) -> None:  # OUTMODE?, INTYPE? A, INTYPE A,...,0,..., SETP
    ls.set_setpoint_kelvin(0, 0.015)
    assert ls.get_setpoint_kelvin(0) == pytest.approx(0.015) and dev.outputs[0].setp == pytest.approx(0.015)


def warmup_heater_setup(ls, dev) -> None:  # HTRSET 1 / HTRSET? 1
    ls.setup_warmup_heater(M.HeaterResistance.HEATER_50_OHM, 0.5, M.HeaterOutputUnits.POWER)
    assert ls.get_warmup_heater_setup() == {
        "resistance": M.HeaterResistance.HEATER_50_OHM,
        "max_current": 0.5,
        "units": M.HeaterOutputUnits.POWER,
    }
    ls.command("HTRSET 1,1,2,0,1")  # 25 ohm, the 0.63 A code
    assert ls.get_warmup_heater_setup()["max_current"] == 0.63
    # the sample heater keeps its own format
    ls.setup_sample_heater(75, M.HeaterOutputUnits.CURRENT)
    assert ls.get_sample_heater_setup() == {"resistance": 75.0, "units": M.HeaterOutputUnits.CURRENT}


def deleted_curve_header(ls, dev) -> None:  # CRVDEL then CRVHDR?
    ls.delete_curve(22)
    h = ls.get_curve_header(22)
    assert (h.curve_name, h.curve_data_format, h.temperature_limit, h.coefficient) == (
        "User Curve",
        M.CurveFormat.LOGOHM_PER_KELVIN,
        40.0,
        M.CurveTemperatureCoefficient.NEGATIVE,
    )


def input_curve(ls, dev) -> None:  # INCRV / INCRV?
    ls.set_input_curve(5, 21)  # the driver re-reads it and raises if it reads 0
    assert ls.get_input_curve(5) == 21 and dev.channels["5"].curve == 21


def display(ls, dev) -> None:  # DISPLAY?
    assert ls.get_display_mode() == M.DisplayMode.CUSTOM
    assert ls.get_custom_display_settings() == {
        "mode": M.DisplayMode.CUSTOM,
        "number_of_fields": M.DisplayFields.LARGE_4,
        "displayed_info": M.DisplayInfo.SAMPLE_HEATER,
    }
    ls.set_display_settings(M.DisplayMode.CONTROL_INPUT)
    assert ls.get_display_mode() == M.DisplayMode.CONTROL_INPUT


def ieee_address(ls, dev) -> None:  # IEEE / IEEE?
    assert ls.get_ieee_interface_parameter() == 12
    ls.set_ieee_interface_parameter(7)
    assert ls.get_ieee_interface_parameter() == 7 and dev.panel.ieee_address == 7


def ieee_mode(ls, dev) -> None:  # MODE / MODE?
    assert ls.get_ieee_interface_mode() == M.InterfaceMode.LOCAL
    ls.set_ieee_interface_mode(M.InterfaceMode.REMOTE)
    assert ls.get_ieee_interface_mode() == M.InterfaceMode.REMOTE


def digital_output(ls, dev) -> None:  # DOUT / DOUT?
    bits = lakeshore.model_372.Model372DigitalOutputRegister(True, False, True, False, True)
    ls.set_digital_output(bits)
    assert ls.get_digital_output().to_integer() == 21 and dev.panel.dout == 21


def interface(ls, dev) -> None:  # INTSEL?
    assert ls.get_interface() == M.Interface.USB


def alarm(ls, dev) -> None:  # ALARM / ALARM?
    ls.set_alarm_parameters(3, True, lakeshore.Model372AlarmParameters(5, 1, 2, True, True, False))
    got = ls.get_alarm_parameters(3)
    s = got["alarm_settings"]
    assert got["alarm_enable"] is True and (s.high_value, s.low_value, s.deadband, s.latch_enable) == (5, 1, 2, True)
    assert (dev.alarms["3"].high, dev.alarms["3"].low) == (5.0, 1.0)
    ls.set_alarm_parameters("A", False)
    assert ls.get_alarm_parameters("A")["alarm_enable"] is False


def monitor(ls, dev) -> None:  # MONITOR / MONITOR?
    ls.set_monitor_output_source(M.MonitorOutputSource.VDIF)
    assert ls.get_monitor_output_source() == M.MonitorOutputSource.VDIF


def analog_monitor(ls, dev) -> None:  # ANALOG 2 / ANALOG? 2
    ls.configure_analog_monitor_output_heater(M.InputSensorUnits.KELVIN, 1.5, 0.01)
    assert ls.get_analog_monitor_output_settings() == {
        "source": M.InputSensorUnits.KELVIN,
        "high_value": 1.5,
        "low_value": 0.01,
    }
    assert ls.get_analog_manual_value(2) == 0.0


def zone(ls, dev) -> None:  # ZONE / ZONE?
    row = lakeshore.Model372ControlLoopZoneSettings(0.25, 10, 20, 0, 0, M.SampleHeaterOutputRange(2), 1.2, 0, 0)
    ls.set_control_loop_parameters(0, 1, row)
    got = ls.get_control_loop_zone_parameters(0, 1)
    assert (got.upper_bound, got.p_value, got.i_value, got.heater_range, got.ramp_rate) == (
        0.25,
        10.0,
        20.0,
        M.SampleHeaterOutputRange.RANGE_100_MICRO_AMPS,
        1.2,
    )


def keypad_lock(ls, dev) -> None:  # LOCK / LOCK?
    assert ls.get_keypad_lock() == {"state": False, "code": 123}
    ls.set_keypad_lock(True, 456)
    assert ls.get_keypad_lock() == {"state": True, "code": 456}


def beep(ls, dev) -> None:  # BEEP / BEEP?
    ls.set_alarm_beep(False)
    assert ls.get_alarm_beep_status() is False and dev.panel.beep == 0


def relays(ls, dev) -> None:  # RELAY / RELAY? / RELAYST?
    assert ls.get_relay_status(1) is False
    ls.turn_relay_on(1)
    assert ls.get_relay_status(1) is True
    assert ls.get_relay_control_mode(1) == M.RelayControlMode.RELAY_ON
    ls.set_relay_for_sample_heater_control_zone(2)
    assert ls.get_relay_control_mode(2) == M.RelayControlMode.SAMPLE_HEATER_ZONE


def web_login(ls, dev) -> None:  # WEBLOG / WEBLOG?
    ls.set_website_login("fridge", "cold")
    assert ls.get_website_login() == {"username": "fridge", "password": "cold"}


CALLS: list[Check] = [
    event_enable_mask,
    self_test,
    setpoint_kelvin,
    warmup_heater_setup,
    deleted_curve_header,
    input_curve,
    display,
    ieee_address,
    ieee_mode,
    digital_output,
    interface,
    alarm,
    monitor,
    analog_monitor,
    zone,
    keypad_lock,
    beep,
    relays,
    web_login,
]


@pytest.mark.parametrize("check", CALLS, ids=[c.__name__ for c in CALLS])
def test_vendor_model372_method(oracle, emu372, check):
    within(lambda: check(oracle, emu372.device), timeout=20)
    # and nothing the driver sent set an error bit it did not already raise on
    assert within(lambda: oracle.query("*ESR?", check_errors=False)) == "0"
