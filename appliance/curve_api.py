"""Calibration curves through the authenticated control API: list, show, upload, verify, delete.

The operations; their routes (and their OpenAPI description) are in appliance/web/curves.py.

Every request is carried out by the instrument's poller (the one owner of its link) between
poll cycles, so an upload never interleaves with a reading. Upload writes every breakpoint,
reads every one back and refuses (HTTP 409) naming the first point that differs; a changed
curve makes the poller take a configuration snapshot at once, so exports name the new header.

Routes (all need ``Authorization: Bearer <token>`` and ``[control] enabled``):

- ``GET    /api/v1/control/<node>/curves``             headers of every curve in use or stored
- ``GET    /api/v1/control/<node>/curves/<n>``         header and points, and the curve as ``.340`` text
- ``PUT    /api/v1/control/<node>/curves/<n>``         body ``{"text": "<.340 file>", "force": false}``: upload, read back
- ``POST   /api/v1/control/<node>/curves/<n>/verify``  body ``{"text": ...}``: compare, change nothing
- ``DELETE /api/v1/control/<node>/curves/<n>[?force=true]``  delete a user curve

Never half written without a trace: before a slot is deleted (by a delete or an upload) its old
curve is read and kept in the store (a snapshot record under ``<node>/curve <n>``, with the
curve's content hash); replacing or deleting a curve an input uses needs ``force`` and the
refusal names the inputs. An upload that fails part way puts the old curve back when the link
still answers; when it does not, the slot is marked incomplete (health ``incomplete_curves`` and
the event log) until a verify or upload of that slot succeeds. The mark itself carries the old curve
(in memory and in its stored record), so the restore finds it however far behind the store is. Every change is audited
(``Control.audited``): the request before, the outcome after, even after the HTTP answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from drivers import InstrumentError
from drivers.base import text_problem
from drivers.curve_commands import CurveCommands
from drivers.curves import Curve, CurveError, parse_340, write_340
from drivers.errors import ConnectionLost, InstrumentTimeout

from .control import ControlRefused, PartFailed
from .store.records import Snapshot

if TYPE_CHECKING:
    from .control import Control
    from .poller import Poller
    from .store import Store

log = logging.getLogger("kelvinpi.curves")

UPLOAD_TIMEOUT = 120.0  # 200 points at the 372's 65 ms pacing, read back: about 40 s
RESTORE_FIRST_RETRY, RESTORE_MAX_RETRY = 1.0, 60.0  # the backoff between tries to put an old curve back

NAME_CHARS, SERIAL_CHARS = 15, 10  # what CRVHDR holds (both manuals): longer is refused, never cut
CHANNELS_372 = [str(i) for i in range(1, 17)] + ["A"]
AFTER_RESTART = " (still incomplete after a restart)"


def same_point(inst: CurveCommands, wrote: tuple[float, float], got: tuple[float, float]) -> bool:
    """Equal at the instrument's resolution (the 240 keeps six digits, integer digits included)."""
    return all(inst.same_curve_value(a, b) for a, b in zip(wrote, got, strict=False))


def first_difference(inst: Any, want: Curve, got: Curve) -> str | None:
    """What differs between a file's curve and the instrument's, first header then points; None if equal."""
    wanted = (want.name, want.serial, want.data_format, round(want.limit, 3))
    have = (got.name, got.serial, got.data_format, round(got.limit, 3))
    if wanted != have:
        return f"header differs: file {wanted}, instrument {have}"
    for i, (w, g) in enumerate(zip(want.points, got.points, strict=False), 1):
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


def _curve_of(c: dict) -> Curve:
    return Curve(c["name"], c["serial"], c["format"], c["limit"], c["coefficient"], [tuple(p) for p in c["points"]])


def _named(curve: Curve) -> str:
    return f"{curve.name} {curve.serial}, {len(curve.points)} points"


def snapshots_with_pending(store: Store, key: str) -> list[tuple[float, dict]]:
    """The snapshot records under ``key``, oldest first: SQLite's, then those still on their way
    (queued or journaled). ``Store.snapshots`` reads SQLite only, and a record waits there up to a
    commit interval, or for as long as the store cannot write (a full disk): a kept curve, a mark
    or the newest configuration must be found all that time."""
    out = list(store.snapshots(key))
    pending = getattr(store, "_pending", None)  # a Store's records not in SQLite yet
    if pending is not None:
        out += [(r.t, json.loads(r.config)) for r in pending(Snapshot) if r.node == key]
    return out


