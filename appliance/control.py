"""Changing instrument state from the network: off unless `control.enabled`, then token-protected.

One operation for now, the one a fridge operator reaches for from the control room: the 372's
sample-heater (output 0) or warm-up heater (output 1) setpoint, bounded by
`control.max_setpoint_kelvin`. The token comes from a 0600 file; requests carry it as
``Authorization: Bearer <token>`` (never in a URL, so it stays out of logs and browser history,
and a cross-site form cannot send it). Every change is recorded as an event.
"""

from __future__ import annotations

import hmac
import logging
import math

from drivers import DriverError
from drivers.ls372 import Model372

from .config import ControlConfig, read_secret
from .poller import LinkUnavailable

log = logging.getLogger("kelvinpi.control")


class ControlRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Control:
    def __init__(self, cfg: ControlConfig, pollers, store) -> None:
        self.cfg, self.store = cfg, store
        self.pollers = {p.cfg.name: p for p in pollers}
        self.token = read_secret(cfg.token_file, "control.token_file") if cfg.enabled else None

    def authorize(self, header: str | None) -> None:
        if not self.cfg.enabled:
            raise ControlRefused(
                403,
                "instrument control is disabled on this appliance "
                "(set control.enabled = true and control.token_file in kelvinpi.toml)",
            )
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ControlRefused(401, "give the control token as 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ControlRefused(401, "wrong control token")

    @staticmethod
    def on_link(poller, fn, what: str, timeout: float = 30.0):
        """Run ``fn(instrument)`` through the instrument's poller, the one owner of its link."""
        try:
            return poller.call(fn, what, timeout)
        except LinkUnavailable as exc:
            raise ControlRefused(503, str(exc)) from None
        except DriverError as exc:
            raise ControlRefused(503, f"{poller.cfg.name}: {exc}") from None

    def set_setpoint(self, node: str, body: dict, who: str) -> dict:
        poller = self.pollers.get(node)
        if poller is None:
            raise ControlRefused(404, f"no instrument named {node!r}")
        inst = poller.instrument
        outputs = getattr(inst, "heater_outputs", ())  # declared by the driver (the 240 has none)
        if not outputs:
            raise ControlRefused(400, f"{node} is a Model {poller.cfg.model}: only a 372 has heaters to set")
        output, kelvin = body.get("output", 0), body.get("kelvin")
        if isinstance(output, bool) or output not in outputs:
            raise ControlRefused(400, "output must be 0 (sample heater) or 1 (warm-up heater)")
        if (
            isinstance(kelvin, bool)
            or not isinstance(kelvin, (int, float))
            or not math.isfinite(kelvin)
            or not 0 <= kelvin <= self.cfg.max_setpoint_kelvin
        ):
            raise ControlRefused(
                400,
                f"kelvin must be a number from 0 to {self.cfg.max_setpoint_kelvin:g} "
                f"(control.max_setpoint_kelvin), got {kelvin!r}",
            )

        def change(inst: Model372) -> tuple[float, float]:
            before = inst.setpoint(output)
            inst.set_setpoint(output, float(kelvin))
            return before, inst.setpoint(output)

        before, after = self.on_link(poller, change, f"setpoint output {output}")
        detail = f"setpoint output {output}: {before:g} K -> {after:g} K (by {who})"
        log.warning("%s: %s", node, detail)
        self.store.event("control", node, detail)
        return {"node": node, "output": output, "before": before, "setpoint": after}
