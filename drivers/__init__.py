"""Lake Shore Model 372 / 240 drivers.

Transport (how bytes move: TCP, pyserial, pyvisa) is kept apart from the
instrument models (what the bytes mean), so the same ``Model372`` talks to a
real bridge over Ethernet, USB serial, or a VISA resource.
"""

from .errors import (
    BadReply,
    ConnectionLost,
    DriverError,
    InstrumentError,
    InstrumentTimeout,
    WrongInstrument,
)
from .readings import Reading

__all__ = [
    "BadReply",
    "ConnectionLost",
    "DriverError",
    "InstrumentError",
    "InstrumentTimeout",
    "Reading",
    "WrongInstrument",
]
