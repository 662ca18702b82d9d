"""Changing instrument state from the network: off unless `control.enabled`, then token-protected.

The setpoint route is the one a fridge operator reaches for from the control room; the curve
operations (curve_api.py) and the declared settings (settings.py) go through the same gate and
the same ``Control.audited``. The token comes from a 0600 file; requests carry it as
``Authorization: Bearer <token>`` (never in a URL, so it stays out of logs and browser history,
and a cross-site form cannot send it).

Audit first, then act: every request writes a ``control`` event *before* it touches the
instrument (who: the socket's peer; what; the old value as last read) and a second one with its
outcome (applied, refused, failed, not carried out). The outcome is written by the poller's
thread when the request ends, so a request that outlives its HTTP answer (a slow curve upload)
still records how it ended, marked "after its answer". Both events carry the request's id.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drivers import DriverError, InstrumentError
from drivers.curves import CurveError
from drivers.ls372 import Model372

from .config import ControlConfig, read_secret
from .poller import LinkUnavailable, Poller

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("kelvinpi.control")


class ControlRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PartFailed(DriverError):
    """A multi-step request stopped part way; ``state`` says what the instrument was left holding."""

    outcome = "failed part way"

    def __init__(self, message: str, state: str, status: int = 503) -> None:
        super().__init__(message)
        self.state, self.status = state, status


@dataclass
class AuditedRequest:
    """One control request on record: ``id`` pairs its two events; the flags settle who writes the outcome."""

    id: str
    node: str
    who: str
    what: str
    started: bool = False  # the poller began carrying it out: the poller's thread records the outcome
    abandoned: bool = False  # never started and never will: the HTTP thread recorded the outcome
    answered: bool = False  # the HTTP answer went out (a timeout) while it was still running
    lock: threading.Lock = field(default_factory=threading.Lock)


def outcome_of(exc: BaseException) -> str:
    """How a request ended, in the audit log's words."""
    named = getattr(exc, "outcome", None)
    if isinstance(named, str):
        return named
    if isinstance(exc, (ControlRefused, InstrumentError, ValueError, CurveError)):
        return "refused"
    return "failed"


class Audit:
    """The two events of every control request (kind ``control``) and the log lines beside them."""

    _ids = itertools.count(1)

    def __init__(self, store: Store) -> None:
        self.store = store
        # a random prefix per run: ids stay distinct across restarts (a time modulo repeated every 27.8 h)
        self._prefix = uuid.uuid4().hex[:12]

    def begin(self, node: str, who: str, what: str, old: str) -> AuditedRequest:
        req = AuditedRequest(f"{self._prefix}-{next(self._ids)}", node, who, what)
        self._write(node, f"[{req.id}] requested by {who}: {what} (was {old})")
        return req

    def end(self, req: AuditedRequest, outcome: str, detail: str = "") -> None:
        late = " after its answer (the client was told it timed out)" if req.answered else ""
        self._write(req.node, f"[{req.id}] {outcome}{late}: {req.what}{': ' + detail if detail else ''} (by {req.who})")

    def _write(self, node: str, detail: str) -> None:
        log.warning("%s: %s", node, detail)
        self.store.event("control", node, detail)


