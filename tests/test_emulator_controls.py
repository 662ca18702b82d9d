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
