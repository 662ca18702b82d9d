"""`make bench-retention`: retention's longest write-lock hold on a multi-GB store (a measurement, not a test).

A card that has run for years holds gigabytes; a new, shorter ``raw_retention_days`` (or the
first pass after a long outage) then drops half of it. Every step of that drop holds the
writer's lock, and while it is held no reading is committed. This tool builds such a file
and measures the holds as the writer's own loop would see them:

1. 30 days x 24 series of the bench's realistic data (tools.bench's generator), sealed into
   hourly blocks, then the block table copied back in time ``--copies`` times (48: 4.3 GB,
   846,720 blocks, about 4 minutes to build on 2 cores).
2. A working copy, with its page cache dropped (posix_fadvise DONTNEED): cold, as after a boot.
3. ``raw_retention_days`` set so that the older half is out of date, then
   ``Store.enforce_retention(budget=RETENTION_BUDGET)`` in passes, as the writer thread calls it,
   until nothing is left to do (or ``--seconds``). The lock is tools.bench.TimedLock, which
   records the longest outermost hold and the code that held it.

Last line: ``bench-retention: file_gb=F after_gb=A blocks=N deleted=D passes=P seconds=S longest_ms=L p99_ms=Q where=W``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

from appliance.store import RETENTION_BUDGET, Store
from tools.bench import HOUR, ROOT, Generator, TimedLock, bench_keys, make_samples

DAYS = 30


def build(db: Path, copies: int) -> None:
    """The 30-day store, then its blocks copied ``copies`` times further back (same data, older hours)."""
    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    keys = bench_keys()
    end = int(time.time() // HOUR * HOUR) - 2 * 86400
    hours = DAYS * 24
    t0 = end - hours * HOUR
    store = Store(db, raw_retention_days=100_000, max_size_mb=1 << 20)
    gen = Generator()
    for h in range(hours):
        t_ms, values = gen.hour((t0 + h * HOUR) * 1000)
        store.write(make_samples(keys, t_ms, values))
    store.flush()
    store.seal(now=end + 3 * HOUR, budget=3600)
    store.close()
    conn = sqlite3.connect(db)
    span = DAYS * 86400
    cols = "series, hour, t0, t1, seq0, seq1, n, flags, data"
    for k in range(1, copies + 1):
        conn.execute(
            f"INSERT INTO block ({cols}) SELECT series, hour - {k * span}, t0 - {k * span * 1000},"
            f" t1 - {k * span * 1000}, seq0, seq1, n, flags, data FROM block WHERE hour >= {t0}"
        )
        conn.commit()
        print(f"  ... copy {k}/{copies}: {db.stat().st_size / 1e9:.2f} GB", flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def cold(path: Path) -> None:
    """Drop the file's pages from the page cache, so the first steps read from the disk as after a boot."""
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run(db: Path, seconds: float) -> str:
    work = db.with_name("run.db")
    for p in db.parent.glob("run.db*"):
        p.unlink()
    shutil.copy(db, work)
    cold(work)
    store = Store(work, raw_retention_days=100_000, max_size_mb=1 << 20)
    lock = TimedLock()
    store._write_lock = lock  # type: ignore[assignment]  # the same reentrant lock, timed
    n, lo, hi = store._w_read("SELECT count(*), min(hour), max(hour) FROM block")[0]
    size = work.stat().st_size
    print(f"retention: {n:,} blocks, {size / 1e9:.2f} GB; dropping the older half", flush=True)
    store.raw_retention = time.time() - (lo + hi) / 2
    started = time.monotonic()
    holds: list[float] = []
    worst, where, deleted = 0.0, "", 0
    while time.monotonic() - started < seconds:
        lock.longest = 0.0
        r = store.enforce_retention(budget=RETENTION_BUDGET)
        deleted += r["raw_age"]
        holds.append(lock.longest)
        if lock.longest > worst:
            worst, where = lock.longest, lock.where
        if len(holds) % 50 == 0:
            print(
                f"  ... pass {len(holds)}: {time.monotonic() - started:.0f} s, {deleted:,} samples deleted,"
                f" longest hold so far {worst * 1000:.0f} ms ({where})",
                flush=True,
            )
        if not r["more"]:
            break
    took = time.monotonic() - started
    store.close()
    after = work.stat().st_size
    holds.sort()
    p99 = holds[min(len(holds) - 1, int(len(holds) * 0.99))]
    return (
        f"bench-retention: file_gb={size / 1e9:.2f} after_gb={after / 1e9:.2f} blocks={n} deleted={deleted}"
        f" passes={len(holds)}"
        f" seconds={took:.0f} longest_ms={worst * 1000:.0f} p99_ms={p99 * 1000:.0f} where={where!r}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=48, help="copies of the 30-day store (48: about 4.3 GB)")
    ap.add_argument("--seconds", type=float, default=3600, help="stop retention after this long")
    ap.add_argument("--dir", type=Path, default=ROOT / "var" / "bench-retention", help="where the files go")
    ap.add_argument("--keep", action="store_true", help="keep the built big.db for a later --reuse")
    ap.add_argument("--reuse", action="store_true", help="reuse the big.db kept by an earlier --keep run")
    args = ap.parse_args(argv)
    d = args.dir
    d.mkdir(parents=True, exist_ok=True)
    db = d / "big.db"
    if not (args.reuse and db.exists()):
        t = time.monotonic()
        print(f"building {db} ({args.copies} copies of {DAYS} days x 24 series)...", flush=True)
        build(db, args.copies)
        print(f"built in {time.monotonic() - t:.0f} s", flush=True)
    try:
        print(run(db, args.seconds))
    finally:
        for p in d.glob("run.db*"):
            p.unlink()
        if not args.keep:
            for p in d.glob("big.db*"):
                p.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
