"""Issue 26: the instrument's own protocol served on a port of the Pi, every exchange through the poller.

Clients are code we did not write (Lake Shore's ``lakeshore``, QCoDeS over pyvisa-py) and socs'
exact byte exchanges, written out here with the socs file and line they come from (simonsobs/socs
at 24a4adeb); socs' own LS372 and LS240 code runs through the share in tests/test_share_socs.py. Every answer a client gets is checked against the
emulator's ledger: the reply the emulator gave to that question. The appliance logs all along.
Real time, real sockets on 127.0.0.1: these tests wait seconds, so they are in the slow tier.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter

import pytest

from appliance import config
from appliance.service import Appliance
from appliance.share.lines import parse_line
from tests.conftest import run_with_timeout, wait_for
from tests.support.reconcile import ShareClientsLeftOut, reconcile

pytestmark = pytest.mark.slow

NODE = "LSA23JD"

# socs/Lakeshore/Lakeshore372.py:186-209 (LS372.__init__: *IDN?, SCAN?, Channel(A, 1-16), Heater(0), Heater(2)),
# :360-366 (Channel.__init__: INSET?, INNAME?, INTYPE?, TLIMIT?); the same 74 queries tests/test_fidelity.py sends
SOCS_372_CONNECT = (
    ["*IDN?", "SCAN?"]
    + [
        q % c
        for c in ["A"] + [str(i) for i in range(1, 17)]
        for q in ("INSET? %s", "INNAME? %s", "INTYPE? %s", "TLIMIT? %s")
    ]
    + ["OUTMODE? 0", "HTRSET? 0", "OUTMODE? 2", "HTRSET? 2"]
)


def share_config(tmp_path, emu372=None, emu240=None, share: str = "", interval: float = 0.2, extra: str = "") -> str:
    parts = []
    if emu372 is not None:
        host, port = emu372.tcp.address
        parts.append(
            f'[[instrument]]\nmodel = "372"\nname = "{NODE}"\ntransport = "tcp"\nhost = "{host}"\nport = {port}\n'
            f"timeout = 1.0\ninterval = {interval}\nread_heater = true\n"
            f'[instrument.share]\nenabled = true\nbind = "127.0.0.1"\nport = 0\n{share}\n'
        )
    if emu240 is not None:
        parts.append(
            f'[[instrument]]\nmodel = "240"\nname = "LSA24AZ"\ntransport = "serial"\ndevice = "{emu240.pty.link}"\n'
            f"timeout = 1.0\ninterval = {interval}\n"
            f'[instrument.share]\nenabled = true\nbind = "127.0.0.1"\nport = 0\n{share}\n'
        )
    parts.append("[polling]\nbackoff_initial = 0.2\nbackoff_max = 1.0\n")
    parts.append(f'[store]\npath = "{tmp_path / "kelvinpi.db"}"\ncommit_interval = 0.2\n')
    parts.append('[web]\nbind = "127.0.0.1"\nport = 0\n')
    return "\n".join(parts) + extra


@contextlib.contextmanager
def sharing(tmp_path, emu372=None, emu240=None, share: str = "", interval: float = 0.2, extra: str = ""):
    app = Appliance(config.parse(share_config(tmp_path, emu372, emu240, share, interval, extra)))
    app.start()
    try:
        for p in app.pollers:
            assert p.connected_event.wait(10), p.health.last_error
        app.base_url = f"http://127.0.0.1:{app.web_address[1]}"
        yield app
    finally:
        app.stop()


@contextlib.contextmanager
def sharing_336(tmp_path, seed: int):
    """An emulated 336 on TCP (LS336A) behind a started appliance sharing it in `read`; yields (app, emu)."""
    from firmware_host.emulator import Emulator

    emu = Emulator.ls336(seed=seed)
    emu.listen_tcp("127.0.0.1", 0)
    host, eport = emu.tcp.address
    text = share_config(tmp_path).replace(
        "[polling]",
        f'[[instrument]]\nmodel = "336"\nname = "LS336A"\ntransport = "tcp"\nhost = "{host}"\nport = {eport}\n'
        'timeout = 1.0\ninterval = 0.2\n[instrument.share]\nenabled = true\nbind = "127.0.0.1"\nport = 0\n\n[polling]',
    )
    app = Appliance(config.parse(text))
    app.start()
    try:
        assert app.pollers[0].connected_event.wait(10), app.pollers[0].health.last_error
        yield app, emu
    finally:
        app.stop()
        emu.stop()


def port_of(app, node: str = NODE) -> int:
    return next(s.address[1] for s in app.shares if s.name == node)


class LineClient:
    """socs' way of talking (LS372.msg, socs/Lakeshore/Lakeshore372.py:211-232): '<message>\\r\\n', and a
    read of one reply only when the message holds '?'. Every (question, answer) is kept for the ledger check."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.got: list[tuple[str, str]] = []

    def msg(self, message: str) -> str:
        self.sock.sendall(f"{message}\r\n".encode())
        if "?" not in message:
            return ""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, f"the share closed the connection before answering {message!r}"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        answer = line.decode()
        self.got.append((message, answer))
        return answer

    def close(self) -> None:
        self.sock.close()


