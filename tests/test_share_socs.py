"""Issue 26 with socs' own code: its LS372 and its LS240 ``Module`` run their connection sequence and their
readings through the share, each answer checked against the emulator's ledger, while the appliance logs.

socs' LS372 speaks TCP as to the instrument's port 7777. socs' LS240 ``Module`` has two branches: serial
(the instrument's USB) and ``tcp://`` (for socs' own simulator: it sends its messages with no line end and
takes whatever one ``recv`` returns, so no line-protocol server can frame them, and its socket has no
timeout). The 240 has no network port, so the test reaches the share the way a lab would reach a remote
serial line: socs' serial branch opens a pty whose other end a byte pump joins to the share's TCP port
(what ser2net or socat do); the ``tcp://`` branch is shown not to frame. Real time, real sockets: slow tier.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import tty

import pytest
from socs.Lakeshore import Lakeshore240 as socs_240_module
from socs.Lakeshore import Lakeshore372 as socs_372_module

from tests.conftest import run_with_timeout, wait_for
from tests.test_share import (
    check_against_ledger,
    in_threads,
    port_of,
    qcodes_372,
    readings_delivered,
    sharing,
    vendor_372,
)

pytestmark = pytest.mark.slow


class Recording372(socs_372_module.LS372):
    """socs' LS372 unchanged; each (question, answer) its ``msg`` exchanged is kept for the ledger check."""

    def __init__(self, *args, **kwargs) -> None:
        self.got: list[tuple[str, str]] = []
        super().__init__(*args, **kwargs)

    def msg(self, message: str) -> str:
        answer = super().msg(message)
        if "?" in message:
            self.got.append((message, answer))
        return answer


class Recording240(socs_240_module.Module):
    """socs' LS240 Module unchanged, recording its exchanges as ``Recording372`` does."""

    def __init__(self, *args, **kwargs) -> None:
        self.got: list[tuple[str, str]] = []
        super().__init__(*args, **kwargs)

    def msg(self, msg: str) -> str:
        answer = super().msg(msg)
        if "?" in msg:
            self.got.append((msg, answer))
        return answer


def socs_372_agent(port: int, rounds: int) -> tuple[Recording372, list[tuple[str, str, float]]]:
    """socs' LS372 constructed against the share (its connection sequence: *IDN?, SCAN?, INSET?/INNAME?/INTYPE?/
    TLIMIT? of A and 1-16, OUTMODE?/HTRSET? of heaters 0 and 2), then socs' 372 agent's acquisition
    (socs/agents/lakeshore372/agent.py:275-343: get_temp kelvin and ohms of the active channel and of the
    control input, the sample heater's output) and the Channel readers for a few channels."""
    ls = Recording372("127.0.0.1", port=port, timeout=5)
    values: list[tuple[str, str, float]] = []
    try:
        for _ in range(rounds):
            active = ls.get_active_channel()
            ch = str(active.channel_num)
            values.append((ch, "kelvin", ls.get_temp(unit="kelvin", chan=active.channel_num)))
            values.append((ch, "sensor", ls.get_temp(unit="ohms", chan=active.channel_num)))
            values.append(("A", "kelvin", ls.get_temp(unit="kelvin", chan=0)))
            values.append(("A", "sensor", ls.get_temp(unit="ohms", chan=0)))
            values.append(("", "heater", ls.sample_heater.get_sample_heater_output()))
            for i in (1, 2, 3):
                ls.channels[i].get_kelvin_reading()  # RDGK?: the 370's spelling, which socs sends
                ls.channels[i].get_resistance_reading()
                ls.channels[i].get_sensor_reading()
    finally:
        if ls.comm is not None:
            ls.comm.close()
            ls.comm = None  # its __del__ closes it otherwise
    return ls, values


def check_socs_372(ledger, ls: Recording372, values: list[tuple[str, str, float]], rounds: int) -> None:
    questions = [q for q, _ in ls.got]
    # the connection sequence went through whole
    assert questions[:2] == ["*IDN?", "SCAN?"] and "HTRSET? 2" in questions, questions[:5]
    assert len(ls.channels) == 17 and ls.id.startswith("LSCI,MODEL372"), ls.id
    assert check_against_ledger(ledger, ls.got) == len(ls.got) >= 2 + 17 * 4 + 4 + rounds * (6 + 9)
    for ch, quantity, value in values:
        if quantity == "heater":
            continue  # HTR? is checked as text above
        assert value in readings_delivered(ledger, ch, quantity), f"socs: {value} never delivered for {ch}/{quantity}"


