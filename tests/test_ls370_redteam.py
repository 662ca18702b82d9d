"""Red team on the 370 (issue 24): each finding the pass made, as a fast test that fails without its fix.

Faults 2 (a pty reopened) and 4 (empty CRVHDR fields) were fixed on main before; their tests live
beside the code that fixed them. The setpoint-cap checks run against the emulators over real TCP
with the real drivers and a real ``Control``; the API wiring is the slow test in test_ls370_settings.
"""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, ControlConfig, parse
from appliance.control import Control, ControlRefused
from appliance.settings import SETTINGS, check_setpoint_cap
from drivers.base import Pacing
from drivers.ls370 import Model370
from drivers.ls372 import Model372
from drivers.transport import TcpTransport
from firmware_host.emulator import Emulator
from firmware_host.ls370_commands import dispatcher
from firmware_host.ls370_ledger import ReadingLedger


@pytest.fixture(scope="module")
def emu():
    e = Emulator.ls370(seed=21)
    e.device.strict_pacing = False  # the pacing rule has its own tests
    e.listen_tcp("127.0.0.1", 0)
    yield e
    e.stop()


@pytest.fixture
def m370(emu):
    m = Model370(TcpTransport(*emu.tcp.address), timeout=2, pacing=Pacing(0, 0, 0))
    m.connect()
    yield m
    m.close()


def control(cap: float) -> Control:
    return Control(ControlConfig(max_setpoint_kelvin=cap), [], None)  # type: ignore[arg-type]


# -- fault 5: only the last query of a message is answered (FIDELITY 370 row 3) ---------------------
def test_a_message_whose_last_query_fails_answers_nothing():
    e = Emulator.ls370(seed=1)
    e.device.strict_pacing = False  # no sleeps: the 50 ms rule has its own tests
    try:
        d = dispatcher(e.device)
        d.handle_line("*ESR?")  # the power-on bit
        assert d.handle_line("RDGK? 5;FOO?") is None  # was the RDGK? value: FOO? is the last query
        assert d.handle_line("*ESR?") == "32"
        assert d.handle_line("FOO?;RDGK? 5") is not None  # RDGK? is last: answered
        assert d.handle_line("RDGK? 5;SETP 0.02") is not None  # a command after the query: still answered
        assert d.handle_line("SETP?") == "+020.000E-03"
    finally:
        e.stop()


# -- fault 3: a reading whose reply the slow fault held back, yet the client got in time -----------
def test_a_slow_reply_counts_the_reading_late_not_nowhere():
    led = ReadingLedger()
    led.note("RDGK? 5", "+011.501E-03", delivered=True, late=True)
    led.note("RDGR? 5", "+683.462E+03", delivered=True, late=False)
    led.note("RDGST? 5", "000", delivered=True, late=False)
    assert led.late == {("5", "kelvin"): 1, ("5", "sensor"): 1}  # was {}: the client stored it, the ledger lost it
    assert led.counts() == {}  # its values are not kept (the reconciler then compares counts)
    led.note("RDGK? 5", "+011.502E-03", delivered=True, late=False)  # the next group is on time again
    led.note("RDGR? 5", "+683.400E+03", delivered=True, late=False)
    led.note("RDGST? 5", "000", delivered=True, late=True)
    assert led.late == {("5", "kelvin"): 2, ("5", "sensor"): 2}  # a late status makes the group late too
    led.note("RDGK? 5;SETP 1", "+011.503E-03", delivered=True, late=False)  # the last *query* is counted
    led.note("RDGR? 5", "+683.300E+03", delivered=True, late=False)
    led.note("RDGST? 5", "000", delivered=True, late=False)
    assert led.counts() == {"5/kelvin": 1, "5/sensor": 1}
    led.note("RDGK? 5", "+011.504E-03", delivered=True, late=True)
    led.note("RDGR? 5", "+683.300E+03", delivered=False, late=False)  # a spoiled reply drops the group
    led.note("RDGST? 5", "000", delivered=True, late=False)
    assert led.faulted == 1 and led.late_total() == 4