def ledger_answers(ledger) -> dict[str, Counter]:
    """question (a part, as the cache keys it) -> the answers the emulator gave it, with counts."""
    out: dict[str, Counter] = {}
    for line, reply in list(ledger.exchanges):
        parts, answers = parse_line(line), reply.split(";")
        if len(parts) != len(answers):
            continue  # a refused part: the reply cannot be lined up
        for p, a in zip(parts, answers, strict=True):
            out.setdefault(p.key(), Counter())[a] += 1
    return out


def check_against_ledger(ledger, got: list[tuple[str, str]]) -> int:
    """Every answer a line client got is one the emulator gave to that very question; returns how many."""
    given = ledger_answers(ledger)
    n = 0
    for question, answer in got:
        # a setting has no answer: the answers line up with the queries
        parts, answers = [p for p in parse_line(question) if p.is_query], answer.split(";")
        assert len(parts) == len(answers), (question, answer)
        for p, a in zip(parts, answers, strict=True):
            if p.mnemonic == "*ESR?":
                continue  # the share's per-client register (checked on its own below)
            assert a in given.get(p.key(), ()), f"{question!r} got {a!r}: the emulator never answered it so"
            n += 1
    return n


def readings_delivered(ledger, channel: str, quantity: str) -> set[float]:
    return set(ledger.snapshot().get((channel, quantity), []))


# -- the clients -------------------------------------------------------------------------------
def socs_372(port: int, rounds: int) -> LineClient:
    """socs' LS372: the connection sequence, then its acquisition loop (socs/agents/lakeshore372/agent.py
    reads the active channel: LS372.get_temp, Lakeshore372.py:250-269, SCAN? then KRDG?/SRDG?; the
    still heater HTR?, Lakeshore372.py:1635)."""
    c = LineClient(port)
    for q in SOCS_372_CONNECT:
        c.msg(q)
    for _ in range(rounds):
        ch = c.msg("SCAN?").split(",")[0]
        float(c.msg(f"KRDG? {ch}"))
        float(c.msg(f"SRDG? {ch}"))
        float(c.msg("HTR?"))
        float(c.msg("KRDG? A"))
    return c


def vendor_372(port: int, rounds: int) -> list[tuple[str, float]]:
    """Lake Shore's Model372 over TCP to the share's port (tcp_port: its default is the 372's 7777)."""
    import lakeshore

    ls = run_with_timeout(lambda: lakeshore.Model372(baud_rate=None, ip_address="127.0.0.1", tcp_port=port, timeout=5))
    got = []
    try:
        for _ in range(rounds):
            ch = str(run_with_timeout(ls.get_scanner_status)["input_channel"])
            got.append((ch, run_with_timeout(lambda ch=ch: ls.get_kelvin_reading(ch))))
            got.append(("A", run_with_timeout(lambda: ls.get_kelvin_reading("A"))))
    finally:
        ls.disconnect_tcp()
    return got


def qcodes_372(port: int, rounds: int, name: str) -> list[tuple[str, float]]:
    """QCoDeS' LakeshoreModel372 through pyvisa-py's TCPIP SOCKET resource (its own terminators)."""
    from qcodes.instrument_drivers.Lakeshore import LakeshoreModel372

    ls = LakeshoreModel372(name, f"TCPIP::127.0.0.1::{port}::SOCKET", visalib="@py")
    got = []
    try:
        for _ in range(rounds):
            got.append(("1", ls.ch01.temperature()))
            got.append(("1", ls.ch01.sensor_raw()))
            ls.ch01.sensor_status()
    finally:
        ls.close()
    return got


