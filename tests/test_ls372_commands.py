"""The 372's declared command table: a refused command changes nothing, whatever field is wrong."""

from __future__ import annotations

import pytest

from firmware_host.ls372_device import LS372Device
from firmware_host.physics import Fridge
from firmware_host.sim_clock import SimClock


@pytest.fixture
def disp():
    d = LS372Device(SimClock(scale=1e-9), Fridge(), seed=3).dispatcher()
    assert d.handle_line("*ESR?") == "128"
    return d


@pytest.mark.parametrize(
    "query, bad",
    [
        ("OUTMODE? 0", "OUTMODE 0,5,A,2,0,0,1"),  # power-up 2: the last fields were once read after the first were set
        ("HTRSET? 0", "HTRSET 0,50,2,0,3"),  # display 3
        ("INTYPE? 1", "INTYPE 1,1,23,0,10,0,1"),  # excitation past the current ranges
        ("RANGE? 1", "RANGE 1,2"),  # the warm-up heater is on or off
    ],
)
def test_a_refused_command_changes_nothing(disp, query, bad):
    before = disp.handle_line(query)
    assert disp.handle_line(bad) is None
    assert disp.handle_line("*ESR?") == "16"  # execution error
    assert disp.handle_line(query) == before


def test_freq_with_too_few_arguments_is_refused_and_the_line_goes_on(disp):
    # FREQ 0 once indexed a missing argument: an IndexError, not an ESR bit, and the rest of the line was lost
    assert disp.handle_line("FREQ 0;FREQ? 0") == "1"
    assert disp.handle_line("*ESR?") == "16"