def curve_hash(curve: Curve) -> str:
    """The content hash a kept curve is stored under (its .340 text)."""
    return hashlib.sha256(write_340(curve).encode()).hexdigest()[:16]


def inputs_using(inst: Any, number: int) -> list[str]:
    """The inputs whose readings depend on curve ``number``.

    The 372 assigns curves with INSET's curve field; a 240's curve N belongs to its input N (it
    has no INCRV, 240 manual p.42), which uses it while enabled.
    """
    if hasattr(inst, "input_setup"):  # a 372, or a 370 (no input A)
        chans = [ch for ch in CHANNELS_372 if ch != "A" or getattr(inst, "has_control_input", True)]
        return [ch for ch in chans if inst.input_setup(ch).curve == number]
    return [str(number)] if inst.input_type(number).enabled else []


def slot_is_empty(inst: Any, number: int) -> bool:
    """An empty slot: format 0 (240), or a header over no breakpoints (a 372 keeps "User Curve",
    format 4 in an empty slot; firmware_host/FIDELITY.md, 372 row 13): its first point is 0, 0."""
    return not inst.curve_header(number).data_format or inst.curve_point(number, 1) == (0.0, 0.0)


def stored_curve(inst: Any, number: int) -> Curve | None:
    """The curve in slot ``number`` (header and every point), or None for an empty slot."""
    if slot_is_empty(inst, number):
        return None
    return inst.download_curve(number)


