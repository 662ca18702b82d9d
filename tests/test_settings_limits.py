"""The emulated 372 refuses what the manual says the firmware refuses, for the declared settings' commands
(issue 22): transcripts on the dispatcher, the way tests/test_ls372_commands.py writes them. Fast: no sockets.

Each refusal here is a FIDELITY.md row (372 rows 50-51) with its manual page; the rows 39-49 refusals
are tested in tests/test_ls372_commands.py."""

from __future__ import annotations

import pytest

from firmware_host.ls372_device import LS372Device
from firmware_host.physics import Fridge
from firmware_host.sim_clock import SimClock


@pytest.fixture
def disp():
    d = LS372Device(SimClock(scale=1e-9), Fridge(), seed=3).dispatcher()
    assert d.handle_line("*ESR?") == "128"  # power-on
    return d


@pytest.mark.parametrize("rate", ["0.0005", "0.0009", "1E-4"])
def test_a_ramp_rate_between_0_and_0_001_is_refused(disp, rate):
    """Manual p.173: RAMP's rate is 0.001 to 100 K/min, 0 a step change (FIDELITY.md 372 row 50)."""
    assert disp.handle_line("RAMP 0,1,2.5") is None
    assert disp.handle_line("*ESR?") == "0"
    assert disp.handle_line(f"RAMP 0,0,{rate}") is None
    assert disp.handle_line("*ESR?") == "16"  # execution error
    assert disp.handle_line("RAMP? 0") == "1,+02.500"  # unchanged


@pytest.mark.parametrize("rate, reply", [("0", "+00.000"), ("0.001", "+00.001"), ("100", "+100.000")])
def test_a_ramp_rate_of_0_or_from_0_001_to_100_is_taken(disp, rate, reply):
    assert disp.handle_line(f"RAMP 1,1,{rate}") is None
    assert disp.handle_line("*ESR?") == "0"
    assert disp.handle_line("RAMP? 1") == f"1,{reply}"


def test_the_sample_heaters_max_user_current_is_not_bounded_by_the_emulator(disp):
    """Manual p.163: the max user current is the warm-up heater's; for the sample heater the manual only
    says to pass 0. No bound is stated, so the emulator invents none (FIDELITY.md 372 row 51, UNVERIFIED);
    the appliance's own 0-2 A is tested in tests/test_settings.py."""
    assert disp.handle_line("HTRSET 0,100,0,5,1") is None
    assert disp.handle_line("*ESR?") == "0"
    assert disp.handle_line("HTRSET? 0") == "+100.000,0,+0005.00,1"
