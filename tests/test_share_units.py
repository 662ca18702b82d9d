"""The share's pure parts: a line as the instrument parses it, the policy, each model's read-back query."""

from __future__ import annotations

import pytest

from appliance.config import ShareConfig
from appliance.share.dialect import LS240, LS372, dialect_for
from appliance.share.exchanger import Policy
from appliance.share.lines import parse_line, printable, same_value


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


class _Link:
    """The instrument end of the poller's link, as the exchanger uses it: every line it was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.observer = None

    def query_raw(self, message: str) -> bytes:
        self.sent.append(message)
        return b"LSCI,MODEL372,LSA23JD,1.3;0"


def test_a_line_that_waited_through_an_outage_is_dropped_not_answered_late():
    import socket
    import threading
    import time
    from types import SimpleNamespace

    from appliance.share.exchanger import Exchanger
    from appliance.share.session import ClientSession

    link = _Link()
    poller = SimpleNamespace(
        cfg=SimpleNamespace(name="LSA23JD", timeout=1.0),
        instrument=link,
        stop_event=threading.Event(),
        requests_waiting=lambda: False,
        serve_until=time.monotonic() + 60,
    )
    ex = Exchanger(poller, ShareConfig(enabled=True), LS372, audit=None, store=None)
    ours, theirs = socket.socketpair()
    s = ClientSession(ours, ("127.0.0.1", 5), 16, 60, lambda: None, lambda *a: None, ex.health)
    ex.add(s)
    s.lines.append(("*IDN?", time.monotonic() - 11))  # queued 11 s ago: the link was down since
    s.lines.append(("*IDN?", time.monotonic()))
    ex._turn(link)
    assert link.sent == ["*IDN?;*ESR?"]  # only the fresh one went to the instrument
    assert s.stats.dropped == 1 and ex.health.dropped == 1
    theirs.settimeout(1)
    assert theirs.recv(100) == b"LSCI,MODEL372,LSA23JD,1.3\r\n"
    ours.close(), theirs.close()