def in_threads(**jobs) -> dict:
    """Run the clients at once; each one's result (or the error it raised)."""
    out: dict = {}

    def run(name, fn):
        try:
            out[name] = fn()
        except BaseException as exc:  # re-raised by the test
            out[name] = exc

    threads = [threading.Thread(target=run, args=(k, f), daemon=True) for k, f in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k, v in out.items():
        if isinstance(v, BaseException):
            raise AssertionError(f"client {k} failed: {v!r}") from v
    assert len(out) == len(jobs), "a client did not finish"
    return out


# -- tests ---------------------------------------------------------------------------------------
def test_three_drivers_at_once_each_answer_is_the_one_its_question_got(tmp_path, emu372):
    with sharing(tmp_path, emu372) as app:
        port = port_of(app)
        stored_before, cycles_before = app.store.written, app.pollers[0].health.cycles
        got = in_threads(
            socs=lambda: socs_372(port, 15),
            vendor=lambda: vendor_372(port, 15),
            qcodes=lambda: qcodes_372(port, 10, "ls372_three"),
        )
        led = emu372.ledger
        assert check_against_ledger(led, got["socs"].got) > 74 + 15 * 4 - 1
        got["socs"].close()
        for who in ("vendor", "qcodes"):
            for i, (ch, value) in enumerate(got[who]):
                q = "sensor" if who == "qcodes" and i % 2 else "kelvin"
                assert value in readings_delivered(led, ch, q), f"{who}: {value} never delivered for {ch}/{q}"
        h = app.pollers[0].health
        # logging goes on: on a loaded machine three clients may finish within a cycle or two, so the cycles are
        # awaited rather than counted at once (the red team's open finding on starving cycles: docs/share.md)
        wait_for(lambda: h.cycles > cycles_before + 3, 15, what="the poller cycling beside the clients")
        assert app.store.written > stored_before, "the appliance stopped logging"
        share = h.share
        assert share.accepted == 3 and share.commands >= 74 + 15 * 4 + 15 * 2
        assert share.settings == 0 and share.settings_refused == 0  # lakeshore's EMUL 0 changed nothing: it passed
        assert share.cached > 0  # some were answered from the poller's reading of that cycle


def test_two_at_once_socs_and_the_vendor_package(tmp_path, emu372):
    with sharing(tmp_path, emu372) as app:
        port = port_of(app)
        got = in_threads(socs=lambda: socs_372(port, 10), vendor=lambda: vendor_372(port, 10))
        assert check_against_ledger(emu372.ledger, got["socs"].got) >= 74 + 40
        for ch, value in got["vendor"]:
            assert value in readings_delivered(emu372.ledger, ch, "kelvin")


def test_read_refuses_a_setting_as_the_instrument_refuses_an_unknown_command(tmp_path, emu372):
    with socket.create_connection(emu372.tcp.address, timeout=3) as direct:  # the instrument itself
        c = LineClient.__new__(LineClient)
        c.sock, c.buf, c.got = direct, b"", []
        c.msg("*ESR?")  # clear the power-on bit
        assert c.msg("NOSUCH 5,0;*ESR?") == "32"  # an unknown command: silence, and the command-error bit
    with sharing(tmp_path, emu372) as app:
        c = LineClient(port_of(app))
        before = c.msg("SCAN?")
        assert c.msg("SCAN 5,0;*ESR?") == "32"  # the same answer
        assert c.msg("*ESR?") == "0"  # read and cleared, as the register is
        c.msg("SCAN 6,0")  # socs sends settings bare: silence
        assert c.msg("SCAN?") == before and c.msg("*ESR?") == "32"
        assert not [h for h in emu372.ledger.heard if h.upper().startswith("SCAN ")], "a refused setting was sent"
        # the vendor's driver raises its clear error on the bit
        import lakeshore

        ls = run_with_timeout(lambda: lakeshore.Model372(baud_rate=None, ip_address="127.0.0.1", tcp_port=port_of(app)))
        with pytest.raises(lakeshore.InstrumentException, match="Command Error"):
            run_with_timeout(lambda: ls.set_scanner_status(5, False))
        ls.disconnect_tcp()
        # another client's register is its own: its *ESR? knows nothing of the first one's error
        other = LineClient(port_of(app))
        assert other.msg("*ESR?") == "0"
        assert app.pollers[0].health.share.settings_refused == 3
        c.close(), other.close()


def test_a_client_switching_the_scanner_keeps_the_log_whole(tmp_path, emu372):
    """produced = stored = served (HTTP) with lost = 0, while a client (policy full) moves the scanner every
    1.5 s the way socs does (LS372.set_active_channel, Lakeshore372.py:328-339: SCAN? then SCAN <ch>,<auto>)
    and another reads through the share."""
    emu372.device.channels["2"].pause = 3  # short pauses: readings come back within the test
    with sharing(tmp_path, emu372, share='policy = "full"') as app:
        port = port_of(app)
        mover, reader = LineClient(port), LineClient(port)
        stop = threading.Event()
        reads: list[tuple[str, str]] = []

        def read_loop():
            while not stop.is_set():
                ch = reader.msg("SCAN?").split(",")[0]
                reads.append((ch, reader.msg(f"KRDG? {ch}")))
                time.sleep(0.05)

        t = threading.Thread(target=read_loop, daemon=True)
        t.start()
        for ch in (1, 2, 1, 2):
            auto = mover.msg("SCAN?").split(",")[1]
            mover.msg(f"SCAN {ch},{auto}")
            assert mover.msg("SCAN?").startswith(f"{ch:02d},")
            time.sleep(1.5)
        stop.set()
        t.join(5)
        time.sleep(0.6)  # the last cycle's readings committed
        events = app.store.events(limit=500)
        share_events = [e for e in events if e["kind"] == "share"]
        assert len([e for e in share_events if "replanned" in e["detail"]]) == 4
        audit = [e["detail"] for e in events if e["kind"] == "control" and "share client" in e["detail"]]
        assert sum("applied" in d and "was " in d and "now " in d for d in audit) == 4, audit
        assert app.pollers[0].health.share.displaced > 0
        assert any("displaced" in e["detail"] for e in share_events)
        # the readings the clients got are not the log's: leave them out of what the instrument produced
        for ch, value in reads:
            assert float(value) in readings_delivered(emu372.ledger, ch.lstrip("0"), "kelvin")
        app.stop()  # everything the pollers took is written
        tally = reconcile(app.store.path, {NODE: ShareClientsLeftOut(emu372.ledger)})
        assert tally.produced > 0 and tally.lost == 0 and tally.foreign == 0, tally.line()
        assert tally.stored == tally.produced, tally.line()
        mover.close(), reader.close()


def test_bounds_refused_idle_flood_garbage_and_a_client_killed_mid_answer(tmp_path, emu372):
    share = "max_clients = 3\nidle_timeout = 1.0\nmax_queued = 4"
    with sharing(tmp_path, emu372, share=share) as app:
        port, h = port_of(app), app.pollers[0].health
        good = LineClient(port)
        # killed mid-answer: its question is slow on the instrument, it resets the connection before the reply
        emu372.control("slow 0.3 INNAME?")
        killed = socket.create_connection(("127.0.0.1", port))
        killed.sendall(b"INNAME? 3\r\n")
        time.sleep(0.05)
        killed.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        killed.close()
        assert good.msg("KRDG? A")  # the next client is answered, its own answer
        emu372.control("clear")
        # one that floods: far more lines than max_queued, without reading; they are dropped and counted
        flood = socket.create_connection(("127.0.0.1", port))
        flood.sendall(b"*IDN?\r\n" * 500)
        # garbage: bytes that are no command, and a line with no end
        good.sock.sendall(b"\xff\x00\x1b[A\r\n")
        assert good.msg("*ESR?") == "32"
        t0 = time.monotonic()
        for _ in range(10):
            assert good.msg("SCAN?")
        assert (time.monotonic() - t0) / 10 < 0.5, "the flood slowed the others"
        wait_for(lambda: h.share.dropped >= 400, 5, 0.05, "flooded lines dropped")
        # max_clients: good + flood + one more; the next is refused
        third = LineClient(port)
        refused = socket.create_connection(("127.0.0.1", port))
        refused.settimeout(2)
        with pytest.raises((ConnectionResetError, ConnectionAbortedError, BrokenPipeError, OSError)):
            refused.sendall(b"*IDN?\r\n")
            assert refused.recv(100) == b""
            raise ConnectionResetError("closed")
        wait_for(lambda: h.share.refused >= 1, 3, 0.05, "the fourth client refused")
        # idle timeout: third and flood say nothing for 1 s and are cut off; good keeps talking
        for _ in range(15):
            good.msg("*IDN?")
            time.sleep(0.1)
        wait_for(lambda: h.share.cut_off >= 2, 3, 0.05, "idle clients cut off")
        assert third.sock.recv(10) == b""
        assert h.share.garbage >= 1 and h.connected and not h.errors, (h.share, h.errors)
        assert check_against_ledger(emu372.ledger, good.got) >= 10
        good.close(), flood.close(), third.close()


def test_a_client_that_never_reads_is_cut_off(tmp_path, emu372):
    with sharing(tmp_path, emu372, share="max_queued = 64") as app:
        port, h = port_of(app), app.pollers[0].health
        lazy = socket.socket()
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.connect(("127.0.0.1", port))
        line = ";".join(["*IDN?"] * 100).encode() + b"\r\n"  # about 2.7 kB of answer per line
        lazy.settimeout(0.2)
        good = LineClient(port)
        with contextlib.suppress(OSError):  # the share resets it once cut off
            for _ in range(400):
                lazy.sendall(line)
                time.sleep(0.005)
                if h.share.cut_off:
                    break
        wait_for(lambda: h.share.cut_off >= 1, 5, 0.1, "the client that never reads cut off")
        assert good.msg("KRDG? A") and h.connected
        lazy.close(), good.close()


def test_the_240_through_the_share_vendor_and_socs(tmp_path, emu240_8p):
    """The 240 has no network port: through the share it has. Lake Shore's Model240 takes a duck-typed
    connection (write/query/clear): pyvisa-py's TCPIP SOCKET resource to the share is one. socs' Module
    (socs/Lakeshore/Lakeshore240.py:26-73: *IDN?, MODNAME?, then Channel: INTYPE?, INNAME?, :155-170;
    readings :359-377 '<unit>RDG? <n>'), written out over TCP with its serial framing (msg, :82-113)."""
    import lakeshore
    import pyvisa

    with sharing(tmp_path, emu240=emu240_8p) as app:
        port = port_of(app, "LSA24AZ")
        rm = pyvisa.ResourceManager("@py")
        res = rm.open_resource(f"TCPIP::127.0.0.1::{port}::SOCKET", read_termination="\r\n", write_termination="\n")
        res.timeout = 5000

        def vendor():
            ls = lakeshore.Model240(connection=res)
            return [(str(n), ls.get_kelvin_reading(n)) for n in (1, 2) for _ in range(5)]

        def socs():
            c = LineClient(port)
            model = c.msg("*IDN?").split(",")[1]
            c.msg("MODNAME?")
            for i in range(1, int(model[-2]) + 1):
                c.msg(f"INTYPE? {i}"), c.msg(f"INNAME? {i}")
            for _ in range(5):
                float(c.msg("KRDG? 1")), float(c.msg("SRDG? 2"))
            return c

        got = in_threads(vendor=vendor, socs=socs)
        for ch, value in got["vendor"]:
            assert value in readings_delivered(emu240_8p.ledger, ch, "kelvin")
        assert check_against_ledger(emu240_8p.ledger, got["socs"].got) >= 2 + 16 + 10
        res.close(), rm.close(), got["socs"].close()


def test_a_late_answer_reaches_neither_another_client_nor_the_poller(tmp_path, emu372):
    """A client's question the instrument answers after the link's timeout: that client gets silence, the
    link is reset (a new connection), the late reply lands on the closed one; the next client's answer
    is its own and the poller's readings stay right. The instrument answers everything else, so it is
    the client's timeout, not the instrument's: the poller does not reconnect."""
    emu372.device.channels["4"].name = "quick one"
    with sharing(tmp_path, emu372) as app:
        port, h = port_of(app), app.pollers[0].health
        connects = h.reconnects
        late, other = LineClient(port, timeout=3), LineClient(port)
        emu372.control("slow 1.5 QRDG?")  # a query the poller never sends
        before = len(emu372.ledger.heard)
        late.sock.sendall(b"QRDG? 3\r\n")
        # the late question is at the instrument (wrapped in *ESR? by the share) before the other client asks
        wait_for(
            lambda: any("QRDG? 3" in x for x in list(emu372.ledger.heard)[before:]), 5, 0.005, "the late question sent"
        )
        assert other.msg("INNAME? 4") == "quick one"  # waited behind the late one, then its own answer
        emu372.control("clear")
        assert other.msg("INNAME? 4;INNAME? 4") == "quick one;quick one"
        late.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            late.sock.recv(100)  # silence, as from the instrument: never another's answer
        # the client's question timed out, not the instrument: the link was reset and polling went on, with
        # no disconnection, no reconnect and no timeout counted against the instrument (issue 26, item 4)
        assert h.errors["timeout"] == 0 and h.connected and h.reconnects == connects, (h.errors, h.reconnects)
        assert h.share.timeouts == 1
        cycles = h.cycles
        wait_for(lambda: h.cycles > cycles + 3, 5, 0.05, "the poller cycles on")
        assert not h.errors.get("bad_reply"), h.errors
        assert check_against_ledger(emu372.ledger, other.got) == 3
        late.close(), other.close()


def test_allow_lets_listed_settings_through_from_listed_addresses_and_metrics_show_it(tmp_path, emu372):
    import urllib.request

    share = 'policy = "allow"\nallow_commands = ["SCAN"]\nallow_clients = ["127.0.0.0/8"]'
    with sharing(tmp_path, emu372, share=share) as app:
        c = LineClient(port_of(app))
        assert c.msg("SCAN 3,0;*ESR?") == "0" and c.msg("SCAN?") == "03,0"  # listed: carried out, read back
        assert c.msg("SETP 0,0.02;*ESR?") == "32"  # not listed: refused as an unknown command
        assert emu372.device.outputs[0].setp != 0.02
        events = [e["detail"] for e in app.store.events(limit=100) if e["kind"] == "control"]
        me = "share client {}:{}".format(*c.sock.getsockname())
        assert any(f"requested by {me}: SCAN 3,0" in d and "(was 01," in d for d in events), events
        assert any("applied: SCAN 3,0" in d and "now 03,0" in d and me in d for d in events), events
        with urllib.request.urlopen(app.base_url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'kelvinpi_share_settings_total{node="LSA23JD"} 1.0' in text
        assert 'kelvinpi_share_settings_refused_total{node="LSA23JD"} 1.0' in text
        assert 'kelvinpi_share_clients{node="LSA23JD"} 1.0' in text
        c.close()


def test_a_reading_of_this_cycle_answers_until_a_change_through_the_api(tmp_path, emu372):
    """SCAN? the poller asked this cycle is answered from its reply; a scanner change through the control
    API between two cycles makes that answer stale, and the next client asking gets the instrument's."""
    from tests.test_security import TOKEN, secret_file
    from tests.test_settings import put

    tok = secret_file(tmp_path / "token", TOKEN)
    control = f'\n[control]\nenabled = true\ntoken_file = "{tok}"\n'
    with sharing(tmp_path, emu372, interval=3.0, extra=control) as app:
        h = app.pollers[0].health
        c = LineClient(port_of(app))
        assert c.msg("SCAN?") == "01,1" and h.share.cached == 1  # the poller asked it this cycle
        assert put(app, NODE, "scanner", None, {"channel": 4, "autoscan": 0})[0] == 200
        assert h.cycles == 1, "the test needs the change between two cycles"
        assert c.msg("SCAN?") == "04,0" and h.share.cached == 1  # from the instrument, not the old reading
        c.close()


def test_the_336_through_the_share_vendor_package_and_line_client(tmp_path):
    """Lake Shore's Model336 over TCP to the share of a 336 (its port 7777 is the share's here): readings
    each the emulator delivered for that input; a setting refused in read as the 336 refuses an unknown one."""
    import lakeshore

    with sharing_336(tmp_path, seed=5) as (app, emu):
        port = port_of(app, "LS336A")
        ls = run_with_timeout(lambda: lakeshore.Model336(ip_address="127.0.0.1", tcp_port=port, timeout=5))
        got = [(ch, run_with_timeout(lambda ch=ch: ls.get_kelvin_reading(ch))) for ch in "ABCD" for _ in range(3)]
        ls.disconnect_tcp()
        for ch, value in got:
            assert value in readings_delivered(emu.ledger, ch, "kelvin"), (ch, value)
        c = LineClient(port)
        setp = c.msg("SETP? 1")
        assert c.msg("SETP 1,123.4;*ESR?") == "32" and c.msg("SETP? 1") == setp
        assert check_against_ledger(emu.ledger, c.got) >= 2
        c.close()
