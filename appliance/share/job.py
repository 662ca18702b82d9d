"""A client's line as the exchanger carries it out: steps, each at most one setting or one exchange.

A line is cut into steps the poller takes one at a time, in rotation with the other clients'
steps and within the time left before its next cycle: a line of 200 settings is 200 steps, so it
costs each turn one step's time and never holds the link while others wait (issue 26). The
steps of one line stay in order, and a client's next line starts only when this one is answered.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .lines import Part, parse_line

LOCAL = ("esr", "cls")  # answered by the share from the client's own status register


@dataclass
class Step:
    """``query``: consecutive queries, one exchange; ``setting``: one setting (its read-backs with it);
    ``esr`` / ``cls``: the client's own ``*ESR?`` / ``*CLS``, never sent."""

    kind: str
    parts: list[Part]

    @property
    def exchanges(self) -> int:
        """The link exchanges this step may take: what it is charged before it starts."""
        return 0 if self.kind in LOCAL else 3 if self.kind == "setting" else 1


@dataclass
class LineJob:
    """One client line under way: what is left of it and its answers so far."""

    session: Any  # session.ClientSession
    line: str
    received: float  # monotonic time the line arrived
    epoch: int  # the link's epoch when it arrived: a line from before an outage is not carried out after it
    steps: deque[Step] = field(default_factory=deque)
    answers: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # its settings carried out so far (each audited)


def steps_of(line: str, has_esr: bool) -> deque[Step]:
    """The line's steps, in order: runs of queries batched into one exchange, each setting alone."""
    out: deque[Step] = deque()
    batch: list[Part] = []
    for p in parse_line(line):
        local = has_esr and p.mnemonic in ("*ESR?", "*CLS")
        if p.is_query and not local:
            batch.append(p)
            continue
        if batch:
            out.append(Step("query", batch))
            batch = []
        out.append(Step("esr" if p.mnemonic == "*ESR?" else "cls", [p]) if local else Step("setting", [p]))
    if batch:
        out.append(Step("query", batch))
    return out
