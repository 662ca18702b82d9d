"""Calibration curves through the authenticated control API: list, show, upload, verify, delete.

The operations; their routes (and their OpenAPI description) are in appliance/web/curves.py.

Every request is carried out by the instrument's poller (the one owner of its link) between
poll cycles, so an upload never interleaves with a reading. Upload writes every breakpoint,
reads every one back and refuses (HTTP 409) naming the first point that differs; a changed
curve makes the poller take a configuration snapshot at once, so exports name the new header.

Routes (all need ``Authorization: Bearer <token>`` and ``[control] enabled``):

- ``GET    /api/v1/control/<node>/curves``             headers of every curve in use or stored
- ``GET    /api/v1/control/<node>/curves/<n>``         header and points, and the curve as ``.340`` text
- ``PUT    /api/v1/control/<node>/curves/<n>``         body ``{"text": "<.340 file>"}``: upload and read back
- ``POST   /api/v1/control/<node>/curves/<n>/verify``  body ``{"text": ...}``: compare, change nothing
- ``DELETE /api/v1/control/<node>/curves/<n>``         delete a user curve
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from drivers import DriverError, InstrumentError
from drivers.curves import Curve, CurveError, parse_340, write_340
from drivers.curve_commands import CurveCommands

from .control import ControlRefused
from .poller import LinkUnavailable

log = logging.getLogger("kelvinpi.curves")

UPLOAD_TIMEOUT = 120.0  # 200 points at the 372's 65 ms pacing, read back: about 40 s


def same_point(inst: CurveCommands, wrote: tuple[float, float], got: tuple[float, float]) -> bool:
    """Equal at the instrument's resolution (the 240 keeps six digits, integer digits included)."""
    return all(inst.same_curve_value(a, b) for a, b in zip(wrote, got))


def first_difference(inst, want: Curve, got: Curve) -> str | None:
    """What differs between a file's curve and the instrument's, first header then points; None if equal."""
    wanted = (want.name[:15], want.serial[:10], want.data_format, round(want.limit, 3))
    have = (got.name, got.serial, got.data_format, round(got.limit, 3))
    if wanted != have:
        return f"header differs: file {wanted}, instrument {have}"
    for i, (w, g) in enumerate(zip(want.points, got.points), 1):
        if not same_point(inst, w, g):
            return f"point {i} differs: file ({w[0]:.6g}, {w[1]:.6g}), instrument ({g[0]:.6g}, {g[1]:.6g})"
    if len(want.points) != len(got.points):
        return f"the file has {len(want.points)} points, the instrument {len(got.points)}"
    return None


def _curve_dict(curve: Curve) -> dict:
    return {
        "name": curve.name,
        "serial": curve.serial,
        "format": curve.data_format,
        "limit": curve.limit,
        "coefficient": curve.coefficient,
        "points": [list(p) for p in curve.points],
    }


class CurveService:
    """The curve operations; each runs ``fn(instrument)`` on the instrument's poller thread."""

    def __init__(self, control) -> None:
        self.control = control

    def _poller(self, node: str):
        poller = self.control.pollers.get(node)
        if poller is None:
            raise ControlRefused(404, f"no instrument named {node!r}")
        return poller

    def _number(self, poller, number: int, write: bool) -> int:
        inst = poller.instrument
        allowed = inst.user_curve_slots if write else inst.curve_slots
        if number not in allowed:
            what = inst.user_curves_label if write else "curves"
            raise ControlRefused(400, f"{poller.cfg.name}: {what} are {allowed.start}-{allowed.stop - 1}, not {number}")
        return number

    @staticmethod
    def _run(poller, fn, what: str, timeout: float = 30.0):
        try:
            return poller.call(fn, what, timeout)
        except LinkUnavailable as exc:
            raise ControlRefused(503, str(exc)) from None
        except InstrumentError as exc:
            raise ControlRefused(409, f"{poller.cfg.name}: {exc}") from None
        except DriverError as exc:
            raise ControlRefused(503, f"{poller.cfg.name}: {exc}") from None
        except (ValueError, CurveError) as exc:
            raise ControlRefused(400, f"{poller.cfg.name}: {exc}") from None

    @staticmethod
    def _parse(body: dict, number: int) -> Curve:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ControlRefused(400, 'give the curve file as {"text": "<contents of the .340 file>"}')
        try:
            return parse_340(text, body.get("filename") or f"curve {number}")
        except CurveError as exc:
            raise ControlRefused(400, str(exc)) from None

    def list(self, node: str) -> dict:
        poller = self._poller(node)

        def headers(inst) -> list[dict]:
            out = []
            for n in inst.curve_slots:
                h = inst.curve_header(n)
                # An empty slot: format 0 (240), or a blank header over no breakpoints (a 372 keeps
                # "User Curve", format 4 in an empty slot; firmware_host/FIDELITY.md, 372 row 13).
                if h.data_format and inst.curve_point(n, 1) != (0.0, 0.0):
                    out.append({"number": n, **asdict(h)})
            return out

        return {"node": node, "curves": self._run(poller, headers, "curve list")}

    def show(self, node: str, number: int) -> dict:
        poller = self._poller(node)
        n = self._number(poller, number, write=False)
        curve = self._run(poller, lambda inst: inst.download_curve(n), f"curve {n} download", 60.0)
        return {"node": node, "number": n, "curve": _curve_dict(curve), "text": write_340(curve)}

    def upload(self, node: str, number: int, body: dict, who: str) -> dict:
        poller = self._poller(node)
        n = self._number(poller, number, write=True)
        curve = self._parse(body, n)
        inst = poller.instrument
        allowed = inst.curve_formats
        if curve.data_format not in allowed:
            raise ControlRefused(
                400,
                f"data format {curve.data_format} cannot be stored in a Model "
                f"{poller.cfg.model} (formats {', '.join(map(str, allowed))})",
            )

        def upload(inst) -> Curve:
            inst.upload_curve(n, curve, verify=False)
            got = inst.download_curve(n)  # every point read back
            diff = first_difference(inst, curve, got)
            if diff:
                raise InstrumentError(f"curve {n} read back wrong, {diff}")
            return got

        got = self._run(poller, upload, f"curve {n} upload", UPLOAD_TIMEOUT)
        poller.snapshot_due = True  # the next configuration snapshot names the new header
        detail = f"curve {n} uploaded: {got.name} {got.serial}, {len(got.points)} points (by {who})"
        log.warning("%s: %s", node, detail)
        self.control.store.event("control", node, detail)
        return {"node": node, "number": n, "points": len(got.points), "name": got.name, "serial": got.serial}

    def verify(self, node: str, number: int, body: dict) -> dict:
        poller = self._poller(node)
        n = self._number(poller, number, write=False)
        curve = self._parse(body, n)
        got = self._run(poller, lambda inst: inst.download_curve(n), f"curve {n} verify", 60.0)
        diff = first_difference(poller.instrument, curve, got)
        return {"node": node, "number": n, "same": diff is None, "difference": diff, "points": len(got.points)}

    def delete(self, node: str, number: int, who: str) -> dict:
        poller = self._poller(node)
        n = self._number(poller, number, write=True)
        self._run(poller, lambda inst: inst.delete_curve(n), f"curve {n} delete")
        poller.snapshot_due = True
        detail = f"curve {n} deleted (by {who})"
        log.warning("%s: %s", node, detail)
        self.control.store.event("control", node, detail)
        return {"node": node, "number": n, "deleted": True}
