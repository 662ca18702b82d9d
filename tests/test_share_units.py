"""The share's pure parts: a line as the instrument parses it, the policy, each model's read-back query."""

from __future__ import annotations

import pytest

from appliance.config import ShareConfig
from appliance.share.dialect import LS240, LS372, dialect_for
from appliance.share.exchanger import Policy
from appliance.share.job import steps_of
from appliance.share.lines import MAX_LINE, Framer, parse_line, printable, same_value


def test_a_line_splits_as_the_instrument_reads_it():
    parts = parse_line('KRDG? 05;:rdgr? 5;;INNAME 3,"a b";*ESR?')
    assert [p.mnemonic for p in parts] == ["KRDG?", "RDGR?", "INNAME", "*ESR?"]
    assert parts[0].key() == parts[0].key() == "KRDG? 5" and parse_line("krdg? 5")[0].key() == "KRDG? 5"
    assert parts[2].args == ("3", "a b") and not parts[2].is_query and parts[3].is_query
    assert parts[1].text == ":rdgr? 5"  # forwarded as the client wrote it


def test_garbage_is_told_from_a_line():
    assert printable(b"SCAN?") == "SCAN?"
    assert printable(b"\xff\x00x") is None and printable(b"SCAN?\x1b") is None


@pytest.mark.parametrize(
    "reply, args, same",
    [("05,0", ("5", "0"), True), ("05,1", ("5", "0"), False), ("0", ("0",), True), ("+1.500E+00", ("1.5",), True)],
)
def test_a_setting_that_reads_back_as_asked_is_no_change(reply, args, same):
    assert same_value(reply, args) is same


def test_policies():
    read = Policy(ShareConfig())
    assert not read.allows("SCAN", "127.0.0.1")
    allow = Policy(
        ShareConfig(enabled=True, policy="allow", allow_commands=["scan"], allow_clients=["10.0.1.0/24", "::1"])
    )
    assert allow.allows("SCAN", "10.0.1.7") and allow.allows("SCAN", "::1")
    assert not allow.allows("SCAN", "10.0.2.7") and not allow.allows("SETP", "10.0.1.7")
    assert not allow.allows("SCAN", "not an address")
    assert Policy(ShareConfig(policy="full")).allows("*RST", "192.0.2.1")


def test_each_model_reads_its_settings_back():
    assert LS372.readback_query("SCAN", ["5", "0"]) == "SCAN?"
    assert LS372.readback_query("INSET", ["5", "1", "3", "3", "0", "1"]) == "INSET? 5"
    assert LS372.readback_query("CRVPT", ["21", "3", "1", "2"]) == "CRVPT? 21,3"
    assert LS372.readback_query("NOSUCH", ["1"]) is None and LS240.readback_query("INTYPE", []) is None
    assert LS372.has_esr and not LS240.has_esr and dialect_for("372") is LS372 and "SCAN" in LS372.replan


def test_an_overlong_line_is_dropped_to_its_end_and_its_tail_is_no_line():
    f = Framer()
    assert f.feed(b"X" * (MAX_LINE + 10)) == [None]  # garbage, once
    assert f.feed(b"Y" * 100) == []  # still that line
    assert f.feed(b";SCAN 5,0\r\n*IDN?\r\n") == [b"*IDN?"]  # its tail is not executed; the next line is
    # an overlong line that comes whole is one piece of garbage too
    assert Framer().feed(b"Z" * (MAX_LINE + 1) + b"\nKRDG? A\n") == [None, b"KRDG? A"]


@pytest.mark.parametrize(
    "cr_ends, data, lines",
    [
        (False, b"KRDG? 1\nKRDG? 2\r\n", [b"KRDG? 1", b"KRDG? 2"]),
        (False, b"KRDG? 1\rKRDG? 2\n", [b"KRDG? 1\rKRDG? 2"]),  # the 372 ends a line at LF only
        (True, b"KRDG? A\rKRDG? B\r\nKRDG? C\n", [b"KRDG? A", b"KRDG? B", b"KRDG? C"]),  # the 336: CR, CR LF, LF
    ],
)
def test_a_line_ends_where_the_instrument_ends_it(cr_ends, data, lines):
    assert Framer(cr_ends).feed(data) == lines
    assert dialect_for("336").cr_ends_line and dialect_for("350").cr_ends_line and not LS372.cr_ends_line


