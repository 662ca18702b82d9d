"""Issue 24, items 1-6: what third-party 372 clients tripped on, as byte-level transcripts.

Each exchange is a line sent to the emulated 372 and the exact line it answers (None: no
reply). Where each reply format comes from is in firmware_host/FIDELITY.md (Model 372 rows
13, 17a, 18-38); these are the transcripts that pin it.
"""

from __future__ import annotations

import pytest

from firmware_host.ls372_device import LS372Device
from firmware_host.physics import Fridge
from firmware_host.protocol import Dispatcher
from firmware_host.sim_clock import SimClock


def device(seed: int = 3) -> tuple[SimClock, LS372Device, Dispatcher]:
    """A 372 whose simulated time moves only when the test advances it."""
    clock = SimClock(scale=1e-9)
    dev = LS372Device(clock, Fridge(), seed=seed)
    disp = dev.dispatcher()
    assert disp.handle_line("*ESR?") == "128"  # the power-on bit, cleared
    return clock, dev, disp


def run(disp: Dispatcher, transcript: list[tuple[str, str | None]]) -> None:
    for sent, expected in transcript:
        assert disp.handle_line(sent) == expected, sent


# -- item 1: the IEEE 488.2 common commands -------------------------------------------------
def test_common_commands_ese_tst_wai():
    _, _, disp = device()
    run(
        disp,
        [
            ("*ESE?", "000"),  # IEEE 488.2: the enable register is 0 after power-on
            ("*ESE 181;*ESR?", "0"),  # the manual's own sum of its five event bits; no command error
            ("*ESE?", "181"),
            ("*TST?", "0"),  # manual p.154: 0 = no errors found at power-up
            ("*TST?;*ESR?", "0;0"),
            ("*WAI", None),
            ("*WAI;*ESR?", "0"),
            ("*ESE 256;*ESR?", "16"),  # past the 8-bit register: execution error, nothing changed
            ("*ESE?", "181"),
        ],
    )


def test_status_byte_summarises_only_enabled_events():
    _, _, disp = device()
    run(
        disp,
        [
            ("*ESE 0", None),
            ("BOGUS", None),
            ("*STB?", "000"),  # command error set, but not enabled: no event summary bit
            ("*ESE 32", None),
            ("*STB?", "032"),  # enabled now: bit 5 (ESB)
            ("*ESR?", "32"),
            ("*STB?", "000"),
            ("*RST;*ESE?", "032"),  # *RST leaves the status registers alone
        ],
    )


# -- item 2: INTYPE on input A with its (ignored) range field 0 --------------------------------
def test_intype_a_accepts_range_zero_and_ignores_it():
    _, _, disp = device()
    before = disp.handle_line("INTYPE? A")
    run(
        disp,
        [
            ("INTYPE A,1,3,2,0,0,1;*ESR?", "0"),  # the vendor's configure_input sends exactly this shape
            ("INTYPE? A", "1,03,2" + before[6:]),  # excitation and autorange set; the range field kept
            ("INTYPE 1,0,3,1,0,0,1;*ESR?", "16"),  # a measurement channel has no range 0
        ],
    )


# -- item 3: the warm-up heater's HTRSET codes ---------------------------------------------------
def test_htrset_output_1_uses_codes_and_its_own_format():
    _, _, disp = device()
    sample = disp.handle_line("HTRSET? 0")
    run(
        disp,
        [
            ("HTRSET 1,2,0,0.5,2;*ESR?", "0"),  # 50 ohm, user max current 0.5 A, power display
            ("HTRSET? 1", "2,0,+000.500,2"),  # manual p.163: n,n,+nnn.nnn,n
            ("HTRSET 1,1,2,0,1;*ESR?", "0"),  # 25 ohm, 0.63 A
            ("HTRSET? 1", "1,2,+000.000,1"),
            ("HTRSET 1,120,0,0,1;*ESR?", "16"),  # 120 is an ohm value, not a resistance code
            ("HTRSET 1,1,3,0,1;*ESR?", "16"),  # no max current code 3
            ("HTRSET 1,1,0,0.7,1;*ESR?", "16"),  # over the warm-up heater's 0.63 A
            ("HTRSET? 1", "1,2,+000.000,1"),
            ("HTRSET? 0", sample),  # the sample heater keeps its format
            ("HTRSET 0,50,0,0,1;HTRSET? 0", "+050.000,0,+0000.00,1"),
            ("HTRSET 0,2500,0,0,1;*ESR?", "16"),  # the sample heater's 1-2000 ohm
            ("HTRSET? 2", "+120.000,8,+0000.00,1"),  # socs' fixture, unchanged
        ],
    )


