"""The store's journal: an fsynced append-only file that makes each second's readings durable.

SQLite in WAL mode with ``synchronous=FULL`` writes 1.5 pages and an fsync per commit; at one
commit a second that is more than twice what an fsynced append-only log costs an SD card. So
the writer appends each batch here (one frame, one ``fdatasync``), keeps it in memory for
readers, and moves it into SQLite in one transaction about every ten minutes; after that
transaction the journal is emptied. On start-up, frames SQLite has not taken yet are replayed.

Frame: ``<length u32><crc32 u32><frame number u64>`` then the payload, in one of two layouts
told apart by the top bit of the length:

* compact (bit 31 set; a commit's usual shape: consecutive sequence numbers, times within ±24
  days of the first, series ids and status below 2^16): zlib of ``<n u32><seq0 i64><t0_ms i64>``
  then the columns ``series u16[n]``, ``t_ms - t0 i32[n]``, ``value f64[n]``, ``status u16[n]``,
  each stored byte plane by byte plane (the exponents side by side, the zero high bytes side by
  side), so zlib takes a 24-reading commit from 420 to about 290 bytes;
* wide (bit 31 clear, anything else, and every frame the first v2 release wrote): ``<n u32>``,
  n × ``<seq i64><series u32><t_ms i64><value f64><status u32>``, 32 bytes a reading;

NaN stands for a NULL value (the store only ever keeps one for flagged readings); then the
records (events, snapshots, cursor moves) as JSON. A frame cut short by a power cut fails its
length or CRC and ends the replay.

Why compact: every commit dirties the journal's last page (4 KiB) whatever it appends, plus
the bytes that spill into the next page, so a commit's size beyond that page is its wear:
a 24-reading frame of 290 bytes instead of 808 takes about 21 bytes a reading off the card.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .blocks import Row

log = logging.getLogger("kelvinpi.journal")

_HEAD = struct.Struct("<IIQ")
_COUNT = struct.Struct("<I")
_SAMPLE = struct.Struct("<qIqdI")
_COMPACT = 0x8000_0000  # top bit of the length: the compact layout
_CHEAD = struct.Struct("<Iqq")
_COLUMNS = (("sid", "<u2"), ("dt", "<i4"), ("v", "<f8"), ("st", "<u2"))
NAN = float("nan")


@dataclass
class Frame:
    number: int
    rows: list[Row] = field(default_factory=list)
    records: list[list] = field(default_factory=list)


def _planes(a: np.ndarray) -> bytes:
    """A column's bytes plane by plane: byte 0 of every value, then byte 1, ..."""
    return a.view(np.uint8).reshape(len(a), a.itemsize).T.tobytes()


