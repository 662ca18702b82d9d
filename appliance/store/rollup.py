"""Rollup arithmetic: (count, sum, min, max) buckets added, folded, packed; a block written with its rollups.

Buckets travel as ``PACK_DT`` arrays (start, n, sum, min, max); a tier is a bucket width in seconds.
The 1 min, 10 min and 1 h tiers are stored (``rollup`` rows, folded per closed day into
``rollup_pack``); 10 s buckets and the recent tier's are computed from blocks when asked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np

from .. import blocks
from ..blocks import Row

TIERS = (10, 60, 600, 3600)  # rollup bucket widths in seconds, as queries choose them
STORED_TIERS = (60, 600, 3600)  # kept as rows; 10 s is computed from blocks when asked
BLOCK_MS = 3600_000  # one block per series per hour
# one rollup bucket in a pack: start (s), count, sum, min, max of the non-NULL values
PACK_DT = np.dtype([("b", "<i8"), ("n", "<u4"), ("s", "<f8"), ("mn", "<f8"), ("mx", "<f8")])


def add(agg: dict, g: int, n: int, s: float, mn: float, mx: float) -> None:
    """Add one bucket's (n, sum, min, max) into ``agg[g]``."""
    cur = agg.get(g)
    if cur is None:
        agg[g] = [n, s, mn, mx]
    else:
        cur[0] += n
        cur[1] += s
        cur[2] = min(cur[2], mn)
        cur[3] = max(cur[3], mx)


def fold(parts: list[np.ndarray], group: int | None = None) -> dict[str, np.ndarray]:
    """Buckets (``PACK_DT`` arrays) merged: one per distinct start, or per ``group``-second start.

    Returns plain columns (b, n, s, mn, mx): a structured array's fields are strided views,
    several times slower to compute on.
    """
    parts = [p for p in parts if len(p)] or [np.empty(0, PACK_DT)]
    col = {k: np.concatenate([p[k] for p in parts]) for k in ("b", "n", "s", "mn", "mx")}
    b = col["b"] if group is None else col["b"] // group * group
    if len(parts) > 1 and len(b) > 1 and not bool(np.all(b[1:] >= b[:-1])):
        order = np.argsort(b, kind="stable")
        b = b[order]
        col = {k: v[order] for k, v in col.items()}
    if not len(b):
        return col
    idx = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    return {
        "b": b[idx],
        "n": np.add.reduceat(col["n"], idx),
        "s": np.add.reduceat(col["s"], idx),
        "mn": np.minimum.reduceat(col["mn"], idx),
        "mx": np.maximum.reduceat(col["mx"], idx),
    }


def packed(col: dict[str, np.ndarray]) -> bytes:
    """Folded columns as one pack (a ``rollup_pack`` row's data)."""
    out = np.empty(len(col["b"]), PACK_DT)
    for k, v in col.items():
        out[k] = v
    return out.tobytes()


def buckets(rows: Sequence[tuple]) -> np.ndarray:
    """(start, n, sum, min, max) rows as a ``PACK_DT`` array."""
    return np.array(rows, dtype=PACK_DT) if rows else np.empty(0, PACK_DT)


def insert_rows(
    conn: sqlite3.Connection, sid: int, rows: Sequence[Row], rollups: bool = True, table: str = "block"
) -> int:
    """Write one series' rows as blocks, one per hour; add their rollups.

    ``table="fresh"``: the recent tier's small blocks, whose rollups wait for the hour's seal.
    """
    by_hour: dict[int, list[Row]] = {}
    for r in rows:
        by_hour.setdefault(r.t // BLOCK_MS * BLOCK_MS, []).append(r)
    for hour, hrows in by_hour.items():
        insert_block(conn, sid, hour, blocks.columns(hrows), rollups, table)
    return len(by_hour)


def insert_block(
    conn: sqlite3.Connection, sid: int, hour: int, c: blocks.Columns, rollups: bool = True, table: str = "block"
) -> None:
    """One block of one series' samples within one hour (``hour`` in ms), and its rollups."""
    """One block of one series' samples within one hour (``hour`` in ms), and its rollups."""
    flags = int(np.bitwise_or.reduce(c.status)) if len(c) else 0
    conn.execute(
        f"INSERT INTO {table}(series, hour, t0, t1, seq0, seq1, n, flags, data) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            sid,
            hour // 1000,
            int(c.t[0]),
            int(c.t[-1]),
            int(c.seq.min()),
            int(c.seq.max()),
            len(c),
            flags,
            blocks.encode(c),
        ),
    )
    if rollups and table == "block":
        for tier in STORED_TIERS:
            conn.executemany(
                "INSERT INTO rollup(tier, series, bucket, n, sum, min, max) VALUES (?,?,?,?,?,?,?)"
                " ON CONFLICT(tier, series, bucket) DO UPDATE SET n=n+excluded.n, sum=sum+excluded.sum,"
                " min=min(min, excluded.min), max=max(max, excluded.max)",
                [(tier, sid, *s) for s in blocks.summaries(c, tier)],
            )
