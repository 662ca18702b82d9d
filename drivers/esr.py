"""Settings sent with ``;*ESR?``: the IEEE 488.2 status register as a model's refusal channel.

A Lake Shore controller with an event register (372, 336, 350) never answers a bad command; it only
sets a bit in the Standard Event Status Register. Every setting is therefore sent as ``CMD;*ESR?``
and the register decoded, so a command the instrument ignored raises ``InstrumentError`` at the call
instead of passing silently. One mixin for every such model, so they refuse alike.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from .commands import Query, flag
from .errors import InstrumentError
from .parse import parse_int

# *ESR? bits (IEEE 488.2; lakeshore StandardEventRegister).
ESR_OPC, ESR_QUERY_ERROR, ESR_EXECUTION_ERROR, ESR_COMMAND_ERROR, ESR_POWER_ON = 1, 4, 16, 32, 128
ESR_ERRORS = {
    ESR_QUERY_ERROR: "query error",
    ESR_EXECUTION_ERROR: "execution error",
    ESR_COMMAND_ERROR: "command error (invalid command or query)",
}

if TYPE_CHECKING:
    from .base import Pacing


class EsrCommands:
    """``command``, ``*ESR?``, ``*CLS``, ``*RST`` and ``*OPC?`` for a model with an event register."""

    model_label: ClassVar[str] = ""  # how a refusal names the instrument ("372")

    if TYPE_CHECKING:  # provided by Instrument
        pacing: Pacing

        def query_raw(self, message: str) -> bytes: ...

        def write(self, message: str) -> None: ...

    esr = Query("*ESR?", parse_int, "Get (and clear) the Standard Event Status Register.")
    operation_complete = Query("*OPC?", flag, "Get whether pending operations are complete (``*OPC?`` is 1).")

    @classmethod
    def _raise_for_esr(cls, esr: int, message: str) -> None:
        errors = [name for bit, name in ESR_ERRORS.items() if esr & bit]
        if errors:
            raise InstrumentError(f"{cls.model_label} refused {message!r}: {', '.join(errors)} (ESR={esr})", esr)

    def command(self, message: str) -> None:
        """Send a configuration command and raise if the instrument flags it in ESR."""
        q = f"{message};*ESR?"
        esr = parse_int(self.query_raw(q), q)
        self._raise_for_esr(esr, message)
        time.sleep(self.pacing.after_command)

    def _send_setting(self, message: str) -> None:
        """Curve commands go through the ESR check like every other setting."""
        self.command(message)

    def clear_status(self) -> None:
        self.write("*CLS")

    def reset(self) -> None:
        self.write("*RST")
