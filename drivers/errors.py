"""Typed driver errors: each says what happened, so the poller can count them by kind."""

from __future__ import annotations


class DriverError(Exception):
    """Base class of every error the drivers raise."""

    kind = "error"


class InstrumentTimeout(DriverError):
    """No complete reply arrived within the timeout."""

    kind = "timeout"


class ConnectionLost(DriverError):
    """The link to the instrument broke (peer closed, USB unplugged, socket reset)."""

    kind = "connection"


class BadReply(DriverError):
    """A reply arrived but does not parse; ``raw`` keeps the exact bytes received."""

    kind = "bad_reply"

    def __init__(self, message: str, raw: bytes = b"", query: str = "") -> None:
        self.raw = raw
        self.query = query
        detail = f"{message}: got {raw!r}"
        if query:
            detail += f" in reply to {query!r}"
        super().__init__(detail)


class WrongInstrument(DriverError):
    """``*IDN?`` names another model or another serial number than expected."""

    kind = "wrong_instrument"


class InstrumentError(DriverError):
    """The instrument refused a command (ESR error bits, or a read-back mismatch)."""

    kind = "instrument_error"

    def __init__(self, message: str, esr: int | None = None) -> None:
        self.esr = esr
        super().__init__(message)