class Control:
    def __init__(self, cfg: ControlConfig, pollers: Sequence[Poller], store: Store) -> None:
        self.cfg, self.store = cfg, store
        self.pollers = {p.cfg.name: p for p in pollers}
        # the config refuses control.enabled without token_file
        self.token = read_secret(cfg.token_file, "control.token_file") if cfg.enabled and cfg.token_file else None
        self.audit = Audit(store)
        # what each setting last read as, by (node, setting, target): the "was" of the next request
        self.last_read: dict[tuple[str, str, str], Any] = {}
        # the curve slots marked incomplete, per node, as stored (curve_api.py; reloaded at start)
        self.curve_marks: dict[str, dict] = {}
        self.curve_marks_lock = threading.Lock()

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
        assert self.token is not None
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ControlRefused(401, "wrong control token")

    def poller(self, node: str) -> Poller:
        poller = self.pollers.get(node)
        if poller is None:
            raise ControlRefused(404, f"no instrument named {node!r}")
        return poller

    @staticmethod
    def on_link(poller: Poller, fn: Callable[[Any], Any], what: str, timeout: float = 30.0) -> Any:
        """Run ``fn(instrument)`` through the instrument's poller, the one owner of its link (reads)."""
        try:
            return poller.call(fn, what, timeout)
        except BaseException as exc:
            raise refusal(poller, exc) from None

    def audited(
        self,
        poller: Poller,
        who: str,
        what: str,
        old: str,
        fn: Callable[[Any], Any],
        timeout: float = 30.0,
        applied: Callable[[Any], str] = lambda result: "",
    ) -> Any:
        """Run a change ``fn(instrument)`` on the poller, with its two audit events.

        The first is written here, before the request is queued. The second is written by the
        poller's thread when ``fn`` ends, however long after this call gave up waiting; if the
        request never started (the link went down, the wait ran out first) it is written here,
        and the poller then skips it.
        """
        req = self.audit.begin(poller.cfg.name, who, what, old)

        def run(inst):
            with req.lock:
                if req.abandoned:
                    raise LinkUnavailable(f"{poller.cfg.name}: {what} was given up before it started")
                req.started = True
            try:
                result = fn(inst)
            except BaseException as exc:
                with req.lock:
                    self.audit.end(req, outcome_of(exc), getattr(exc, "state", None) or str(exc))
                raise
            with req.lock:
                self.audit.end(req, "applied", applied(result))
            return result

        try:
            return poller.call(run, what, timeout)
        except LinkUnavailable as exc:
            with req.lock:
                if not req.started:
                    req.abandoned = True
                    self.audit.end(req, "not carried out", str(exc))
                else:
                    req.answered = True  # still running: its outcome is written when it ends
            raise refusal(poller, exc) from None
        except BaseException as exc:
            raise refusal(poller, exc) from None

    def check_setpoint(self, node: str, inst: Any, output: int, value: float) -> None:
        """Refuse a setpoint the kelvin cap cannot judge, or one above it (run on the poller, before SETP).

        The 372 takes SETP in the control input's units: ``max_setpoint_kelvin`` bounds a kelvin
        value only, so while that input reads in ohms the appliance refuses the setpoint outright.
        """
        if hasattr(inst, "setpoint_units"):  # a 370: CSET says the setpoint's units, not an input's type
            if inst.setpoint_units(output) != 1:
                raise ControlRefused(
                    400,
                    f"{node} output {output} controls in ohms: the appliance bounds setpoints in kelvin only "
                    "(control.max_setpoint_kelvin), so it does not set one in ohms; set the control setup's "
                    "units to kelvin (control_setup units=1) first",
                )
        else:
            ch = inst.output_mode(output).input
            # an output with no control input (a 336's factory OUTMODE 0,0,0) takes SETP as a plain
            # kelvin value: there is no input whose units could make it anything else
            units = inst.input_type(ch).units if ch else 1
            if units != 1:
                unit = getattr(inst, "units_words", _UNIT_WORDS).get(units, f"units code {units}")
                raise ControlRefused(
                    400,
                    f"{node} output {output} controls from input {ch}, which reads in {unit}: the appliance bounds "
                    "setpoints in kelvin only (control.max_setpoint_kelvin), so it does not set one in "
                    f"{unit}; set input {ch}'s units to kelvin (input_type units=1) first",
                )
        if value > self.cfg.max_setpoint_kelvin:
            raise ControlRefused(
                400,
                f"value is at most {self.cfg.max_setpoint_kelvin:g} K (control.max_setpoint_kelvin), not {value:g}",
            )

    def set_setpoint(self, node: str, body: dict, who: str) -> dict:
        poller = self.poller(node)
        inst = poller.instrument
        outputs = getattr(inst, "heater_outputs", ())  # declared by the driver (the 240 has none)
        if not outputs:
            raise ControlRefused(400, f"{node} is a Model {poller.cfg.model}: only a 372 has heaters to set")
        # the outputs are the model's own (372: 0 sample, 1 warm-up; 336/350: 1-4; 370: 0), the first the default
        output, kelvin = body.get("output", outputs[0]), body.get("kelvin")
        if isinstance(output, bool) or output not in outputs:
            names = getattr(inst, "heater_output_names", {})
            each = [f"{o} ({names[o]})" if o in names else str(o) for o in outputs]
            listed = each[0] if len(each) == 1 else ", ".join(each[:-1]) + " or " + each[-1]
            raise ControlRefused(
                400, f"output must be {listed} (the Model {poller.cfg.model}'s outputs), got {output!r}"
            )
        if isinstance(kelvin, bool) or not isinstance(kelvin, (int, float)) or not _finite(kelvin) or not kelvin >= 0:
            raise ControlRefused(
                400,
                f"kelvin must be a number from 0 to {self.cfg.max_setpoint_kelvin:g} "
                f"(control.max_setpoint_kelvin), got {kelvin!r}",
            )

        def change(inst: Model372) -> tuple[float, float]:
            self.check_setpoint(node, inst, output, float(kelvin))
            before = inst.setpoint(output)
            inst.set_setpoint(output, float(kelvin))
            return before, inst.setpoint(output)

        key = (node, "setpoint", str(output))
        old = self.last_read.get(key)
        before, after = self.audited(
            poller,
            who,
            f"setpoint output {output} to {float(kelvin):g} K",
            "not read yet" if old is None else f"{old['value']:g} K",
            change,
            applied=lambda r: f"setpoint output {output}: {r[0]:g} K -> {r[1]:g} K",
        )
        self.last_read[key] = {"value": after}  # the settings API's shape: both write and read this key
        return {"node": node, "output": output, "before": before, "setpoint": after}


# INTYPE's units field where the driver does not name its own (``units_words``): the 372's 1 kelvin, 2 ohms
_UNIT_WORDS = {1: "kelvin", 2: "ohms"}


def _finite(value: int | float) -> bool:
    """Finite and within a float's range (math.isfinite raises OverflowError for a 400-digit integer)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def refusal(poller: Poller, exc: BaseException) -> ControlRefused:
    """The HTTP answer for an error of a request run on ``poller``."""
    name = poller.cfg.name
    if isinstance(exc, ControlRefused):
        return exc
    if isinstance(exc, LinkUnavailable):
        return ControlRefused(503, str(exc))
    if isinstance(exc, PartFailed):
        return ControlRefused(exc.status, f"{name}: {exc}; {exc.state}")
    if isinstance(exc, InstrumentError):
        return ControlRefused(409, f"{name}: {exc}")
    if isinstance(exc, DriverError):  # a lost link after a write says what was done (``state``)
        state = getattr(exc, "state", None)
        return ControlRefused(503, f"{name}: {exc}" + (f"; {state}" if state else ""))
    if isinstance(exc, (ValueError, CurveError)):
        return ControlRefused(400, f"{name}: {exc}")
    raise exc
