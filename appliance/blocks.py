"""Sealed blocks: one series' samples over (at most) one hour, compressed losslessly with pcodec.

A block holds, in (time, sequence) order, every sample's time (ms), insertion sequence number,
status bits and value; a value the instrument flagged is NULL and is stored as an index into
the block, not as a number, so NULL and every float (including -0.0) round-trip exactly.

The summaries that rollup tiers need (count, sum, min, max per bucket) are computed from the
decoded arrays when the block is sealed, so the writer never touches a rollup row per commit.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from pcodec import ChunkConfig, standalone

MAGIC = b"KB1\0"
_HEADER = struct.Struct("<4sIIIIII")  # magic, n, len(t), len(seq), len(status), len(values), len(nulls)
_CONFIG = ChunkConfig()


class Row(NamedTuple):
    """One stored sample, the one row shape of the store, its journal, its readers and its uplinks.

    A NamedTuple, not a dataclass: the journal encodes rows as tuples, readers sort millions of
    them, and ``Row._make`` costs a fraction of a dataclass' ``__init__``.
    """

    seq: int  # insertion sequence number (monotone, never reused)
    sid: int  # series id (``series.id``)
    t: int  # reading time, ms since the epoch
    value: float | None  # None: the instrument flagged the reading (FLAG_INVALID)
    status: int  # status bits


@dataclass
class Columns:
    """Decoded samples of one series: parallel numpy arrays in (t, seq) order."""

    t: np.ndarray  # int64 ms
    seq: np.ndarray  # int64 insertion sequence
    status: np.ndarray  # int64 status bits
    value: np.ndarray  # float64, NaN where the value is NULL
    null: np.ndarray  # bool, True where the value is NULL

    def __len__(self) -> int:
        return len(self.t)

    def rows(self, sid: int) -> list[Row]:
        """The block's samples as rows of series ``sid``, in (t, seq) order."""
        vals: list = self.value.tolist()
        for i in np.flatnonzero(self.null).tolist():
            vals[i] = None
        n = len(vals)
        return list(
            map(Row._make, zip(self.seq.tolist(), [sid] * n, self.t.tolist(), vals, self.status.tolist(), strict=False))
        )

    def cut(self, lo: int, hi: int) -> Columns:
        """The samples with lo <= t < hi (ms)."""
        keep = (self.t >= lo) & (self.t < hi)
        if keep.all():
            return self
        return Columns(self.t[keep], self.seq[keep], self.status[keep], self.value[keep], self.null[keep])


def columns(rows: Sequence[Row]) -> Columns:
    """Columns from rows of one series, sorted into (t, seq) order."""
    rows = sorted(rows, key=lambda r: (r.t, r.seq))
    n = len(rows)
    seq = np.fromiter((r.seq for r in rows), np.int64, n)
    t = np.fromiter((r.t for r in rows), np.int64, n)
    null = np.fromiter((r.value is None for r in rows), bool, n)
    value = np.fromiter((np.nan if r.value is None else r.value for r in rows), np.float64, n)
    status = np.fromiter((r.status for r in rows), np.int64, n)
    return Columns(t, seq, status, value, null)


def concat(parts: list[Columns]) -> Columns:
    """Several blocks of one series as one, in (t, seq) order."""
    t, seq = np.concatenate([p.t for p in parts]), np.concatenate([p.seq for p in parts])
    order = np.lexsort((seq, t))
    return Columns(
        t[order],
        seq[order],
        np.concatenate([p.status for p in parts])[order],
        np.concatenate([p.value for p in parts])[order],
        np.concatenate([p.null for p in parts])[order],
    )


def _pack(a: np.ndarray) -> bytes:
    return standalone.simple_compress(np.ascontiguousarray(a), _CONFIG) if len(a) else b""


def _unpack(b: bytes, dtype: np.dtype | type) -> np.ndarray:
    if not b:
        return np.zeros(0, dtype)
    out = standalone.simple_decompress(b)
    return np.zeros(0, dtype) if out is None else out.astype(dtype, copy=False)


def encode(c: Columns) -> bytes:
    parts = [
        _pack(c.t),
        _pack(c.seq),
        _pack(c.status),
        _pack(c.value[~c.null]),
        _pack(np.flatnonzero(c.null).astype(np.int64)),
    ]
    return _HEADER.pack(MAGIC, len(c), *map(len, parts)) + b"".join(parts)


def decode(blob: bytes) -> Columns:
    magic, n, *lens = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError(f"not a kelvinpi block (magic {magic!r})")
    pos, parts = _HEADER.size, []
    for length in lens:
        parts.append(bytes(blob[pos : pos + length]))
        pos += length
    t, seq, status = _unpack(parts[0], np.int64), _unpack(parts[1], np.int64), _unpack(parts[2], np.int64)
    good, nulls = _unpack(parts[3], np.float64), _unpack(parts[4], np.int64)
    null = np.zeros(n, bool)
    null[nulls] = True
    value = np.full(n, np.nan)
    value[~null] = good
    if not (len(t) == len(seq) == len(status) == n):
        raise ValueError("corrupt block: column lengths differ")
    return Columns(t, seq, status, value, null)


def summaries(c: Columns, width: int) -> list[tuple[int, int, float, float, float]]:
    """(bucket start s, n, sum, min, max) per ``width``-second bucket over the non-NULL values."""
    keep = ~c.null
    if not keep.any():
        return []
    t, v = c.t[keep], c.value[keep]
    buckets = (t // 1000) // width * width
    order = np.argsort(buckets, kind="stable")
    buckets, v = buckets[order], v[order]
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    n = np.diff(np.r_[starts, len(v)])
    return list(
        zip(
            buckets[starts].tolist(),
            n.tolist(),
            np.add.reduceat(v, starts).tolist(),
            np.minimum.reduceat(v, starts).tolist(),
            np.maximum.reduceat(v, starts).tolist(),
            strict=False,
        )
    )
