"""What the service knows of an uplink: it starts, it stops, it has a health (or none of its own).

Every uplink the builder returns (a push uplink with its own thread, a WAMP-backed one on the
shared loop, one that could not start) and the shared WAMP loop itself answer to this, so the
service starts, stops and reports them all in one loop without asking what each one is.
"""

from __future__ import annotations

from typing import Protocol

from ..health import UplinkHealth


class UplinkRunner(Protocol):
    @property
    def health(self) -> UplinkHealth | None:
        """What the front panel, /metrics and the alarms show; None for the WAMP loop (no uplink of its own)."""

    def start(self) -> None:
        """Begin delivering (returns at once: the work runs on a thread or the WAMP loop)."""

    def stop(self) -> None:
        """Stop delivering; what is not acknowledged stays in the store for the next run."""


class FailedUplink:
    """An uplink that could not start (e.g. a secret file readable by others): shown, never fatal.

    Polling and storing go on; the uplink's health carries the reason for the front panel.
    """

    def __init__(self, index: int, kind: str, error: str) -> None:
        self.health = UplinkHealth(f"uplink[{index}]", kind)
        self.health.last_error = error
        self.health.errors["config"] += 1

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
