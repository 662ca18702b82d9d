"""``make bench-share``: what a share client costs, and what it costs the poller (issue 26).

One run against the emulated 372 (real time, loopback):

1. a client's query round trip straight to the emulator (its second TCP connection, as a second
   client of a real 372) and through the share (the link's owner carries it out: the client's session
   thread holding the poller's link while the poller is idle, else the poller's thread); the query
   is ``INNAME? 1``, which the poller never asks, so every one goes over the link (a reading of the
   poller's cycle would be answered from its own reply and cost nothing: shown apart as cached);
   also the poller's own reading line straight to the emulator: one exchange of the poller. The
   asking client is a process of its own, as every real client is (on another machine): a client
   thread inside the appliance's process would share its interpreter lock with the poller, the
   session threads and the emulator, which no real client does. The same round trips from a
   thread of the bench's own process are printed before, for comparison with earlier runs;
2. the poller's cycle time with 0, 1 and 4 active clients, each in its own process (as remote
   clients are) asking ``--rate`` lines a second (50: ten times what socs' or QCoDeS' loops ask), a
   few seconds each. A cycle's time is from when it
   was due to when its readings were taken: a client line that holds it up counts;
3. lost: readings the instrument delivered to the poller that are not in the store (the readings
   the clients were given left out), plus client questions left unanswered; served: what the
   Grafana JSON datasource of the running appliance gives back of them (the instrument is muted
   first and the store has written everything, so nothing is in flight while it is counted).

Aims (issue 26): round trip <= 1.5 x direct + one poller exchange; cycle time with 4 clients
<= 1.2 x without. Round trips and cycle times are compared by their medians (means are printed
too): on a shared machine another program's burst lands on single samples, not on the share. Last line exactly:
``bench-share: direct_ms=D share_ms=S share_ratio=R cycle_ratio_4=C lost=L``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance import config  # noqa: E402
from appliance.service import Appliance  # noqa: E402
from firmware_host.emulator import Emulator  # noqa: E402
from tests.support.reconcile import ShareClientsLeftOut, reconcile  # noqa: E402

NODE = "LSA23JD"

# a client process: asks RATE lines a second (each answered before the next) for SECONDS;
# prints "<answered> <unanswered>"
CLIENT = r"""
import socket, sys, time
port, seconds, n, pace = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), 1 / float(sys.argv[4])
ok = bad = 0
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = s.makefile("rb")
except OSError:
    print(0, 1)
    sys.exit()
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    ch = 1 + (i + n) % 16
    q = f"INNAME? {ch};INTYPE? {ch}" if i % 2 else "SCAN?"
    try:
        s.sendall(q.encode() + b"\r\n")
        line = f.readline()
    except OSError:
        line = b""
    if line.endswith(b"\r\n") and line.strip():
        ok += 1
    else:
        bad += 1
        break
    i += 1
    time.sleep(pace)  # the client's own pace (its phase its own, as independent clients' are)
print(ok, bad)
"""


# a client process measuring round trips: straight to the emulator and through the share, interleaved
# blocks; prints one JSON object of the milliseconds of each
ASKER = r"""
import json, socket, sys, time
eport, sport, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("rb")
def trips(c, line, k):
    s, f = c
    out = []
    for _ in range(k):
        t = time.perf_counter()
        s.sendall(line + b"\r\n")
        if not f.readline().endswith(b"\r\n"):
            raise SystemExit(f"no answer to {line!r}")
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.003)
    return out
