"""Issue 22 red team, finding 1: a user string must never carry a second instrument command.

A line feed inside an input name ran ``SETP 0 300`` past ``max_setpoint_kelvin`` and ``CRVDEL 21`` on
an in-use curve, unaudited. Every character outside printable ASCII is refused by the settings API
(400 naming it, nothing sent), by ``quote_name`` and by the driver's line writer; the emulator, like
the firmware, survives a malformed line instead of ending the session.
"""

from __future__ import annotations

import socket

import pytest

from drivers.base import quote_name
from drivers.ls240 import Model240
from tests.conftest import run_with_timeout as within
from tests.test_settings import app, message, put  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

BAD_NAMES = ["\nSETP 0 300\n", "x\rCRVDEL 21", "a\x00b", "a\x7fb", "\r\nCRVDEL 22\r\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_with_a_control_character_is_400_and_nothing_is_sent(app, emu372, name):  # noqa: F811
    dev = emu372.device
    setp, curve21, name2 = dev.outputs[0].setp, dev.curves.curve(21), dev.channels["2"].name
    heard = len(emu372.ledger.heard)
    status, body = put(app, "LSA23JD", "name", "2", {"name": name})
    assert status == 400, body
    bad = next(c for c in name if not 0x20 <= ord(c) <= 0x7E)
    assert repr(bad) in message(body), body
    status, body = put(app, "LSA24AZ", "name", "1", {"name": name})
    assert status == 400 and repr(bad) in message(body), body
    sent = list(emu372.ledger.heard)[heard:]
    assert not any("INNAME" in line or "SETP " in line or "CRVDEL" in line for line in sent), sent
    assert dev.outputs[0].setp == setp and dev.curves.curve(21) == curve21 and dev.channels["2"].name == name2


@pytest.mark.parametrize("name", [*BAD_NAMES, "a,b", "a;b", 'a"b', "Ωcal"])
def test_quote_name_and_the_line_writer_refuse_it_as_the_last_line_of_defence(name):
    with pytest.raises(ValueError):
        quote_name(name, 15)


def test_the_driver_never_sends_a_line_feed_inside_a_message(emu372):
    from drivers.ls372 import Model372

    inst = Model372.tcp(*emu372.tcp.address)
    within(inst.connect)
    try:
        heard = len(emu372.ledger.heard)
        with pytest.raises(ValueError):
            inst.write('INNAME 2,"x"\nSETP 0 300')
        assert not list(emu372.ledger.heard)[heard:]
        assert emu372.device.outputs[0].setp == 0.0
    finally:
        inst.close()


def test_the_emulator_keeps_answering_after_a_malformed_line_on_tcp(emu372):
    with socket.create_connection(emu372.tcp.address, timeout=3) as s:
        f = s.makefile("rwb")
        f.write(b'INNAME 2,"\n*IDN?\n')
        f.flush()
        assert f.readline().startswith(b"LSCI,MODEL372"), "the session ended on a malformed line"
        f.write(b"*ESR?\n")
        f.flush()
        assert int(f.readline()) & 16  # the command-error (execution) bit, as the firmware sets it


def test_the_emulator_keeps_answering_after_a_malformed_line_on_the_240s_pty(emu240):
    inst = Model240.serial(emu240.pty.link)
    within(inst.connect)
    try:
        inst.transport.write(b'INNAME 1,"\n')
        assert within(lambda: inst.query("*IDN?")).startswith("LSCI,MODEL240")
        assert within(lambda: inst.query("INNAME? 1")).strip()
    finally:
        inst.close()
