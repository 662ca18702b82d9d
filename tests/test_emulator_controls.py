"""The fault-control table and its documentation agree: every word has an action and a line in the docstring."""

from __future__ import annotations

import re

from firmware_host import emulator


def test_every_control_word_is_documented_and_every_documented_word_exists():
    doc = emulator.__doc__ or ""
    listed = set(re.findall(r"^    ([a-z]+)\b", doc.split("::", 1)[1], flags=re.M))
    assert listed == set(emulator.CONTROLS)


def test_an_unknown_word_and_a_bad_argument_are_refused_with_the_word():
    emu = emulator.Emulator.ls240()
    assert emu.control("bogus 1") == "error: unknown command 'bogus'"
    assert emu.control("slow x").startswith("error: slow: ")
    assert emu.control("unplug") == "error: no serial pty to unplug"
    assert emu.control("garbage 2") == "ok" and emu.faults.garbage == 2


def test_settle_returns_a_warmed_fridge_to_base_at_once():
    """The README's walkthrough: after ``warmup 3000`` + ``advance 3600`` the MXC is far above base, and
    ``warmup 0`` + ``advance 14400`` still leaves it warm (47 K measured); ``settle`` ends the warm-up
    and puts every stage at base, so the cooldown returns in demo time."""
    import json

    from firmware_host.physics import BASE

    emu = emulator.Emulator.ls372()
    assert emu.control("warmup 3000") == "ok" and emu.control("advance 3600") == "ok"
    warm = json.loads(emu.control("status"))["temperatures"]
    assert warm["mxc"] > 50
    assert emu.control("settle") == "ok"
    temps = json.loads(emu.control("status"))["temperatures"]
    assert temps == BASE
    emu.control("advance 600")  # and it stays there: the warm-up is over
    temps = json.loads(emu.control("status"))["temperatures"]
    assert abs(temps["mxc"] - BASE["mxc"]) < 0.002, temps