def test_an_ipv4_mapped_client_matches_an_ipv4_entry():
    p = Policy(
        ShareConfig(enabled=True, policy="allow", allow_commands=["SCAN"], allow_clients=["10.0.0.5", "fd00::/8"])
    )
    assert p.allows("SCAN", "::ffff:10.0.0.5") and p.allows("SCAN", "10.0.0.5") and p.allows("SCAN", "fd00::1")
    assert not p.allows("SCAN", "::ffff:10.0.0.6") and not p.allows("SCAN", "::1")


def test_a_line_is_cut_into_steps_in_order():
    kinds = [(st.kind, [p.text for p in st.parts]) for st in steps_of("KRDG? 1;SRDG? 1;SCAN 5,0;*ESR?;RDGR? 2", True)]
    assert kinds == [
        ("query", ["KRDG? 1", "SRDG? 1"]),
        ("setting", ["SCAN 5,0"]),
        ("esr", ["*ESR?"]),
        ("query", ["RDGR? 2"]),
    ]
    assert [st.kind for st in steps_of(";".join(["SCAN 5,0"] * 200), True)] == ["setting"] * 200


@pytest.mark.parametrize(
    "segments, lines",
    [
        ([b"INNAME? 1\r\r\n"], [b"INNAME? 1"]),  # a stray CR before the end: whitespace
        ([b"INNAME? 1\r", b"\r\n"], [b"INNAME? 1"]),
        ([b"INNAME? 1\n\r*ESR?\r\n"], [b"INNAME? 1", b"*ESR?"]),  # LF CR endings: the CR is at the next line's start
        ([b"\r\rKRDG? A\r\n"], [b"KRDG? A"]),
    ],
)
def test_a_cr_that_does_not_end_a_372_line_is_whitespace(segments, lines):
    """Issue 26 (F4): the emulated 372 (firmware_host/wire.py) answers these; the share took them for garbage."""
    f = Framer()
    got = [line for seg in segments for line in f.feed(seg)]
    assert got == lines
    assert all(printable(x) is not None for x in got if x is not None)


def test_a_line_of_max_length_whose_cr_comes_alone_is_still_a_line():
    """Issue 26 (F4): the CR in a segment of its own does not count toward the line's length."""
    line = b"INNAME? 1;" + b" " * (MAX_LINE - 10)
    f = Framer()
    assert f.feed(line) == [] and f.feed(b"\r") == [] and f.feed(b"\n") == [line]
    assert Framer().feed(line + b"\r\n") == [line]  # as when it comes whole
    assert Framer().feed(line + b"X\r") == [None]  # one byte more is overlong, CR or not
    assert Framer().feed(b"\r" * (2 * MAX_LINE + 1)) == [None]  # CRs without end still fill the buffer


def test_an_ipv4_mapped_network_entry_matches_ipv4_clients():
    """Issue 26 (F6): ``::ffff:10.0.0.0/104`` is 10.0.0.0/8 written as IPv6: clients in it match."""
    p = Policy(
        ShareConfig(
            enabled=True,
            policy="allow",
            allow_commands=["SCAN"],
            allow_clients=["::ffff:10.0.0.0/104", "::ffff:192.0.2.7"],
        )
    )
    assert p.allows("SCAN", "10.1.2.3") and p.allows("SCAN", "::ffff:10.1.2.3") and p.allows("SCAN", "192.0.2.7")
    assert not p.allows("SCAN", "11.0.0.1") and not p.allows("SCAN", "192.0.2.8") and not p.allows("SCAN", "::1")