class CurveService:
    """The curve operations; each runs ``fn(instrument)`` on the instrument's poller thread."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def _poller(self, node: str) -> Poller:
        return self.control.poller(node)

    def _number(self, poller: Poller, number: int, write: bool) -> int:
        inst: Any = poller.instrument  # a model with curve commands (CurveCommands): slots, label
        allowed = inst.user_curve_slots if write else inst.curve_slots
        if number not in allowed:
            what = inst.user_curves_label if write else "curves"
            raise ControlRefused(400, f"{poller.cfg.name}: {what} are {allowed.start}-{allowed.stop - 1}, not {number}")
        return number

    def _run(self, poller: Poller, fn: Callable[[Any], Any], what: str, timeout: float = 30.0) -> Any:
        return self.control.on_link(poller, fn, what, timeout)

    @staticmethod
    def _parse(body: dict, number: int) -> Curve:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ControlRefused(400, 'give the curve file as {"text": "<contents of the .340 file>"}')
        try:
            curve = parse_340(text, body.get("filename") or f"curve {number}")
        except CurveError as exc:
            raise ControlRefused(400, str(exc)) from None
        for what, value, limit in (
            ("sensor model (the curve's name)", curve.name, NAME_CHARS),
            ("serial number", curve.serial, SERIAL_CHARS),
        ):
            if len(value) > limit:
                raise ControlRefused(
                    400,
                    f"the {what} {value!r} is {len(value)} characters; the instrument holds at most {limit} "
                    "(CRVHDR): shorten it in the file, it is not cut",
                )
            problem = text_problem(value, limit)
            if problem:
                raise ControlRefused(
                    400,
                    f'the {what} {value!r} {problem}: CRVHDR holds printable ASCII without , ; or " '
                    "(change it in the file; nothing was sent)",
                )
        return curve

    # -- what the appliance remembers about a slot -------------------------------------
    def _keep(self, node: str, number: int, curve: Curve) -> str:
        """Store a curve the appliance has seen (by slot and content hash); return the hash."""
        h = curve_hash(curve)
        self.control.store.snapshot(
            f"{node}/curve {number}", {"node": node, "slot": number, "hash": h, "curve": _curve_dict(curve)}
        )
        self.control.last_read[(node, "curve", str(number))] = _named(curve)
        return h

    def _snapshots(self, key: str) -> list[tuple[float, dict]]:
        return snapshots_with_pending(self.control.store, key)

    def _incomplete(
        self, poller: Poller, number: int, why: str, old: Curve | None = None, new: Curve | None = None
    ) -> None:
        """Mark slot ``number`` incomplete. The mark carries the curve the slot held before (what a
        restore puts back), not only its hash: it is found however far the store is behind."""
        poller.health.incomplete_curves[str(number)] = why
        cut = f"an upload of {new.name} {new.serial}" if new is not None else None
        mark: dict = {"why": why, "hash": None, "curve": None, "cut": cut}
        if old is not None:
            mark.update(hash=curve_hash(old), curve=_curve_dict(old))
        self._persist(poller, number, mark)
        self.control.last_read[(poller.cfg.name, "curve", str(number))] = self._mark_text(mark)
        self.control.store.event("curve", poller.cfg.name, f"curve {number} marked incomplete: {why}")

    @staticmethod
    def _mark_text(mark: dict, cut: str | None = None) -> str:
        """What a slot marked incomplete holds, for the next request's "was" (the audit): the part
        of the curve whose writing was cut short (``cut``, else the mark's), and what was there before."""
        cut = cut or mark.get("cut") or "an upload"
        c = mark.get("curve")
        if c:
            before = f"{c['name']} {c['serial']}, {len(c['points'])} points, kept as {mark.get('hash')}"
        elif mark.get("hash"):
            before = f"kept as {mark['hash']}"
        else:
            before = "empty"
        return f"incomplete: {cut} stopped part way (the curve before it: {before})"

    def _complete(self, poller: Poller, number: int, how: str) -> None:
        if poller.health.incomplete_curves.pop(str(number), None) is not None:
            self._persist(poller, number, None)
            self.control.store.event("curve", poller.cfg.name, f"curve {number} no longer incomplete: {how}")

    # -- the incomplete marks outlive a restart ------------------------------------------
    @staticmethod
    def _marks_key(node: str) -> str:
        return f"{node}/incomplete curves"

    def _marks(self, node: str) -> dict:
        """The slots marked incomplete as last stored: {slot: {"why": ..., "hash": the old curve's or None}}."""
        kept = self._snapshots(self._marks_key(node))
        return dict(kept[-1][1].get("incomplete", {})) if kept else {}

    def _persist(self, poller: Poller, number: int, mark: dict | None) -> None:
        """Store the set of incomplete slots (a snapshot record the appliance reloads at start)."""
        node = poller.cfg.name
        with self.control.curve_marks_lock:
            if node not in self.control.curve_marks:
                self.control.curve_marks[node] = self._marks(node)
            marks = self.control.curve_marks[node]
            if mark is None:
                marks.pop(str(number), None)
            else:
                marks[str(number)] = mark
            self.control.store.snapshot(self._marks_key(node), {"node": node, "incomplete": dict(marks)})

    def _kept(self, node: str, number: int, mark: dict) -> Curve | None:
        """The curve slot ``number`` held before the upload that left it marked: the copy in the mark,
        else (a mark stored before marks carried it) the kept copy with the mark's content hash."""
        if mark.get("curve"):
            return _curve_of(mark["curve"])
        h = mark.get("hash")
        for _, rec in reversed(self._snapshots(f"{node}/curve {number}")):
            if h and rec.get("hash") == h:
                return _curve_of(rec["curve"])
        return None

    def _before_incomplete(self, poller: Poller, number: int) -> tuple[bool, Curve | None]:
        """Whether slot ``number`` is marked incomplete, and if so the curve it held before the upload
        that cut it short (the copy kept by the mark's hash; None when the slot was empty then, or
        no copy is kept): what a failed upload puts back, never the partial copy in the slot now."""
        slot = str(number)
        if slot not in poller.health.incomplete_curves:
            return False, None
        node = poller.cfg.name
        with self.control.curve_marks_lock:
            marks = self.control.curve_marks.get(node)
        mark = (marks if marks is not None else self._marks(node)).get(slot) or {}
        return True, self._kept(node, number, mark)

    def reconcile(self) -> None:
        """At start: every slot still marked incomplete is marked again and its restore scheduled."""
        for poller in self.control.pollers.values():
            node = poller.cfg.name
            for slot, mark in sorted(self._marks(node).items()):
                number, why = int(slot), str(mark.get("why"))
                if not why.endswith(AFTER_RESTART):  # said once, however many restarts
                    why += AFTER_RESTART
                poller.health.incomplete_curves[slot] = why
                self._persist(poller, number, {**mark, "why": why})
                self.control.last_read[(node, "curve", slot)] = self._mark_text(mark)
                self.control.store.event("curve", node, f"curve {number} still marked incomplete at start: {why}")
                old = self._kept(node, number, mark)
                if old is not None:
                    self._schedule_restore(poller, number, old, why)

    def _schedule_restore(self, poller: Poller, number: int, old: Curve, why: str) -> None:
        threading.Thread(
            target=self._restore_later, args=(poller, number, old, why), daemon=True, name=f"restore-{number}"
        ).start()

    def _was(self, node: str, number: int) -> str:
        """The slot as last read: by this service (for a slot marked incomplete, the cut-short copy it
        holds), else the latest kept copy or configuration snapshot."""
        known = self.control.last_read.get((node, "curve", str(number)))
        if known:
            return known
        kept = self._snapshots(f"{node}/curve {number}")
        if kept:
            c = kept[-1][1]
            return f"{c['curve']['name']} {c['curve']['serial']}, {len(c['curve']['points'])} points ({c['hash']})"
        snaps = self.control.store.snapshots(node)
        header = snaps[-1][1].get("curves", {}).get(str(number)) if snaps else None
        return f"{header['name']} {header['serial']}" if header else "not read yet"

    @staticmethod
    def _in_use(node: str, number: int, old: Curve | None, users: list[str], force: bool, doing: str) -> None:
        if old is not None and users and not force:
            raise ControlRefused(
                409,
                f"{node}: curve {number} ({old.name} {old.serial}) is used by input{'s' if len(users) > 1 else ''} "
                f"{', '.join(users)}: {doing} it needs force (kelvinpi curve ... --force, or force=true)",
            )

    def _recover(
        self, poller: Poller, inst: Any, number: int, old: Curve | None, exc: Exception, new: Curve | None = None
    ) -> str:
        """After a failed upload of ``new``: put the old curve back if the link still answers, else mark the slot."""
        kept = f"the old curve {old.name} {old.serial} is kept as {curve_hash(old)}" if old else "the slot was empty"
        if not isinstance(exc, (ConnectionLost, InstrumentTimeout)):
            try:
                if old is None:
                    inst.delete_curve(number)
                    self.control.last_read[(poller.cfg.name, "curve", str(number))] = "empty"
                else:
                    inst.upload_curve(number, old, verify=True)
                    self.control.last_read[(poller.cfg.name, "curve", str(number))] = _named(old)
                return f"curve {number}: the old curve was put back" if old else f"curve {number} emptied again"
            except Exception as again:  # noqa: BLE001 - any failure leaves the slot marked below
                exc = again
        why = f"an upload stopped part way ({exc}); {kept}"
        self._incomplete(poller, number, why, old, new)
        if old is None:
            return f"curve {number} marked incomplete: the slot was empty before; upload the curve again or delete the slot"
        self._schedule_restore(poller, number, old, why)
        return f"curve {number} marked incomplete: {kept}; it is put back once the link is up again"

    def _restore_later(self, poller: Poller, number: int, old: Curve, why: str) -> None:
        """Put the old curve back once the link answers, retrying with backoff, unless the slot was settled since.

        A user upload or verify of the slot clears its mark (``_complete``), which ends the retries;
        so does the appliance stopping (the mark is stored: the next start schedules this again).
        """
        backoff = RESTORE_FIRST_RETRY

        def still_needed() -> bool:
            return poller.health.incomplete_curves.get(str(number)) == why

        def restore(inst: Any) -> str:
            if not still_needed():
                return "not needed: the slot was uploaded or verified since"
            key = (poller.cfg.name, "curve", str(number))
            try:
                inst.upload_curve(number, old, verify=True)
            except Exception:
                # the slot now holds part of the old curve: the next request's "was" says so
                mark = {"hash": curve_hash(old), "curve": _curve_dict(old)}
                self.control.last_read[key] = self._mark_text(mark, f"the restore of {old.name} {old.serial}")
                raise
            self.control.last_read[key] = _named(old)
            poller.snapshot_due = True
            self._complete(poller, number, f"the old curve {old.name} {old.serial} was put back")
            return f"{old.name} {old.serial} put back and read back"

        while still_needed() and not poller.stop_event.is_set():
            # wait for the link (a fresh connection after the one the upload lost)
            if not (poller.connected_event.is_set() and poller.health.connected):
                poller.stop_event.wait(0.2)
                continue
            try:
                self.control.audited(
                    poller,
                    "the appliance",
                    f"curve {number} restore of {old.name} {old.serial} after a failed upload",
                    "incomplete",
                    restore,
                    UPLOAD_TIMEOUT,
                    applied=lambda done: done,
                )
                return
            except ControlRefused:
                pass  # on record through the audit; tried again after the backoff
            poller.stop_event.wait(backoff)
            backoff = min(backoff * 2, RESTORE_MAX_RETRY)

    # -- operations ---------------------------------------------------------------------
    def list(self, node: str) -> dict:
        poller = self._poller(node)

        def headers(inst: Any) -> list[dict]:
            out = []
            for n in inst.curve_slots:
                if not slot_is_empty(inst, n):
                    out.append({"number": n, **asdict(inst.curve_header(n))})
            return out

        return {
            "node": node,
            "curves": self._run(poller, headers, "curve list"),
            "incomplete": dict(poller.health.incomplete_curves),
        }

    def show(self, node: str, number: int) -> dict:
        poller = self._poller(node)
        n = self._number(poller, number, write=False)
        curve = self._run(poller, lambda inst: stored_curve(inst, n), f"curve {n} download", 60.0)
        if curve is None:  # not a malformed curve: an empty slot, said plainly
            raise ControlRefused(404, f"{node}: curve {n} is empty (no breakpoints)")
        return {"node": node, "number": n, "curve": _curve_dict(curve), "text": write_340(curve)}

    def upload(self, node: str, number: int, body: dict, who: str) -> dict:
        poller = self._poller(node)
        n = self._number(poller, number, write=True)
        curve = self._parse(body, n)
        force = body.get("force") is True
        inst: Any = poller.instrument  # a model with curve commands (CurveCommands)
        allowed = inst.curve_formats
        if curve.data_format not in allowed:
            raise ControlRefused(
                400,
                f"data format {curve.data_format} cannot be stored in a Model "
                f"{poller.cfg.model} (formats {', '.join(map(str, allowed))})",
            )

        def upload(inst: Any) -> Curve:
            current = stored_curve(inst, n)
            self._in_use(node, n, current, inputs_using(inst, n) if current else [], force, "replacing")
            marked, old = self._before_incomplete(poller, n)
            if not marked:  # a slot marked incomplete holds a cut-short copy: never taken as "the old curve"
                old = current
                if old is not None:
                    self._keep(node, n, old)
            try:
                inst.upload_curve(n, curve, verify=False)
                got = inst.download_curve(n)  # every point read back
                diff = first_difference(inst, curve, got)
                if diff:
                    raise InstrumentError(f"curve {n} read back wrong, {diff}")
            except Exception as exc:  # whatever stopped it, the slot is put back or marked incomplete
                state = self._recover(poller, inst, n, old, exc, curve)
                status = 409 if isinstance(exc, (InstrumentError, ValueError)) else 503
                raise PartFailed(f"curve {n} upload failed: {exc}", state, status) from None
            finally:
                poller.snapshot_due = True  # the next configuration snapshot names what the slot holds
            self._keep(node, n, got)
            self._complete(poller, n, "uploaded and read back")
            return got

        what = f"curve {n} upload: {curve.name} {curve.serial}, {len(curve.points)} points" + (
            " (forced)" if force else ""
        )
        got = self.control.audited(
            poller,
            who,
            what,
            self._was(node, n),
            upload,
            UPLOAD_TIMEOUT,
            applied=lambda g: f"{len(g.points)} points written and read back",
        )
        return {"node": node, "number": n, "points": len(got.points), "name": got.name, "serial": got.serial}

    def verify(self, node: str, number: int, body: dict) -> dict:
        poller = self._poller(node)
        n = self._number(poller, number, write=False)
        curve = self._parse(body, n)
        got = self._run(poller, lambda inst: inst.download_curve(n), f"curve {n} verify", 60.0)
        diff = first_difference(poller.instrument, curve, got)
        if diff is None:
            self.control.last_read[(node, "curve", str(n))] = _named(got)
            self._complete(poller, n, "verified against a file")
        return {"node": node, "number": n, "same": diff is None, "difference": diff, "points": len(got.points)}

    def delete(self, node: str, number: int, who: str, force: bool = False) -> dict:
        poller = self._poller(node)
        n = self._number(poller, number, write=True)

        def delete(inst: Any) -> Curve | None:
            old = stored_curve(inst, n)
            self._in_use(node, n, old, inputs_using(inst, n) if old else [], force, "deleting")
            if old is not None:
                self._keep(node, n, old)
            inst.delete_curve(n)
            poller.snapshot_due = True
            # a deliberate delete settles a slot marked incomplete: its pending restore (which checks
            # the mark on this same poller before it writes) must not fill the slot again
            self._complete(poller, n, f"deleted by {who}")
            return old

        self.control.audited(
            poller,
            who,
            f"curve {n} delete" + (" (forced)" if force else ""),
            self._was(node, n),
            delete,
            60.0,
            applied=lambda old: f"deleted {old.name} {old.serial} (kept as {curve_hash(old)})" if old else "was empty",
        )
        self.control.last_read[(node, "curve", str(n))] = "empty"
        return {"node": node, "number": n, "deleted": True}
