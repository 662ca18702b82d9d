"""Byte-transcript testing in pymeasure's ``expected_protocol`` manner.

``TranscriptTransport([(sent, reply), ...])`` plays the instrument: each line the
driver writes must equal the next ``sent`` (without terminator), and the next
read returns ``reply``; a ``reply`` of None means the command expects no reply.
``expected_protocol`` asserts the whole transcript was consumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import InstrumentTimeout


class TranscriptTransport:
    description = "transcript"

    def __init__(self, pairs: list[tuple[str | bytes, str | bytes | None]]) -> None:
        self.pairs = [(_b(s), None if r is None else _b(r)) for s, r in pairs]
        self.pending: list[bytes] = []
        self.sent: list[bytes] = []

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def flush_input(self) -> None:
        self.pending.clear()

    def abandon(self) -> None:
        pass

    def reset(self, quiet: float) -> None:
        self.pending.clear()

    def write(self, data: bytes) -> None:
        assert data.endswith(b"\n"), f"line not terminated: {data!r}"
        line = data[:-1]
        if line == b"":
            return  # the bare terminator sent on connect
        self.sent.append(line)
        assert self.pairs, f"unexpected write {line!r}: transcript exhausted"
        expected, reply = self.pairs.pop(0)
        assert line == expected, f"sent {line!r}, transcript expects {expected!r}"
        if reply is not None:
            self.pending.append(reply)

    def read_line(self, timeout: float) -> bytes:
        if not self.pending:
            raise InstrumentTimeout("transcript: no reply queued")
        return self.pending.pop(0)


def _b(x: str | bytes) -> bytes:
    return x.encode("ascii") if isinstance(x, str) else x


@contextmanager
def expected_protocol(cls: Any, pairs: list, **kwargs: Any) -> Iterator:
    """Build ``cls`` on a transcript, run the body, then check nothing is left over."""
    transport = TranscriptTransport(pairs)
    kwargs.setdefault("pacing", None)
    inst = cls(transport, **kwargs)
    inst.pacing = type(inst.pacing)(0, 0, 0)
    yield inst
    assert not transport.pairs, f"transcript not consumed: {transport.pairs}"
    assert not transport.pending, f"replies not read: {transport.pending}"
