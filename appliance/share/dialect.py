"""What the share must know of each model's line protocol, declared once per model (``DIALECTS``).

The share forwards clients' lines unchanged; it only needs to know which parts it must handle
itself or look at: the status register (``*ESR?``, kept per client), which queries are readings
the poller may already have answered this cycle, how to read a setting back for the audit, and
which settings change what the acquisition reads (the 372's scanner and inputs). A new model
is one ``Dialect`` and one row in ``DIALECTS``; the config refuses a share on a model without one
(a gauge controller's protocol is not a Lake Shore line protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dialect:
    """One model's protocol facts the share acts on."""

    model: str
    # the instrument keeps an IEEE 488.2 event status register: ``*ESR?`` (read and clear)
    has_esr: bool
    # a query every instrument of the model answers: appended to a forwarded line when the model has
    # no ESR, so the link always carries a reply and a refused part can never time the link out
    sentinel: str = "*IDN?"
    # reading queries whose answer the poller's own exchange of this cycle may give
    readings: frozenset[str] = frozenset()
    # setting mnemonic -> how many leading arguments address it (its query is "<MNEMONIC>? <those>")
    readback: dict[str, int] = field(default_factory=dict)
    # settings after which the acquisition plans again (which inputs, their pause, the scanner)
    replan: frozenset[str] = frozenset()
    # settings that move the scanner: the readings inside the new channel's pause are displaced
    scanner: frozenset[str] = frozenset()
    # a CR alone ends a message as LF does (the 336's and 350's: FIDELITY 336-28); else LF ends it
    # (CR LF too: the CR before the LF is dropped)
    cr_ends_line: bool = False
    # what ends the instrument's answers (every Lake Shore model: CR LF)
    terminator: bytes = b"\r\n"

    def esr_reply(self, value: int) -> str:
        """``*ESR?``'s answer as the instrument prints it (the 372: a plain integer, ``32``)."""
        return str(value)

    def readback_query(self, mnemonic: str, args: list[str]) -> str | None:
        """The query that reads the setting ``mnemonic args`` back, or None when none is declared."""
        n = self.readback.get(mnemonic)
        if n is None or len(args) < n:
            return None
        head = mnemonic + "?"
        return f"{head} {','.join(args[:n])}" if n else head


LS372 = Dialect(
    "372",
    has_esr=True,
    readings=frozenset({"KRDG?", "RDGK?", "RDGR?", "SRDG?", "RDGST?", "RDGPWR?", "QRDG?", "SCAN?", "HTR?"}),
    readback={
        "SCAN": 0,
        "INSET": 1,
        "INTYPE": 1,
        "INCRV": 1,
        "FILTER": 1,
        "INNAME": 1,
        "TLIMIT": 1,
        "OUTMODE": 1,
        "RANGE": 1,
        "HTRSET": 1,
        "PID": 1,
        "SETP": 1,
        "MOUT": 1,
        "RAMP": 1,
        "STILL": 0,
        "FREQ": 1,
        "CMR": 0,
        "WARMUP": 0,
        "EMUL": 0,
        "MODE": 0,
        "DISPLAY": 0,
        "IEEE": 0,
        "*ESE": 0,
        "CRVHDR": 1,
        "CRVPT": 2,
    },
    replan=frozenset({"SCAN", "INSET", "INTYPE", "*RST"}),
    scanner=frozenset({"SCAN", "INSET", "*RST"}),
)

LS240 = Dialect(
    "240",
    has_esr=False,  # 240 manual: no error register; a refused command is silent
    readings=frozenset({"KRDG?", "SRDG?", "CRDG?", "FRDG?", "RDGST?"}),
    readback={"INTYPE": 1, "INNAME": 1, "MODNAME": 0, "BRIGT": 0, "CRVHDR": 1, "CRVPT": 2},
    replan=frozenset({"INTYPE"}),
)

# the 336 and 350 speak one dialect (drivers/ls336.py): inputs A-D (D1-D5 with the 3062), outputs 1-4
_LS336_READBACK = {
    "SETP": 1,
    "RANGE": 1,
    "PID": 1,
    "MOUT": 1,
    "OUTMODE": 1,
    "HTRSET": 1,
    "RAMP": 1,
    "INTYPE": 1,
    "INNAME": 1,
    "INCRV": 1,
    "FILTER": 1,
    "TLIMIT": 1,
    "DISPLAY": 0,
    "MODE": 0,
    "*ESE": 0,
    "CRVHDR": 1,
    "CRVPT": 2,
}
LS336 = Dialect(
    "336",
    has_esr=True,
    readings=frozenset({"KRDG?", "SRDG?", "CRDG?", "RDGST?", "HTR?", "AOUT?"}),
    readback=_LS336_READBACK,
    replan=frozenset({"INTYPE", "*RST"}),
    cr_ends_line=True,
)
LS350 = Dialect(
    "350",
    LS336.has_esr,
    readings=LS336.readings,
    readback=_LS336_READBACK,
    replan=LS336.replan,
    cr_ends_line=LS336.cr_ends_line,
)

DIALECTS: dict[str, Dialect] = {"372": LS372, "240": LS240, "336": LS336, "350": LS350}


def dialect_for(model: str) -> Dialect:
    """The model's dialect; the config refuses ``[instrument.share]`` on a model without one."""
    return DIALECTS[model]
