"""The emulated 370's ledger: a reading counts once all three of its replies left whole.

A 370 answers one query per message (``ls370_commands``), so a client reads a channel in three
exchanges: ``RDGK?``, ``RDGR?``, then ``RDGST?``, without which no reading can be judged valid.
A kelvin or resistance reply whose ``RDGST?`` never arrived (a garbled reply, a pulled cable in
between) is not a reading the instrument delivered: it is held here until its channel's
``RDGST?`` leaves whole, and dropped (counted as faulted) when anything spoils the group. A
group is the appliance's reading, in its order: ``RDGK?`` begins it, ``RDGR?`` adds to it. The
372 sends the three in one message, so its ledger (``ledger.Ledger``) needs no grouping. A group
holding a reply the ``slow`` fault held back is counted *late* once it completes, as the 372's are.
"""

from __future__ import annotations

from array import array

from .ledger import QUANTITY, Ledger, _channel
from .protocol import ExecutionError, parse_message


class ReadingLedger(Ledger):
    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[str, dict[str, float]] = {}  # channel -> the group's replies so far
        # channels whose group holds a reply the ``slow`` fault held back: the client may have
        # waited for it (a 0.3 s delay under a 1 s timeout) and stored the reading, so the group
        # still completes, but it counts as *late* (its values are not kept), as the 372's do
        self.pending_late: set[str] = set()

    def note(self, line: str, reply: str, delivered: bool, late: bool) -> None:
        try:
            parts = [p for p in (parse_message(x) for x in line.split(";")) if p[0]]
        except ExecutionError:
            return
        queries = [p for p in parts if p[0].endswith("?")]
        if not queries:
            return
        name, args = queries[-1]  # the one query a 370 message is answered for
        if not args or (name not in QUANTITY and name != "RDGST?"):
            return
        try:
            ch = _channel(args[0])
        except ValueError:
            return
        with self._lock:
            if not delivered:
                self.pending.pop(ch, None)
                self.pending_late.discard(ch)
                if name in QUANTITY:
                    self.faulted += 1
                return
            if name == "RDGST?":
                group = self.pending.pop(ch, {})
                held = late or ch in self.pending_late
                self.pending_late.discard(ch)
                for q, v in group.items():
                    if held:
                        self.late[(ch, q)] = self.late.get((ch, q), 0) + 1
                    else:
                        self.values.setdefault((ch, q), array("d")).append(v)
                return
            try:
                value = float(reply)
            except ValueError:
                return
            if QUANTITY[name] == "kelvin":
                self.pending[ch] = {"kelvin": value}  # a reading starts with its kelvin query
                self.pending_late.discard(ch)
            elif ch in self.pending:  # a group has begun: a lone RDGR? (a spoiled RDGK?) is none
                self.pending[ch]["sensor"] = value
            else:
                return
            if late:
                self.pending_late.add(ch)