def _unplanes(data: bytes, n: int, dtype: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(data, np.uint8).reshape(size, n).T.copy().view(dtype).reshape(n)


def _compact(rows: list[Row]) -> bytes | None:
    seq0, t0 = rows[0][0], rows[0][2]
    for i, (seq, sid, t, _v, st) in enumerate(rows):
        if seq != seq0 + i or not (0 <= sid <= 0xFFFF and 0 <= st <= 0xFFFF and -(2**31) <= t - t0 < 2**31):
            return None
    cols = {
        "sid": [r[1] for r in rows],
        "dt": [r[2] - t0 for r in rows],
        "v": [NAN if r[3] is None else r[3] for r in rows],
        "st": [r[4] for r in rows],
    }
    return zlib.compress(
        _CHEAD.pack(len(rows), seq0, t0) + b"".join(_planes(np.array(cols[k], dtype=dt)) for k, dt in _COLUMNS), 6
    )


def encode(frame: Frame) -> bytes:
    body = _compact(frame.rows) if frame.rows else None
    flag = _COMPACT if body is not None else 0
    if body is None:
        pack = _SAMPLE.pack
        body = _COUNT.pack(len(frame.rows)) + b"".join(
            pack(seq, sid, t, NAN if v is None else v, st) for seq, sid, t, v, st in frame.rows
        )
    payload = body + (json.dumps(frame.records, separators=(",", ":")).encode() if frame.records else b"")
    return _HEAD.pack(len(payload) | flag, zlib.crc32(payload), frame.number) + payload


def _rows(payload: bytes, compact: bool) -> tuple[list[Row], int]:
    """The readings of one payload, and where its records start."""
    if compact:
        z = zlib.decompressobj()
        body = z.decompress(payload)
        n, seq0, t0 = _CHEAD.unpack_from(body)
        pos, cols = _CHEAD.size, {}
        for k, dt in _COLUMNS:
            size = n * np.dtype(dt).itemsize
            cols[k] = _unplanes(body[pos : pos + size], n, dt).tolist()
            pos += size
        rows = [
            Row(seq0 + i, sid, t0 + d, None if math.isnan(v) else v, st)
            for i, (sid, d, v, st) in enumerate(zip(cols["sid"], cols["dt"], cols["v"], cols["st"], strict=False))
        ]
        return rows, len(payload) - len(z.unused_data)
    (n,) = _COUNT.unpack_from(payload)
    end = _COUNT.size + n * _SAMPLE.size
    return [
        Row(seq, sid, t, None if math.isnan(v) else v, st)
        for seq, sid, t, v, st in _SAMPLE.iter_unpack(payload[_COUNT.size : end])
    ], end


def decode_all(data: bytes) -> tuple[list[Frame], int]:
    """Whole frames from the start of ``data``, and the length they take (a torn tail is left out)."""
    frames, pos = [], 0
    while pos + _HEAD.size <= len(data):
        word, crc, number = _HEAD.unpack_from(data, pos)
        length = word & ~_COMPACT
        payload = data[pos + _HEAD.size : pos + _HEAD.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        rows, end = _rows(payload, bool(word & _COMPACT))
        records = json.loads(payload[end:]) if len(payload) > end else []
        frames.append(Frame(number, rows, records))
        pos += _HEAD.size + length
    return frames, pos


class Journal:
    """One append-only file beside the store (``<store>-journal``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115 (open for the journal's life; close() closes it)
        self.size = self._f.tell()
        self._leftover = False  # a failed append's bytes are still past self.size (its cut-back failed)

    def read(self) -> list[Frame]:
        """Every whole frame; a torn tail (a power cut mid-append) is cut off the file."""
        data = self.path.read_bytes()
        frames, good = decode_all(data)
        if good < len(data):
            log.warning(
                "%s: %d bytes of a frame cut short (power cut mid-write) dropped after %d whole frames",
                self.path,
                len(data) - good,
                len(frames),
            )
            self._truncate(good)
        return frames

    def append(self, frame: Frame) -> None:
        """Durable when this returns (fdatasync); on failure the file is cut back to its last whole frame.

        If that cut-back fails too, nothing more is appended until it succeeds: a frame written
        behind a torn one is lost at the next start (reading stops at the torn frame), and the
        retried batch behind a whole-but-unsynced one is stored twice.
        """
        if self._leftover:
            self._truncate(self.size)  # the last failed append's bytes; raises while it still cannot
        data = memoryview(encode(frame))
        fd = self._f.fileno()
        try:
            done = 0
            while done < len(data):  # a nearly full disk takes part of a write and refuses the rest
                n = os.write(fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                done += n
            os.fdatasync(fd)
        except OSError:
            try:
                self._truncate(self.size)
            except OSError as exc:
                self._leftover = True
                log.error("%s: could not cut a failed append back (retried before the next): %s", self.path, exc)
            raise
        self.size += len(data)

    def clear(self) -> None:
        """Everything in the journal is in SQLite now (no fsync: a stale frame is skipped by number)."""
        self._truncate(0)

    def _truncate(self, size: int) -> None:
        os.ftruncate(self._f.fileno(), size)
        self._f.seek(size)
        self.size = size
        self._leftover = False  # nothing past size any more

    def close(self) -> None:
        self._f.close()
