"""The appliance as sisock DataNodeServers: one WAMP session per instrument, answering from the store.

On every join: register ``<base>.consumer.<name>.get_fields`` and ``.get_data`` (retrying while a
stale session still holds the names), then ``<base>.data_node.add(name, description, session_id)``
until the hub answers True. Answers follow sisock's shapes (see shared/sisock.md 1.5-1.8).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

from autobahn.wamp.exception import ApplicationError

from ..config import InstrumentConfig, SisockUplink, read_secret
from ..health import UplinkHealth
from ..models import REGISTRY
from ..store import Store, resolve_time
from .wamp import WampRuntime, make_component

log = logging.getLogger("kelvinpi.sisock")
RETRY_SECONDS = 2.0
MAX_POINTS = 20000


def _number(name: str, v: object, allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ApplicationError(
            "org.simonsobservatory.error.invalid_argument", f"{name} must be a finite number, got {v!r}"
        )
    return float(v)


class DataNode:
    """sisock's get_fields / get_data for one instrument, from the SQLite store."""

    def __init__(self, store: Store, node: str, description: str) -> None:
        self.store, self.node, self.description = store, node, description

    def get_fields(self, start: object = 1, end: object = 0) -> list:  # as sent over WAMP: checked here
        _number("start", start)
        _number("end", end)
        fields: dict[str, dict] = {}
        timelines: dict[str, dict] = {}
        for f in self.store.fields():
            if f.node != self.node:
                continue
            fields[f.field] = {
                "description": f.description or None,
                "timeline": self._timeline(f.timeline),
                "type": "number",
                "units": f.units or None,
            }
            timelines.setdefault(self._timeline(f.timeline), {"interval": None, "field": []})["field"].append(f.field)
        return [fields, timelines]

    @staticmethod
    def _timeline(name: str) -> str:
        return "tl_group0" if name == "group0" else name  # a timeline named group0 derails sisock's glue

    def get_data(self, field: object, start: object, end: object, min_stride: object = None) -> dict:
        if isinstance(field, str):
            field = [field]
        if not isinstance(field, (list, tuple)) or not all(isinstance(f, str) for f in field):
            raise ApplicationError("org.simonsobservatory.error.invalid_argument", "field must be a list of names")
        now = time.time()
        t0 = resolve_time(_number("start", start), now)
        t1 = resolve_time(_number("end", end), now)
        stride = _number("min_stride", min_stride, allow_none=True)
        if stride is not None and stride < 0:
            raise ApplicationError("org.simonsobservatory.error.invalid_argument", "min_stride must be >= 0")
        infos = {f.field: f for f in self.store.fields() if f.node == self.node}
        data: dict[str, list] = {f: [] for f in field}
        known = [f for f in field if f in infos]
        result = self.store.data([infos[f].name for f in known], t0, t1, stride, max_points=MAX_POINTS, now=now)
        # fields on one timeline share one list of times: align on their union
        by_tl: dict[str, list[str]] = {}
        for f in known:
            by_tl.setdefault(self._timeline(infos[f].timeline), []).append(f)
        timelines = {}
        for tl, names in by_tl.items():
            series = {f: result.get(infos[f].name) for f in names}
            times = sorted({t for d in series.values() if d for t in d.t})
            if not times:
                continue
            for f, d in series.items():
                lookup = dict(zip(d.t, d.value, strict=False)) if d else {}
                data[f] = [_finite(lookup.get(t)) for t in times]
            timelines[tl] = {"t": times, "finalized_until": min(t1, now)}
        return {"data": data, "timeline": timelines}


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


class SisockUplinkRunner:
    """One data-node session per instrument on the shared WAMP loop."""

    def __init__(
        self, cfg: SisockUplink, index: int, store: Store, instruments: Sequence[InstrumentConfig], runtime: WampRuntime
    ) -> None:
        self.cfg, self.store, self.runtime = cfg, store, runtime
        self.health = UplinkHealth(f"uplink[{index}]", "sisock")
        self.secret = read_secret(cfg.secret_file, f"uplink[{index}] secret_file")
        self.instruments = instruments
        self.sessions: dict[str, object] = {}
        self.nodes = {
            i.name: DataNode(
                store,
                i.name,
                i.description or f"{REGISTRY[i.model].vendor} {i.model} {i.name}",
            )
            for i in instruments
        }

    def start(self) -> None:
        for inst in self.instruments:
            self._add(self.nodes[inst.name])

    def _add(self, node: DataNode) -> None:
        cfg = self.cfg
        comp = make_component(
            cfg.url,
            cfg.realm,
            authid=cfg.authid,
            secret=self.secret,
            ca_file=cfg.ca_file,
            label=f"sisock {node.node}",
            health=self.health,
        )
        base = cfg.base_uri
        health = self.health
        loop = self.runtime.loop

        async def in_thread(fn, *args, **kw):
            return await loop.run_in_executor(None, lambda: fn(*args, **kw))

        @comp.on_join
        async def joined(session, details):
            log.info("sisock %s: joined %s as session %s", node.node, cfg.url, details.session)
            self.sessions[node.node] = session

            async def get_fields(start=1, end=0):
                return await in_thread(node.get_fields, start, end)

            async def get_data(field, start, end, min_stride=None):
                return await in_thread(node.get_data, field, start, end, min_stride)

            for suffix, fn in (("get_fields", get_fields), ("get_data", get_data)):
                uri = f"{base}.consumer.{node.node}.{suffix}"
                while session.is_attached():
                    try:
                        await session.register(fn, uri)
                        break
                    except ApplicationError as exc:
                        if exc.error != "wamp.error.procedure_already_exists":
                            log.error("sisock %s: cannot register %s: %s", node.node, uri, exc)
                            health.errors["register"] += 1
                            health.last_error = str(exc)
                            session.leave()
                            return
                        log.warning("sisock %s: %s still held by a stale session; retrying", node.node, uri)
                        await asyncio.sleep(RETRY_SECONDS)
            while session.is_attached():
                try:
                    ok = await session.call(f"{base}.data_node.add", node.node, node.description, details.session)
                except ApplicationError as exc:
                    log.error("sisock %s: data_node.add failed: %s", node.node, exc)
                    health.errors["data_node_add"] += 1
                    health.last_error = str(exc)
                    ok = False
                if ok:
                    log.info("sisock %s: registered with the hub as data node", node.node)
                    health.connected = all(s.is_attached() for s in self.sessions.values())
                    health.last_success = time.time()
                    break
                log.warning("sisock %s: hub refused data_node.add (name taken); retrying", node.node)
                await asyncio.sleep(RETRY_SECONDS)

        @comp.on_leave
        async def left(session, details):
            log.warning("sisock %s: left the router: %s %s", node.node, details.reason, details.message or "")
            health.connected = False
            health.errors["leave"] += 1
            health.last_error = f"{details.reason} {details.message or ''}".strip()

        @comp.on_disconnect
        async def disconnected(session, was_clean=True):
            health.connected = False

        self.runtime.add(comp)

    def stop(self) -> None:
        pass  # the runtime stops every component
