"""Issue 26's red-team faults, each on the real path: the emulated instrument on TCP, the appliance
polling it, clients on real sockets through the share (tests/test_share.py has the clients' helpers).

Each test here failed on the share as first released: an outage's stale answer, a client's timeout
taken for the instrument's, a long refused line starving the others, an overlong line's tail run as a
line, another's ESR bits in a client's ``*ESR?``, the 336's CR, an IPv4-mapped client refused.
These wait out timeouts and outages, so they are in the slow tier."""

from __future__ import annotations

import socket
import time

import pytest

from appliance import config
from appliance.service import Appliance
from tests.conftest import wait_for
from tests.test_share import LineClient, check_against_ledger, port_of, share_config, sharing, sharing_336

pytestmark = pytest.mark.slow


def test_a_question_asked_around_an_outage_is_never_answered_after_it(tmp_path, emu372):
    """Lines queued while the link goes down, and lines sent while it is down, are dropped: after the
    outage the client's next question gets its own answer, never one of those."""
    emu372.device.channels["1"].name = "asked before"
    emu372.device.channels["3"].name = "asked during"
    emu372.device.channels["2"].name = "asked after"
    with sharing(tmp_path, emu372) as app:
        port, h = port_of(app), app.pollers[0].health
        c = LineClient(port, timeout=5)
        assert c.msg("INNAME? 2") == "asked after"
        # 1. queued while the link is up but the poller is held in an exchange that then fails
        heard = len(emu372.ledger.heard)
        emu372.control("slow 1.5 RDGR?")  # the poller's reading line (drivers/ls372.py) hangs past its timeout
        wait_for(lambda: any("RDGR?" in x for x in list(emu372.ledger.heard)[heard:]), 5, 0.005, "the poller held")
        connects = h.reconnects
        c.sock.sendall(b"INNAME? 1\r\n")  # its client gives up on it
        emu372.control("clear")
        wait_for(lambda: h.reconnects > connects and h.connected, 10, 0.02, "the link is back")
        assert c.msg("INNAME? 2") == "asked after"  # its own answer, not the stale one
        # 2. sent while the link is down
        emu372.control("mute on")
        wait_for(lambda: not h.connected, 5, 0.02, "the link is down")
        dropped = h.share.dropped
        c.sock.sendall(b"INNAME? 3\r\n")
        # dropped while the link is down (a fixed 0.3 s let a slow machine's share read it after the replug)
        wait_for(lambda: h.share.dropped == dropped + 1, 5, 0.01, "the line sent while down dropped")
        emu372.control("clear")
        wait_for(lambda: h.connected, 10, 0.02, "the link is back")
        assert c.msg("INNAME? 2") == "asked after"
        c.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.sock.recv(100)  # and nothing more comes
        assert h.share.dropped == 2, h.share
        c.close()


def test_a_line_that_could_not_begin_within_max_wait_is_dropped_not_answered_late(tmp_path, emu372):
    """B's question waits behind A's slow one longer than max_wait: B has given up by then, so it gets
    nothing (an answer now would be read as the answer to its next question); its next is its own."""
    emu372.device.channels["2"].name = "b's own"
    with sharing(tmp_path, emu372, share="max_wait = 0.3") as app:
        port, h = port_of(app), app.pollers[0].health
        a, b = LineClient(port), LineClient(port)
        emu372.control("slow 0.8 INNAME? 1")  # within the link's timeout (1 s): slow, not lost
        before = len(emu372.ledger.heard)  # the poller asked INNAME? 1 at connect: look only after this
        a.sock.sendall(b"INNAME? 1\r\n")
        wait_for(
            lambda: any("INNAME? 1" in x for x in list(emu372.ledger.heard)[before:]), 5, 0.005, "A's question sent"
        )
        heard = len(emu372.ledger.heard)
        b.sock.sendall(b"INNAME? 3\r\n")  # waits behind it for 0.8 s
        b.sock.settimeout(1.5)
        with pytest.raises(TimeoutError):
            b.sock.recv(100)
        emu372.control("clear")
        assert b.msg("INNAME? 2") == "b's own"
        assert a.sock.recv(100).endswith(b"\r\n")  # A's slow answer came, to A
        assert h.share.dropped == 1 and not any("INNAME? 3" in x for x in list(emu372.ledger.heard)[heard:])
        a.close(), b.close()