# -- item 4: an empty curve slot's header ----------------------------------------------------------
def test_deleted_curve_reads_as_blank_user_curve():
    _, _, disp = device()
    run(
        disp,
        [
            ("CRVHDR? 30", "User Curve,,4,+040.000,1"),  # never written
            ('CRVHDR 30,"KP-X","SN1",3,10.5,2', None),
            ("CRVPT 30,1,100.0,10.0", None),
            ("CRVHDR? 30", "KP-X,SN1,3,+010.500,2"),
            ("CRVDEL 30;*ESR?", "0"),
            ("CRVHDR? 30", "User Curve,,4,+040.000,1"),  # deleted: blank header, as socs' simulator has it
            ("CRVPT? 30,1", "+0,+0"),  # and no breakpoints
        ],
    )


def test_socs_curve_upload_after_delete_parses():
    """socs' Curve.set_curve on a 372: CRVDEL, then CRVHDR? parsed through its format and
    coefficient tables (a format 0 was its KeyError '0'), then the header and the points."""
    format_key = {"3": "Ohm/K (linear)", "4": "log Ohm/K (linear)", "7": "Ohm/K (cubic spline)"}
    tempco_key = {"1": "negative", "2": "positive"}
    _, _, disp = device()
    assert disp.handle_line("CRVDEL 22") is None
    fields = disp.handle_line("CRVHDR? 22").split(",")
    assert (format_key[fields[2]], float(fields[3]), tempco_key[fields[4]]) == ("log Ohm/K (linear)", 40.0, "negative")
    assert disp.handle_line('CRVHDR 22,"RX-TEST","SN9",4,40.0,1') is None
    for i, (ohms, kelvin) in enumerate([(1200.0, 40.0), (2200.0, 1.0), (60000.0, 0.01)], start=1):
        assert disp.handle_line(f"CRVPT 22, {i}, {ohms}, {kelvin}") is None
    assert disp.handle_line("CRVHDR? 22") == "RX-TEST,SN9,4,+040.000,1"
    assert disp.handle_line("CRVPT? 22,2") == "+2200,+1"
    assert disp.handle_line("*ESR?") == "0"


# -- item 5: the commands the vendor's driver sends ----------------------------------------------
def test_input_curve_is_insets_curve_field():
    _, _, disp = device()
    run(
        disp,
        [
            ("INCRV? 5", "22"),
            ("INCRV 5,21;*ESR?", "0"),
            ("INCRV? 5", "21"),
            ("INSET? 5", "1,010,003,21,1"),  # one setting, two commands
            ("INCRV 5,60;*ESR?", "16"),
        ],
    )


def test_display_interface_keypad_beep_weblog():
    _, _, disp = device()
    run(
        disp,
        [
            ("DISPLAY?", "2,1,1"),
            ("DISPLAY 0,,;DISPLAY?", "0,1,1"),  # fields left empty keep their values
            ("DISPLAY 2,2,3;DISPLAY?", "2,2,3"),
            ("IEEE?", "12"),
            ("IEEE 0,0,7;IEEE?", "07"),  # the vendor's set_ieee_interface_parameter sends three fields
            ("IEEE 0,0,31;*ESR?", "16"),
            ("MODE?", "0"),
            ("MODE 1;MODE?", "1"),
            ("DOUT?", "00"),
            ("DOUT 21;DOUT?", "21"),
            ("DOUT 32;*ESR?", "16"),
            ("INTSEL?", "0"),
            ("INTSEL 2;INTSEL?", "2"),
            ("MONITOR?", "0"),
            ("MONITOR 5;MONITOR?", "5"),
            ("LOCK?", "0,123"),
            ("LOCK 1,456;LOCK?", "1,456"),
            ("BEEP?", "1"),
            ("BEEP 0;BEEP?", "0"),
            ("WEBLOG?", "user           ,user           "),
            ('WEBLOG "fridge","cold";WEBLOG?', "fridge         ,cold           "),
            ('WEBLOG "sixteen-chars-xx","a";*ESR?', "16"),
            ("*ESR?", "0"),
        ],
    )


