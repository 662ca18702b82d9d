"""`make soak`: the whole stack for a simulated week, with random faults, then the ledger reconciled.

Both emulators run at a fast time scale (default: 7 simulated days in 8 minutes, starting warm, so
the fridge cools down through every range), the appliance runs as `kelvinpi run` in its own
process, a real crossbar routes its sisock data nodes and OCS feeds, and a remote consumer reads
back everything over WAMP while a Grafana-style client reads it over HTTP. Faults are drawn at
random: TCP drops, silence, slow replies, garbage, cut lines, power-cycle resets, the 240's USB
vanishing, the router restarting. Last line, for scripts:

    soak: produced=N stored=N served=N lost=N

Exit status 0 only when nothing was lost, nothing foreign was stored, everything stored was served,
and the appliance's RSS grew by less than --rss-bound MB between the first minute and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from firmware_host.emulator import Emulator
from tests.conftest import appliance_config
from tests.support.reconcile import forwarded, forwarding_gaps, reconcile
from tests.support.routers import Consumer, Crossbar, FeedListener, Hub, Influx, Loop

SERVER_SECRET = "soak-server-secret"
CONSUMER_SECRET = "soak-consumer-secret"
FAULTS_372 = ["drop", "mute", "slow", "garbage", "partial", "reset"]
FAULTS_240 = ["garbage", "partial", "unplug", "mute"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=10) as r:
        return json.loads(r.read())


def inject(
    rng: random.Random,
    e372: Emulator,
    e240: Emulator,
    router: Crossbar,
    counts: Counter,
    allow_router: bool,
    influx: Influx | None = None,
) -> str:
    if influx is not None and allow_router and rng.random() < 0.1:
        counts["influxdb restart"] += 1
        influx.stop()
        time.sleep(rng.uniform(2, 8))
        influx.start()
        return "router restart"  # counts as a far-side outage for the spacing below
    if allow_router and rng.random() < 0.12:
        counts["router restart"] += 1
        router.stop()
        time.sleep(rng.uniform(2, 6))
        router.start()
        return "router restart"
    if rng.random() < 0.6:
        emu, fault, name = e372, rng.choice(FAULTS_372), "372"
    else:
        emu, fault, name = e240, rng.choice(FAULTS_240), "240"
    counts[f"{name} {fault}"] += 1
    if fault == "mute":
        emu.control("mute on")
        time.sleep(rng.uniform(0.5, 4))
        emu.control("clear")
    elif fault == "slow":
        emu.control("slow 1.5")  # longer than the 1 s timeout: those replies are late, not produced
        time.sleep(rng.uniform(1, 4))
        emu.control("clear")
    elif fault in ("garbage", "partial"):
        emu.control(f"{fault} {rng.randint(1, 4)}")
    elif fault == "unplug":
        emu.control(f"unplug {rng.uniform(0.5, 3):.1f}")
    else:
        emu.control(fault)
    return f"{name} {fault}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0, help="simulated duration (default 7 days)")
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock duration (default 8)")
    ap.add_argument("--fault-every", type=float, default=12.0, help="mean seconds between faults")
    ap.add_argument("--rss-bound", type=float, default=25.0, help="allowed RSS growth in MB")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    scale = args.days * 86400 / (args.minutes * 60)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kelvinpi-soak-"))
    print(
        f"soak: {args.days} simulated days in {args.minutes} min (time scale {scale:.0f}x), seed {args.seed}, "
        f"work dir {work}",
        flush=True,
    )
    e372 = Emulator.ls372(seed=rng.randrange(1 << 30), time_scale=scale, warm=True)
    e240 = Emulator.ls240(seed=rng.randrange(1 << 30), time_scale=scale, warm=True)
    e372.listen_tcp("127.0.0.1", 0)
    e240.listen_pty(str(work / "ls240"))
    # Park the 372's scanner on one channel: at this time scale its simulated dwell would be a few wall
    # milliseconds, shorter than the real-time pause the poller waits out, and no scanned channel would
    # ever be read. (A `reset` fault puts it back to scanning, which the soak then also sees.)
    from drivers.ls372 import Model372
    from drivers.transport import TcpTransport

    setup = Model372(TcpTransport(*e372.tcp.address), timeout=2)
    setup.connect()
    setup.set_scan("2", autoscan=False)
    setup.close()
    router = Crossbar(work / "router", SERVER_SECRET, CONSUMER_SECRET)
    router.start()
    loop = Loop()
    hub = Hub(loop, router)
    assert hub.joined.wait(60), "sisock hub never joined"
    consumer = Consumer(loop, router)
    listener = FeedListener(loop, router)  # as OCS's InfluxDB publisher subscribes to the feeds
    assert listener.joined.wait(60), "feed listener never joined"
    influx = Influx(work) if os.path.exists(Influx.BIN) else None
    if influx is not None:
        influx.start()
        influx.create_db()
    else:
        print("soak: Debian's influxd is not installed: the InfluxDB uplink is left out", flush=True)
    secret = work / "wamp-secret"
    secret.write_text(SERVER_SECRET + "\n")
    os.chmod(secret, 0o600)
    uplinks = (
        f'\n[[uplink]]\nkind = "sisock"\nurl = "{router.wss_url}"\nsecret_file = "{secret}"\n'
        f'ca_file = "{router.cert}"\n\n[[uplink]]\nkind = "ocs"\nurl = "{router.ws_url}"\n'
    )
    if influx is not None:
        uplinks += f'\n[[uplink]]\nkind = "influxdb"\nurl = "{influx.url}"\ndatabase = "ocs_feeds"\n'

    cfg = work / "kelvinpi.toml"
    cfg.write_text(
        appliance_config(work, e372, e240, extra=uplinks, interval=0.2).replace(
            "commit_interval = 0.2", "commit_interval = 0.5"
        )
    )
    log = open(work / "kelvinpi.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    counts: Counter = Counter()
    status = 1
    final = "soak: produced=0 stored=0 served=0 lost=0 (the soak did not finish: see above)"
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            time.sleep(0.5)
            for line in (work / "kelvinpi.log").read_text().splitlines():
                if "front panel on http://" in line:
                    port = int(line.rsplit(":", 1)[1].strip("/ "))
        assert port, "the appliance did not start: see " + str(work / "kelvinpi.log")
        t_start = time.monotonic()
        end = t_start + args.minutes * 60
        rss_start = None
        last_router = t_start
        next_fault = t_start + rng.expovariate(1 / args.fault_every)
        while time.monotonic() < end:
            time.sleep(0.5)
            now = time.monotonic()
            if rss_start is None and now - t_start > min(60.0, args.minutes * 15):
                rss_start = rss_mb(proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(f"the appliance exited with {proc.returncode}")
            if now >= next_fault and now < end - 20:
                if (
                    inject(rng, e372, e240, router, counts, allow_router=now - last_router > 60, influx=influx)
                    == "router restart"
                ):
                    last_router = time.monotonic()
                next_fault = time.monotonic() + rng.expovariate(1 / args.fault_every)
        for e in (e372, e240):
            e.control("clear")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(i["connected"] for i in health(port)["instruments"]):
            time.sleep(0.5)
        rss_end = rss_mb(proc.pid)
        for e in (e372, e240):
            e.control("mute on")  # quiesce: nothing in flight while we count
        time.sleep(5)  # and the writer, idle for 2 s, has moved its journal into SQLite
        h = health(port)
        tally = reconcile(
            work / "kelvinpi.db",
            {"LSA23JD": e372, "LSA24AZ": e240},
            consumer=consumer,
            http_base=f"http://127.0.0.1:{port}",
        )
        # the push uplinks: the OCS feed and InfluxDB hold exactly what is stored (bounded wait for backfill)
        deadline = time.monotonic() + 180
        while (gaps := forwarding_gaps(work / "kelvinpi.db", listener, influx)) and time.monotonic() < deadline:
            time.sleep(2)
        pushed = forwarded(work / "kelvinpi.db", listener, influx)
        db_mb = sum(p.stat().st_size for p in work.glob("kelvinpi.db*")) / 1e6
        sim_days = e372.clock.now() / 86400 if hasattr(e372.clock, "now") else float("nan")
        print(
            f"soak: faults injected: {sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})"
        )
        print(
            f"soak: simulated {sim_days:.2f} days; temperatures now {json.loads(e372.control('status'))['temperatures']}"
        )
        print(
            "soak: produced/stored per series: "
            + ", ".join(
                f"{k.split('::')[-1] if '::' in k else k} {p}/{s}" for k, (p, s) in sorted(tally.per_series.items())
            )
        )
        print(
            f"soak: late replies (slow fault, not counted as produced) {tally.late}; replies the faults garbled "
            f"{e372.ledger.faulted + e240.ledger.faulted}; foreign values stored {tally.foreign}"
        )
        print(
            f"soak: served over WAMP {tally.served_wamp}, over HTTP (Grafana) {tally.served_http}; "
            f"queue dropped {h['store']['dropped']}, write errors {h['store']['write_errors']}"
        )
        print(
            f"soak: RSS {rss_start:.1f} MB after the first minute, {rss_end:.1f} MB at the end "
            f"(bound +{args.rss_bound:.0f} MB); DB {db_mb:.1f} MB"
        )
        print(
            f"soak: forwarded: {sum(v[0] for v in pushed.values())} non-NULL samples of {len(pushed)} series; "
            f"wrong on the OCS feed {sum(v[1] for v in pushed.values())}, in InfluxDB "
            f"{sum(v[2] for v in pushed.values()) if influx is not None else 'n/a'}"
            + (f"; per series (stored, OCS wrong, InfluxDB wrong): {gaps}" if gaps else "")
        )
        ok = (
            tally.lost == 0
            and tally.foreign == 0
            and tally.served_wamp == tally.stored == tally.served_http
            and tally.produced > 0
            and rss_end - rss_start <= args.rss_bound
            and not gaps
        )
        print(f"soak: {'PASS' if ok else 'FAIL'}", flush=True)
        final = f"soak: produced={tally.produced} stored={tally.stored} served={tally.served} lost={tally.lost}"
        status = 0 if ok else 1
    except Exception:
        import traceback

        traceback.print_exc()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for comp in (consumer.comp, hub.comp, listener.comp):  # leave quietly before the router goes
            with contextlib.suppress(Exception):
                loop.run(_stopped(comp), timeout=10)
        loop.stop()
        router.stop()
        if influx is not None:
            influx.stop()
        e372.stop()
        e240.stop()
        if not args.keep and status == 0:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print(final, flush=True)  # the last line, for scripts
    return status


async def _stopped(comp) -> None:
    r = comp.stop()
    if r is not None and hasattr(r, "__await__"):
        await r


if __name__ == "__main__":
    sys.exit(main())