def test_a_long_line_of_refused_settings_does_not_starve_the_others(tmp_path, emu372):
    """Under ``read`` each refused setting is read back (one exchange each); a line of 40 of them, each
    read-back 30 ms, is served a step at a time between the other client's lines, and afterwards the
    share's cost estimate lets every client on at once (it once stayed above the time left for good)."""
    with sharing(tmp_path, emu372, share="max_wait = 10") as app:
        port, h = port_of(app), app.pollers[0].health
        a, b = LineClient(port), LineClient(port)
        emu372.control("slow 0.03 INNAME?")  # only the share's read-backs name it (the poller's at connect)
        since = len(emu372.ledger.heard)

        def share_readback(x: str) -> bool:
            return "INNAME? 1" in x and x.endswith(";*ESR?")

        a.sock.sendall(";".join(f'INNAME 1,"x{i}"' for i in range(40)).encode() + b"\r\n")
        wait_for(lambda: any(map(share_readback, list(emu372.ledger.heard)[since:])), 5, 0.01, "the long line begun")
        assert b.msg("*IDN?").startswith("LSCI,MODEL372")
        wait_for(lambda: h.share.settings_refused == 40, 20, 0.05, "the long line carried out")
        heard = list(emu372.ledger.heard)[since:]
        first_a = next(i for i, x in enumerate(heard) if share_readback(x))
        b_at = next(i for i, x in enumerate(heard) if i > first_a and "*IDN?" in x)
        assert any(map(share_readback, heard[b_at:])), "the other client waited for the whole long line"
        emu372.control("clear")
        for _ in range(5):  # both served again, each at once
            assert b.msg("SCAN?") and a.msg("INNAME? 2")
        assert a.msg("*ESR?") == "32" and b.msg("*ESR?") == "0"
        assert h.connected and not h.errors, h.errors
        assert check_against_ledger(emu372.ledger, a.got + b.got) >= 11
        a.close(), b.close()


def test_an_overlong_lines_tail_is_not_carried_out(tmp_path, emu372):
    with sharing(tmp_path, emu372) as app:
        c = LineClient(port_of(app))
        assert c.msg("*ESR?") == "0"  # the client's own register starts clear
        c.sock.sendall(b"X" * 5000)  # past the line limit, no end yet
        time.sleep(0.2)
        c.sock.sendall(b";SCAN?\r\n")  # the rest of that line
        assert c.msg("*IDN?").startswith("LSCI,MODEL372")  # the first answer is the next line's
        assert c.msg("*ESR?") == "32"  # the overlong line was one command error
        assert app.pollers[0].health.share.garbage == 1
        c.close()


def test_a_clients_esr_holds_only_the_bits_its_own_commands_caused(tmp_path, emu372):
    """The instrument's power-on bit, and a bit another program caused on the instrument, never show in a
    share client's *ESR?; the bit its own unknown command caused does."""
    with socket.create_connection(emu372.tcp.address, timeout=3) as direct:  # the 372's second connection
        with sharing(tmp_path, emu372) as app:
            c = LineClient(port_of(app))
            assert c.msg("SCAN?")  # the first exchange: the instrument's register still holds power-on (128)
            assert c.msg("*ESR?") == "0"
            direct.sendall(b"NOSUCH 1\n")  # another program's unknown command: the instrument's bit 32
            time.sleep(0.3)
            assert c.msg("INNAME? 1") and c.msg("*ESR?") == "0"
            assert c.msg("NOSUCH? 1;INNAME? 1")  # its own unknown query: silence for it, and the bit
            assert c.msg("*ESR?") == "32" and c.msg("*ESR?") == "0"
            direct.sendall(b"*ESR?\n")
            assert direct.recv(100) == b"0\r\n"  # the share left nothing in the instrument's register
            c.close()


def test_the_336_share_ends_a_line_at_cr_lf_or_cr_lf_and_answers_cr_lf(tmp_path):
    with sharing_336(tmp_path, seed=6) as (app, emu):
        with socket.create_connection(("127.0.0.1", port_of(app, "LS336A")), timeout=3) as c:
            f = c.makefile("rb")
            c.sendall(b"INNAME? A\rINNAME? B\r\nINNAME? C\n")  # CR alone, CR LF, LF: three lines
            got = [f.readline() for _ in range(3)]
            names = [emu.device.ins[ch].name.encode() for ch in "ABC"]
            assert got == [n + b"\r\n" for n in names], got
            c.sendall(b"*IDN?\r")
            assert f.readline().startswith(b"LSCI,MODEL336")  # nothing else came before it


def test_an_ipv4_client_of_a_dual_stack_share_is_matched_by_its_ipv4_entry(tmp_path, emu372):
    """Bound to "::", the share sees an IPv4 client as ::ffff:127.0.0.1; allow_clients = ["127.0.0.1"]
    lets it through."""
    share = 'policy = "allow"\nallow_commands = ["INNAME"]\nallow_clients = ["127.0.0.1"]'
    text = share_config(tmp_path, emu372, share=share).replace(
        'bind = "127.0.0.1"\nport = 0', 'bind = "::"\nport = 0', 1
    )
    app = Appliance(config.parse(text))
    app.start()
    try:
        assert app.pollers[0].connected_event.wait(10), app.pollers[0].health.last_error
        assert not app.share_errors, app.share_errors
        c = LineClient(port_of(app))
        c.msg('INNAME 4,"mapped"')
        assert c.msg("INNAME? 4") == "mapped" and c.msg("*ESR?") == "0"
        assert [s.address for s in app.shares[0].exchanger.sessions][0].startswith("::ffff:127.0.0.1:")
        assert app.pollers[0].health.share.settings == 1
        c.close()
    finally:
        app.stop()