def test_alarm_relay_analog_zone():
    _, _, disp = device()
    run(
        disp,
        [
            ("ALARM? 1", "0,1,+0,+0,+0,0,0,0"),
            ("ALARM 1,1,0,5,1,0.5,1,1,0;*ESR?", "0"),  # the vendor's set_alarm_parameters shape
            ("ALARM? 1", "1,0,+5,+1,+0.5,1,1,0"),
            ("ALARM A,0,0,0,0,0,0,0;ALARM? A", "0,0,+0,+0,+0,0,0,0"),  # its "alarm off" shape
            ("ALARM 1,0,,,,,,;ALARM? 1", "0,0,+5,+1,+0.5,1,1,0"),  # the base class's "off": the rest kept
            ("RELAY? 1", "0,01,0"),
            ("RELAYST? 1", "0"),
            ("RELAY 1,1,,;RELAY? 1;RELAYST? 1", "1,01,0;1"),  # turn_relay_on
            ("RELAY 2,2,A,1;RELAY? 2;RELAYST? 2", "2,A,1;0"),  # alarm mode on input A's high alarm
            ("RELAY 2,5;*ESR?", "16"),
            ("ANALOG? 2", "0,4,0,1,+0,+0,+000.000"),
            ("ANALOG 2,0,1,5,1,1.5,0.01,0;ANALOG? 2", "0,1,05,1,+1.5,+0.01,+000.000"),
            ("ZONE? 0,1", "+000.000E+00,+00010.0,+00020.0,+0000.0,+000.00,0,+00.000,0,0"),
            ("ZONE 0,1,250.000E-03,10,20,0,0,2,1.2,0,0;*ESR?", "0"),  # the manual's example (p.178)
            ("ZONE? 0,1", "+250.000E-03,+00010.0,+00020.0,+0000.0,+000.00,2,+01.200,0,0"),
            ("ZONE 1,1,1,10,20,0,0,2,1.2,0,0;*ESR?", "16"),  # the warm-up heater's range is 0-1
            ("ZONE 0,11,1,10,20,0,0,2,1.2,0,0;*ESR?", "16"),  # ten zones
        ],
    )


# -- item 6: the heater loop controls from the instrument's own readings ------------------------
def _loop_on_scanned_channel(poll_s: float, total_s: float = 900.0) -> tuple[float, float, float]:
    """Closed loop on scanner channel 5 (autoscanned with 1, 2 and 3), polled every ``poll_s``."""
    clock, _, disp = device(seed=7)
    for line in ("OUTMODE 0,5,5,0,0,0,1", "RANGE 0,4", "PID 0,20,100,0", "SETP 0,0.015"):
        assert disp.handle_line(line) is None
    assert disp.handle_line("*ESR?") == "0"
    for _ in range(round(total_s / poll_s)):
        clock.advance(poll_s)
        disp.handle_line("KRDG? 5;HTR?")  # what a logger polls
    control_k = float(disp.handle_line("KRDG? A"))  # the mixing chamber, on input A
    return control_k, float(disp.handle_line("HTR?")), float(disp.handle_line("SCAN?").split(",")[0])


def test_heater_loop_on_scanned_channel_does_not_depend_on_polling_rate():
    fast = _loop_on_scanned_channel(0.1)  # 10 Hz
    slow = _loop_on_scanned_channel(2.0)  # 0.5 Hz
    assert fast[2] == slow[2]  # the scanner is in the same place
    assert fast[0] == pytest.approx(slow[0], abs=5e-9)  # kelvin, at the reading's 1 nK resolution
    assert fast[1] == pytest.approx(slow[1], abs=1e-4)  # heater percent, at HTR?'s resolution
    assert 0.012 < fast[0] < 0.015 and fast[1] > 1  # and the loop did heat the mixing chamber