# -- fault 1: a units change cannot carry a setpoint past max_setpoint_kelvin ------------------------
def test_370_units_change_is_judged_against_the_held_setpoint(emu, m370):
    ctl, cset = control(2.0), SETTINGS["370"]["control_setup"]
    emu.device.power_on()
    m370.command("CSET 5,0,1,1,1,8,100;SETP 1.5;CMODE 4")
    full = {**cset.read(m370, ""), "units": 2}
    with pytest.raises(ControlRefused) as refused:  # 1.5 K would become 1.5 ohm
        check_setpoint_cap(ctl, "X", m370, "control_setup", "", full)
    assert refused.value.status == 400 and "max_setpoint_kelvin is 2 K" in str(refused.value)
    check_setpoint_cap(ctl, "X", m370, "control_setup", "", {**full, "units": 1, "delay": 9})  # units kept: fine
    m370.command("CSET 5,0,2,1,1,8,100;SETP 20000")  # the front panel: 20000 ohm
    with pytest.raises(ControlRefused, match="SETP 20000 a kelvin setpoint above it"):
        check_setpoint_cap(ctl, "X", m370, "control_setup", "", {**full, "units": 1})
    m370.command("SETP 1")
    check_setpoint_cap(ctl, "X", m370, "control_setup", "", {**full, "units": 1})  # 1 K is under the cap
    m370.command("SETP 0")
    with pytest.raises(ControlRefused, match="while the loop regulates"):  # CMODE closed loop in ohms
        check_setpoint_cap(ctl, "X", m370, "control_mode", "", {"mode": 1})


def test_372_input_type_and_output_mode_are_judged_against_the_held_setpoint(emu372):
    ctl = control(2.0)
    m = Model372(TcpTransport(*emu372.tcp.address), timeout=2)
    m.connect()
    try:
        m.command("INTYPE 6,1,9,0,14,0,1;INTYPE 7,1,9,0,14,0,2;OUTMODE 0,5,6,0,0,0,1;SETP 0,1.5")
        intype, outmode = SETTINGS["372"]["input_type"], SETTINGS["372"]["output_mode"]
        full = {**intype.read(m, "6"), "units": 2}
        with pytest.raises(ControlRefused, match="max_setpoint_kelvin is 2 K"):  # the control input to ohms
            check_setpoint_cap(ctl, "N", m, "input_type", "6", full)
        check_setpoint_cap(ctl, "N", m, "input_type", "5", {**intype.read(m, "5"), "units": 2})  # not controlled
        move = {**outmode.read(m, "0"), "input": "7"}
        with pytest.raises(ControlRefused, match="a setpoint in ohms"):  # controlled from an input in ohms
            check_setpoint_cap(ctl, "N", m, "output_mode", "0", move)
        m.command("OUTMODE 0,0,7,0,0,0,1;SETP 0,20000")  # loop off, from 7 (ohms), 20000 ohm held
        with pytest.raises(ControlRefused, match="SETP 20000 a kelvin setpoint above it"):
            check_setpoint_cap(ctl, "N", m, "input_type", "7", {**intype.read(m, "7"), "units": 1})
    finally:
        m.close()


# -- fault 6: the voltage excitation's own limit --------------------------------------------------
def test_voltage_excitation_above_12_is_named():
    s = SETTINGS["370"]["input_range"]
    assert "1 to 12 under voltage" in s.across({"mode": 0, "excitation": 15, "range": 9, "autorange": 0, "cs_off": 0})
    assert s.across({"mode": 1, "excitation": 15, "range": 9, "autorange": 0, "cs_off": 0}) == ""
    assert s.across({"mode": 0, "excitation": 12, "range": 9, "autorange": 0, "cs_off": 0}) == ""


# -- fault 7: keys a 370 has nothing for ----------------------------------------------------------
def test_read_control_input_on_a_370_is_refused_naming_the_key():
    base = '[[instrument]]\nmodel = "370"\nname = "X"\ntransport = "serial"\ndevice = "/dev/ttyUSB0"\n'
    with pytest.raises(ConfigError, match=r"instrument\[0\]\.read_control_input: .*370.* no control input"):
        parse(base + "read_control_input = true\n")
    parse(base + "read_heater = true\n")  # the 370 has a sample heater
    parse(base + "read_control_input = false\n")