@contextlib.contextmanager
def serial_line_to(port: int):
    """A pty joined to a TCP port by a byte pump (a remote serial line, as ser2net gives); yields the pty's path.
    The pump stops when the block ends (bounded select, a stop flag)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    stop = threading.Event()

    def pump() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                ready, _, _ = select.select([master, sock], [], [], 0.1)
                if master in ready:
                    sock.sendall(os.read(master, 4096))
                if sock in ready:
                    data = sock.recv(4096)
                    if not data:
                        return
                    os.write(master, data)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        yield os.ttyname(slave)
    finally:
        stop.set()
        t.join(5)
        assert not t.is_alive(), "the pump did not stop"
        sock.close()
        os.close(master)
        os.close(slave)


# -- tests ---------------------------------------------------------------------------------------
def test_socs_ls372_connects_and_reads_through_the_share(tmp_path, emu372):
    rounds = 4
    with sharing(tmp_path, emu372) as app:
        stored_before = app.store.written
        ls, values = run_with_timeout(lambda: socs_372_agent(port_of(app), rounds), 60)
        check_socs_372(emu372.ledger, ls, values, rounds)
        share = app.pollers[0].health.share
        assert share.accepted == 1 and share.settings == 0 and share.settings_refused == 0
        wait_for(lambda: app.store.written > stored_before, 10, what="the appliance logging beside socs")


def test_socs_ls240_module_reads_through_the_share(tmp_path, emu240_8p):
    """socs' serial branch (its framing: '<msg>\\r\\n', readline, 10 ms between messages) over a serial line
    joined to the share: *IDN?, MODNAME?, INTYPE?/INNAME? of its 8 inputs, then each input's readings."""
    with sharing(tmp_path, emu240=emu240_8p) as app, serial_line_to(port_of(app, "LSA24AZ")) as line:

        def run():
            ls = Recording240(port=line, baud=115200, timeout=5)
            try:
                got = [(str(c.channel_num), u, c.get_reading(u)) for _ in range(3) for c in ls.channels for u in "KS"]
            finally:
                ls.com.close()
            return ls, got

        ls, got = run_with_timeout(run, 60)
        assert len(ls.channels) == 8 and ls.inst_sn == "LSA24BB", (ls.model, ls.inst_sn)
        assert check_against_ledger(emu240_8p.ledger, ls.got) == len(ls.got) == 2 + 8 * 2 + 3 * 8 * 2
        for ch, unit, value in got:
            quantity = "kelvin" if unit == "K" else "sensor"
            assert value in readings_delivered(emu240_8p.ledger, ch, quantity), (ch, unit, value)
        share = app.pollers[0].health.share
        assert share.accepted == 1 and share.settings == 0


def test_socs_ls240_tcp_branch_sends_no_line_end_so_it_cannot_be_framed(tmp_path, emu240_8p):
    """socs' ``tcp://`` branch is its simulator's protocol, not the instrument's: '*IDN?' with no line end. The
    share, as the instrument would, waits for the end of the line; nothing is answered, nothing reaches the 240."""
    with sharing(tmp_path, emu240=emu240_8p) as app:
        port = port_of(app, "LSA24AZ")
        heard = len(emu240_8p.ledger.heard)
        socket.setdefaulttimeout(1.0)  # socs' simulator socket has none: bound its recv
        try:
            # socs tries *IDN? three times, each recv times out (TimeoutError, which it catches), then splits an
            # answer it never got
            with pytest.raises(UnboundLocalError, match="idn"):
                run_with_timeout(lambda: socs_240_module.Module(port=f"tcp://127.0.0.1:{port}"), 10)
        finally:
            socket.setdefaulttimeout(None)
        assert app.pollers[0].health.share.commands == 0
        assert not [h for h in list(emu240_8p.ledger.heard)[heard:] if h.startswith("*IDN")]


def test_socs_vendor_and_qcodes_at_once_while_the_appliance_logs(tmp_path, emu372):
    rounds = 4
    with sharing(tmp_path, emu372) as app:
        port, h = port_of(app), app.pollers[0].health
        stored_before, cycles_before = app.store.written, h.cycles
        got = in_threads(
            socs=lambda: socs_372_agent(port, rounds),
            vendor=lambda: vendor_372(port, 10),
            qcodes=lambda: qcodes_372(port, 8, "ls372_socs_three"),
        )
        led = emu372.ledger
        check_socs_372(led, *got["socs"], rounds)
        for who in ("vendor", "qcodes"):
            for i, (ch, value) in enumerate(got[who]):
                q = "sensor" if who == "qcodes" and i % 2 else "kelvin"
                assert value in readings_delivered(led, ch, q), f"{who}: {value} never delivered for {ch}/{q}"
        wait_for(lambda: h.cycles > cycles_before + 3, 15, what="the poller cycling beside the clients")
        wait_for(lambda: app.store.written > stored_before, 10, what="the store growing")
        assert h.share.accepted == 3 and h.share.settings == 0 and h.share.settings_refused == 0
