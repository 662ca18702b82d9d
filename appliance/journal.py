"""The store's journal: an fsynced append-only file that makes each second's readings durable.

SQLite in WAL mode with ``synchronous=FULL`` writes 1.5 pages and an fsync per commit; at one
commit a second that is more than twice what an fsynced append-only log costs an SD card. So
the writer appends each batch here (one frame, one ``fdatasync``), keeps it in memory for
readers, and moves it into SQLite in one transaction about once a minute; after that
transaction the journal is emptied. On start-up, frames SQLite has not taken yet are replayed.

Frame: ``<length u32><crc32 u32><frame number u64>`` then the payload: ``<n samples u32>``,
n × ``<seq i64><series u32><t_ms i64><value f64><status u32>`` (NaN for a NULL value, which the
store only ever keeps for flagged readings), then the records (events, snapshots, cursor
moves) as JSON. A frame cut short by a power cut fails its length or CRC and ends the replay.
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

log = logging.getLogger("kelvinpi.journal")

_HEAD = struct.Struct("<IIQ")
_COUNT = struct.Struct("<I")
_SAMPLE = struct.Struct("<qIqdI")
NAN = float("nan")


@dataclass
class Frame:
    number: int
    rows: list[tuple[int, int, int, float | None, int]] = field(default_factory=list)  # (seq, sid, t, v, st)
    records: list[list] = field(default_factory=list)


def encode(frame: Frame) -> bytes:
    parts = [_COUNT.pack(len(frame.rows))]
    pack = _SAMPLE.pack
    parts += [pack(seq, sid, t, NAN if v is None else v, st) for seq, sid, t, v, st in frame.rows]
    if frame.records:
        parts.append(json.dumps(frame.records, separators=(",", ":")).encode())
    payload = b"".join(parts)
    return _HEAD.pack(len(payload), zlib.crc32(payload), frame.number) + payload


def decode_all(data: bytes) -> tuple[list[Frame], int]:
    """Whole frames from the start of ``data``, and the length they take (a torn tail is left out)."""
    frames, pos = [], 0
    while pos + _HEAD.size <= len(data):
        length, crc, number = _HEAD.unpack_from(data, pos)
        payload = data[pos + _HEAD.size:pos + _HEAD.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        (n,) = _COUNT.unpack_from(payload)
        end = _COUNT.size + n * _SAMPLE.size
        rows = [(seq, sid, t, None if math.isnan(v) else v, st)
                for seq, sid, t, v, st in _SAMPLE.iter_unpack(payload[_COUNT.size:end])]
        records = json.loads(payload[end:]) if len(payload) > end else []
        frames.append(Frame(number, rows, records))
        pos += _HEAD.size + length
    return frames, pos


class Journal:
    """One append-only file beside the store (``<store>-journal``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._f = open(self.path, "ab", buffering=0)
        self.size = self._f.tell()

    def read(self) -> list[Frame]:
        """Every whole frame; a torn tail (a power cut mid-append) is cut off the file."""
        data = self.path.read_bytes()
        frames, good = decode_all(data)
        if good < len(data):
            log.warning("%s: %d bytes of a frame cut short (power cut mid-write) dropped after %d whole frames",
                        self.path, len(data) - good, len(frames))
            self._truncate(good)
        return frames

    def append(self, frame: Frame) -> None:
        """Durable when this returns (fdatasync); on failure the file is cut back to its last whole frame."""
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
                log.error("%s: could not cut a failed append back: %s", self.path, exc)
            raise
        self.size += len(data)

    def clear(self) -> None:
        """Everything in the journal is in SQLite now (no fsync: a stale frame is skipped by number)."""
        self._truncate(0)

    def _truncate(self, size: int) -> None:
        os.ftruncate(self._f.fileno(), size)
        self._f.seek(size)
        self.size = size

    def close(self) -> None:
        self._f.close()