straight, through = conn(eport), conn(sport)
rt = {"exchange": [], "direct": [], "share": [], "cached": []}
block = max(1, n // 5)
for _ in range(5):
    rt["exchange"] += trips(straight, b"RDGPWR? 1;QRDG? 1;RDGST? 1", block)
    rt["direct"] += trips(straight, b"INNAME? 1", block)
    rt["share"] += trips(through, b"INNAME? 1", block)
    rt["cached"] += trips(through, b"KRDG? A", block)
print(json.dumps(rt))
"""


class Asker:
    """One client connection that asks a line and waits for its answer (a 372 takes two connections:
    the poller has one, the direct measurements keep the other open for the whole run)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def round_trips(self, line: bytes, n: int) -> list[float]:
        """Milliseconds of each of ``n`` sequential round trips of ``line``."""
        out = []
        for _ in range(n):
            t = time.perf_counter()
            self.sock.sendall(line + b"\r\n")
            if not self.file.readline().endswith(b"\r\n"):
                raise RuntimeError(f"no answer to {line!r}")
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(0.003)  # a client's pace, not a burst: arrivals land anywhere in the poll period
        return out

    def close(self) -> None:
        self.file.close()  # the file holds the socket open too
        self.sock.close()


class CycleClock:
    """Wraps the poller's cycle: each cycle's time from when it was due to when it ended."""

    def __init__(self, poller) -> None:
        self.poller, self.times, self._last_start = poller, [], None
        self.parts: list[tuple[float, float]] = []  # (late, duration) of each cycle
        self._orig = poller.cycle
        poller.cycle = self._cycle

    def _cycle(self, out) -> None:
        start = time.monotonic()
        due = start if self._last_start is None else self._last_start + self.poller.interval
        self._last_start = start
        self._orig(out)
        end = time.monotonic()
        self.times.append(end - min(due, start))
        self.parts.append((max(0.0, start - due), end - start))

    def take(self) -> list[float]:
        got, self.times = self.times, []
        if self.parts:
            late = statistics.mean(p[0] for p in self.parts) * 1000
            took = statistics.mean(p[1] for p in self.parts) * 1000
            print(f"  late {late:.2f} ms, duration {took:.2f} ms (means)", flush=True)
        self.parts = []
        return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.5, help="seconds of each client phase (0, 1, 4 clients)")
    ap.add_argument("--rounds", type=int, default=4, help="times the 0, 1, 4 phases are run (interleaved)")
    ap.add_argument("--queries", type=int, default=300, help="round trips measured each way")
    ap.add_argument("--interval", type=float, default=0.1, help="the poller's interval (s)")
    ap.add_argument("--rate", type=float, default=50.0, help="lines a second each active client asks")
    args = ap.parse_args()

    emu = Emulator.ls372(seed=11)
    emu.listen_tcp("127.0.0.1", 0)
    host, eport = emu.tcp.address
    tmp = Path(tempfile.mkdtemp(prefix="bench-share-"))
    text = (
        f'[[instrument]]\nmodel = "372"\nname = "{NODE}"\ntransport = "tcp"\nhost = "{host}"\nport = {eport}\n'
        f"timeout = 1.0\ninterval = {args.interval}\nread_heater = true\n"
        '[instrument.share]\nenabled = true\nbind = "127.0.0.1"\nport = 0\nmax_clients = 8\n'
        f'[store]\npath = "{tmp / "kelvinpi.db"}"\ncommit_interval = 0.5\n[web]\nbind = "127.0.0.1"\nport = 0\n'
    )
    app = Appliance(config.parse(text))
    poller = app.pollers[0]
    clock = CycleClock(poller)
    app.start()
    unanswered = 0
    try:
        if not poller.connected_event.wait(15):
            raise SystemExit(f"the appliance did not connect: {poller.health.last_error}")
        sport = app.shares[0].address[1]
        time.sleep(1.0)
        # one exchange of the poller: its reading line's shape (drivers/ls372.py read), with queries the
        # ledger does not count as readings, so the store's reconciliation stays exact
        read_line = b"RDGPWR? 1;QRDG? 1;RDGST? 1"
        # interleaved blocks, so a burst of load on the machine falls on both sides alike
        block = max(1, args.queries // 5)
        inproc: dict[str, list[float]] = {"exchange": [], "direct": [], "share": [], "cached": []}
        straight, through = Asker(eport), Asker(sport)
        for _ in range(5):
            inproc["exchange"] += straight.round_trips(read_line, block)
            inproc["direct"] += straight.round_trips(b"INNAME? 1", block)
            inproc["share"] += through.round_trips(b"INNAME? 1", block)
            inproc["cached"] += through.round_trips(b"KRDG? A", block)
        straight.close(), through.close()
        print(
            "  from a thread of this process (shares the appliance's interpreter lock; medians): "
            + ", ".join(f"{k} {statistics.median(v):.3f} ms" for k, v in inproc.items())
        )
        time.sleep(0.5)  # the share has seen the close: the asker has the 372's second place
        out = subprocess.run(
            [sys.executable, "-c", ASKER, str(eport), str(sport), str(args.queries)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode:
            raise SystemExit(f"the asking client failed: {out.stderr.strip()}")
        rt: dict[str, list[float]] = json.loads(out.stdout)
        time.sleep(0.5)  # the share has seen the close: the client phases have all their places
        # medians: the machine's other load (a shared CI box) lands on single round trips, not on the share
        exchange, direct, share, cached = (statistics.median(rt[k]) for k in ("exchange", "direct", "share", "cached"))
        print("  from a client process of its own (as every real client):")
        for k, v in rt.items():
            print(f"  {k}: mean {statistics.mean(v):.3f} ms, median {statistics.median(v):.3f} ms, n={len(v)}")
        cycles: dict[int, list[float]] = {0: [], 1: [], 4: []}
        for n in [0, 1, 4] * args.rounds:
            clock.take()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", CLIENT, str(sport), str(args.seconds), str(k), str(args.rate)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for k in range(n)
            ]
            if not procs:
                time.sleep(args.seconds)
            answered = 0
            for p in procs:
                out, _ = p.communicate(timeout=args.seconds + 30)
                ok, bad = (int(x) for x in out.split())
                answered += ok
                unanswered += bad
            c = clock.take()
            cycles[n] += c
            rate = answered / args.seconds
            print(
                f"{n} client(s): {len(c)} cycles, mean {statistics.mean(c) * 1000:.2f} ms, "
                f"p95 {sorted(c)[int(0.95 * (len(c) - 1))] * 1000:.2f} ms; clients answered {rate:.0f} lines/s",
                flush=True,
            )
        h = poller.health
        print(f"poller: {h.cycles} cycles, {h.overruns} overruns, share {h.share.commands if h.share else 0} lines")
        # nothing in flight while the store is counted: the instrument muted, the writer idle
        emu.control("mute on")
        time.sleep(2.5)  # past a timeout (1 s): every exchange has been answered or given up
        last, deadline = -1, time.monotonic() + 30
        while time.monotonic() < deadline and not (len(app.queue) == 0 and app.store.written == last):
            last = app.store.written
            time.sleep(0.5)
        web = f"http://127.0.0.1:{app.web_address[1]}"
        tally = reconcile(app.store, {NODE: ShareClientsLeftOut(emu.ledger)}, http_base=web)
    finally:
        app.stop()
        emu.stop()
    lost = tally.lost + unanswered
    base = statistics.median(cycles[0])
    ratio4 = statistics.median(cycles[4]) / base
    print(
        "cycle means (ms): "
        + ", ".join(f"{n} clients {statistics.mean(cycles[n]) * 1000:.2f}" for n in (0, 1, 4))
        + "; medians: "
        + ", ".join(f"{n} clients {statistics.median(cycles[n]) * 1000:.2f}" for n in (0, 1, 4))
        + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    aim_rt = 1.5 * direct + exchange
    print(f"a reading of this cycle through the share (answered from the poller's own reply): {cached:.3f} ms")
    print(
        f"round trip: direct {direct:.3f} ms, share {share:.3f} ms, poller exchange_ms={exchange:.3f} "
        f"(aim share <= 1.5 x direct + exchange = {aim_rt:.3f} ms: {'met' if share <= aim_rt else 'MISSED'})"
    )
    print(
        f"cycle: {base * 1000:.2f} ms without clients, x{ratio4:.3f} with 4 (aim <= 1.2: "
        f"{'met' if ratio4 <= 1.2 else 'MISSED'}); store: {tally.line()}"
    )
    print(
        f"bench-share: direct_ms={direct:.3f} share_ms={share:.3f} share_ratio={share / direct:.2f} "
        f"cycle_ratio_4={ratio4:.3f} lost={lost}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
