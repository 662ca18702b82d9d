"""Issue 26's second red team, on the real path: the emulated 372 on TCP, the appliance polling it,
clients on real sockets through the share.

- a flood of lines the share answers itself (``*ESR?``) holds no overrunning cycle back by more
  than one step: past the cycle's due time one step goes, whatever it was, and one request;
- a line under way whose client has given up (``max_wait``) is stopped, not answered late, where
  its client would read the answer as its next question's;
- a client that leaves partway through a line of settings: the line runs to its end, as the
  instrument carries out a whole line it received, and every setting of it is audited.

Each waits out overrunning cycles in real time: the slow tier.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

from tests.conftest import wait_for
from tests.test_share import LineClient, port_of, sharing

pytestmark = pytest.mark.slow

OVERRUN = 0.25  # the poller's reading line takes this long: every 0.2 s cycle overruns


class Timeline:
    """When each cycle started and each client step was taken, in order (wrapping, not replacing, both)."""

    def __init__(self, poller) -> None:
        self.marks: list[tuple[str, float]] = []
        cycle, step = poller.cycle, poller.share._step

        def cycle_(out) -> None:
            self.marks.append(("cycle", time.monotonic()))
            cycle(out)

        def step_(inst, job) -> None:
            self.marks.append(("step", time.monotonic()))
            step(inst, job)

        poller.cycle = cycle_
        poller.share._step = step_

    def steps_between_cycles(self) -> list[int]:
        """Client steps taken between each two cycle starts."""
        counts: list[int] = []
        n = None
        for kind, _ in list(self.marks):
            if kind == "cycle":
                if n is not None:
                    counts.append(n)
                n = 0
            elif n is not None:
                n += 1
        return counts


def flood_from(port: int, clients: int = 4, seconds: float = 2.0, line: bytes = b"*ESR?\r\n") -> list[int]:
    """``clients`` flooding clients at once (``flood``), each client's answer count once all are done."""
    answers: list[int] = []
    threads = [threading.Thread(target=flood, args=(port, line, seconds, answers)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    return answers


def flood(port: int, line: bytes, seconds: float, answers: list[int]) -> None:
    """One client pipelining ``line``: a dozen in flight, one more for each answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    got = 0
    try:
        s.sendall(line * 12)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            try:
                data = s.recv(65536)
            except TimeoutError:  # its lines waited past max_wait and were dropped: more of them
                s.sendall(line * 12)
                continue
            if not data:
                break
            k = data.count(b"\r\n")
            got += k
            s.sendall(line * k)
    finally:
        s.close()
        answers.append(got)


def test_a_flood_of_local_answers_holds_an_overrunning_cycle_back_by_one_step(tmp_path, emu372):
    """Four clients flood ``*ESR?`` (answered by the share, no link exchange) while every cycle overruns:
    between two cycles one client step is taken at most, so the cycle is late by one step, never by the
    flood. (Before: local steps did not count against the past-deadline allowance, and the poller kept
    running queued turns past the deadline: cycles were held back up to 0.46 s.)"""
    with sharing(tmp_path, emu372) as app:
        poller = app.pollers[0]
        h = poller.health
        emu372.control(f"slow {OVERRUN} RDGR?")
        n = h.cycles
        wait_for(lambda: h.cycles > n + 2, 10, 0.01, "overrunning cycles")
        line = Timeline(poller)
        answers = flood_from(port_of(app))
        emu372.control("clear")
        counts = line.steps_between_cycles()
        assert len(counts) >= 4, line.marks
        assert sum(answers) > 0 and sum(counts) > 0, (answers, counts)  # the clients progressed
        assert max(counts) <= 1, counts
        assert h.connected and h.overruns > 0


def test_a_line_whose_client_gave_up_midway_is_stopped_not_answered_late(tmp_path, emu372):
    """A read-only client's line of 16 steps (queries with refused settings between them), one step per
    overrunning cycle, takes longer than ``max_wait``: it is stopped, counted dropped, and the client's
    next question gets its own answer, not the old line's. (Before: max_wait was checked when a line
    began only, and the next question got the old line's answer.)"""
    for ch in range(1, 4):
        emu372.device.channels[str(ch)].name = f"name of {ch}"
    with sharing(tmp_path, emu372, share="max_wait = 1.0") as app:
        h = app.pollers[0].health
        c = LineClient(port_of(app), timeout=2.0)
        assert c.msg("INNAME? 1") == "name of 1"
        emu372.control(f"slow {OVERRUN} RDGR?")
        n = h.cycles
        wait_for(lambda: h.cycles > n + 2, 10, 0.01, "overrunning cycles")
        line = ";".join(f'INNAME? 1;INNAME 9,"x{i}"' for i in range(8))
        c.sock.sendall(line.encode() + b"\r\n")
        with pytest.raises(TimeoutError):
            c.sock.recv(4096)  # the client gives up after 2 s, as pyvisa does
        c.sock.settimeout(5)
        wait_for(lambda: h.share.dropped == 1, 10, 0.02, "the line stopped")
        assert c.msg("INNAME? 2") == "name of 2"
        emu372.control("clear")
        assert h.share.settings == 0 and h.share.dropped == 1, h.share
        c.close()


def test_a_client_leaving_midline_leaves_its_line_whole_and_audited(tmp_path, emu372):
    """A client (policy full) sends six settings on one line and leaves once the first is carried out:
    the other five are carried out too, as the instrument runs a whole line it received, and each of the
    six is audited. (Before: the session left the rotation, half the line applied and nothing said.)"""
    with sharing(tmp_path, emu372, share='policy = "full"\nmax_wait = 30') as app:
        h = app.pollers[0].health
        emu372.control(f"slow {OVERRUN} RDGR?")  # one step per cycle: the client leaves partway
        n = h.cycles
        wait_for(lambda: h.cycles > n + 2, 10, 0.01, "overrunning cycles")
        c = LineClient(port_of(app), timeout=3)
        c.sock.sendall(";".join(f'INNAME {i},"set by client {i}"' for i in range(1, 7)).encode() + b"\r\n")
        wait_for(lambda: emu372.device.channels["1"].name == "set by client 1", 10, 0.002, "the first setting")
        c.sock.close()
        wait_for(lambda: h.share.clients == 0, 5, 0.01, "the client gone")
        assert emu372.device.channels["6"].name != "set by client 6", "the line was done before the client left"
        # a client arriving while the left one's line runs counts once (red team 3, R1: the left session counted)
        other = LineClient(port_of(app), timeout=3)
        wait_for(lambda: len(app.pollers[0].share.client_list()) == 1, 5, 0.01, "the second client listed")
        assert h.share.clients == 1
        wait_for(lambda: h.share.settings == 6, 15, 0.02, "the rest of the line")
        emu372.control("clear")
        assert [emu372.device.channels[str(i)].name for i in range(1, 7)] == [f"set by client {i}" for i in range(1, 7)]
        events = app.store.events(limit=200)
        audit = [e["detail"] for e in events if e["kind"] == "control" and "share client" in e["detail"]]
        for i in range(1, 7):
            assert any(f'applied: INNAME {i},"set by client {i}"' in d for d in audit), audit
        wait_for(lambda: len(app.pollers[0].share.sessions) == 1, 5, 0.02, "the left session out of the rotation")
        assert h.share.clients == 1 == len(app.pollers[0].share.client_list())  # R1: not left at 2
        other.close()
        wait_for(lambda: h.share.clients == 0, 5, 0.01, "the second client gone")


def test_the_link_is_marked_connected_only_once_its_new_epoch_is_counted(tmp_path, emu372):
    """A client's line is tagged with the link's epoch (its count of connections while connected): at
    the moment the poller marks a new connection up, the count is already the new one's, so a line
    arriving then is never tagged with the old connection's and dropped unanswered. (Before: connected
    was set first, then the count.) The epochs the share sees, recorded as the poller sets them."""
    with sharing(tmp_path, emu372) as app:
        poller = app.pollers[0]
        h, ex = poller.health, poller.share
        seen: list[int | None] = []

        class Watched(type(h)):  # the poller's own health, noting the share's view of each change
            def __setattr__(self, name, value):
                super().__setattr__(name, value)
                if name in ("connected", "reconnects"):
                    seen.append(ex.link_epoch())

        h.__class__ = Watched
        before = h.reconnects
        emu372.control("drop")
        wait_for(lambda: h.reconnects > before and h.connected, 15, 0.01, "the link is back")
        epochs = [e for e in seen if e is not None]
        assert epochs and set(epochs) == {h.reconnects}, seen  # never the old connection's count while up


def test_a_setting_the_instrument_refuses_is_counted_apart_from_policy_refusals(tmp_path, emu372):
    """A setting the policy lets through and the instrument refuses (ESR execution error) is audited
    refused and counted (``settings_failed``, the health and the metrics), not as a setting carried out."""
    with sharing(tmp_path, emu372, share='policy = "full"') as app:
        h = app.pollers[0].health
        c = LineClient(port_of(app))
        c.msg("INSET 4,1,999,3,0,1")  # dwell 999 s: out of range, the 372 sets ESR bit 4 (16)
        assert c.msg("*ESR?") == "16"
        wait_for(lambda: h.share.settings_failed == 1, 5, 0.01, "counted")
        assert h.share.settings == 0 and h.share.settings_refused == 0, h.share
        assert [x["failed"] for x in app.pollers[0].share.client_list()] == [1]
        text = urllib.request.urlopen(f"{app.base_url}/metrics", timeout=5).read().decode()
        assert 'kelvinpi_share_settings_failed_total{node="LSA23JD"} 1.0' in text
        events = [e["detail"] for e in app.store.events(limit=100) if e["kind"] == "control"]
        assert any("refused: INSET 4,1,999,3,0,1" in d and "ESR=16" in d for d in events), events
        c.close()
