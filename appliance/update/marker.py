"""The pending-update marker: one JSON file on the data partition while an update is between its
install and its commit (or rollback).

It is what lets a boot tell the story after the fact: the try boot records ``update_installed``
(the installing process may have no store to write to: ``kelvinpi update`` runs beside the
service, which owns it), and the boot after a failed or cut-off try finds it and records
``update_rolled_back``. It is written atomically (temporary file, fsync, rename, fsync of the
directory), so a power cut leaves the old marker or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

MARKER_NAME = "pending.json"
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: a started_at past it is not a time this release wrote


class MarkerError(Exception):
    """A marker file that is not one this release wrote (its path and the problem in the message)."""


@dataclass(frozen=True)
class PendingUpdate:
    """An installed update waiting for its try boot to commit it.

    ``recorded``: the ``update_installed`` event is in the store. ``failure``: what the try
    found missing before it marked itself bad (the rollback event says it)."""

    bundle: str  # the bundle's file name as given
    bundle_version: str
    from_slot: str
    to_slot: str
    started_at: float  # UNIX seconds: when the install began
    boot_id: str  # /proc/sys/kernel/random/boot_id of the boot that installed it
    recorded: bool = False
    failure: str | None = None
    try_boot_id: str | None = None  # the try boot, once its service has started
    try_started: float | None = None  # seconds since that boot when its service first started (the deadline's 0)
    committed: bool = False  # mark-good succeeded and update_committed is recorded: only the removal is left

    def describe(self) -> str:
        return f"{self.bundle} (version {self.bundle_version}) from slot {self.from_slot} to slot {self.to_slot}"


def marker_path(state_dir: Path) -> Path:
    return Path(state_dir) / MARKER_NAME


def write(state_dir: Path, pending: PendingUpdate) -> Path:
    """Write the marker atomically; its directory is created (0700: it is the appliance's own)."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = marker_path(d)
    tmp = path.with_name(f".{MARKER_NAME}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(pending), f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(d)
    return path


def read(state_dir: Path) -> PendingUpdate | None:
    """The marker, or None when no update is pending."""
    path = marker_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MarkerError(f"{path}: not a pending-update marker ({'empty' if not text.strip() else exc})") from None
    problem = _shape_problem(data)
    if problem:
        raise MarkerError(f"{path}: not a pending-update marker ({problem})")
    known = {f.name for f in fields(PendingUpdate)}
    return PendingUpdate(**{k: v for k, v in data.items() if k in known})


_TEXT = ("bundle", "bundle_version", "from_slot", "to_slot", "boot_id")
_FLAGS = ("recorded", "committed")


def _shape_problem(data: object) -> str | None:
    """What makes ``data`` not a marker this release wrote (valid JSON of another shape: ``null``, a
    list, a string, a time that is text or 1e300), or None. Checked here so nothing after ``read``
    trips over it: the boot that finds it records what it knows and sets it aside."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__ if data is not None else 'null'}, not an object"
    for k in _TEXT:
        if k not in data:
            return f"no {k!r}"
        if not isinstance(data[k], str):
            return f"{k!r} is {data[k]!r}, not text"
    for k in _FLAGS:
        if k in data and not isinstance(data[k], bool):
            return f"{k!r} is {data[k]!r}, not true or false"
    for k in ("failure", "try_boot_id"):
        if data.get(k) is not None and not isinstance(data[k], str):
            return f"{k!r} is {data[k]!r}, not text"
    if not _seconds(data.get("started_at"), MAX_TIME):
        return f"'started_at' is {data.get('started_at')!r}, not UNIX seconds"
    if data.get("try_started") is not None and not _seconds(data["try_started"], MAX_TIME):
        return f"'try_started' is {data['try_started']!r}, not seconds since boot"
    return None


def _seconds(v: object, limit: float) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= limit


def update(state_dir: Path, **changes: object) -> PendingUpdate | None:
    """Rewrite the marker with ``changes``; None (and nothing written) when there is none."""
    pending = read(state_dir)
    if pending is None:
        return None
    pending = replace(pending, **changes)  # type: ignore[arg-type]
    write(state_dir, pending)
    return pending


def set_aside(state_dir: Path) -> Path | None:
    """Move a marker that cannot be read out of the way (kept beside it for a person to look at, named
    by the time), so it neither blocks nor repeats; None if there was none."""
    path = marker_path(state_dir)
    aside = path.with_name(f"{MARKER_NAME}.unreadable-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    _sync_dir(path.parent)
    return aside


def remove(state_dir: Path) -> bool:
    """Remove the marker (durably); False if there was none."""
    path = marker_path(state_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _sync_dir(path.parent)
    return True


def _sync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def boot_id() -> str:
    """This boot's id (the kernel's), or "" where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
