"""OCS feeds: each instrument appears as the socs Lake Shore agent for it.

Every reading is published to ``<root>.<instrument>.feeds.temperatures`` as OCS's ``Feed`` does,
``publish(topic, [blocks, feed])`` with ``record: true``, so an unmodified OCS InfluxDB
publisher and HK aggregator ingest it; plus a 1 Hz ``heartbeat`` feed. Store-and-forward: the
outbox cursor moves only when the router acknowledged the publish. Active alarms go out once a
second on each agent's ``alarms`` feed (not recorded: the events carry their history).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from autobahn.wamp.types import PublishOptions

from ..config import InstrumentConfig, OcsUplink, read_secret
from ..health import UplinkHealth
from ..models import MODELS, ocs_feed
from ..store import FieldInfo, Store
from .outbox import Batch, Outbox
from .wamp import WampRuntime, make_component

if TYPE_CHECKING:
    from autobahn.wamp.protocol import ApplicationSession

log = logging.getLogger("kelvinpi.ocs")
AGG_PARAMS = {"frame_length": 60, "fresh_time": 300, "exclude_aggregator": False, "exclude_influx": False}


def feed_info(root: str, node: str, model: str, feed: str, session_id: str, record: bool = True) -> dict:
    address = f"{root}.{node}"
    return {
        "agent_address": address,
        "agg_params": dict(AGG_PARAMS) if record else {},
        "feed_name": feed,
        "address": f"{address}.feeds.{feed}",
        "record": record,
        "session_id": session_id,
        "agent_class": MODELS[model].OCS_AGENT_CLASS if model in MODELS else "LakeshoreAgent",
    }


def blocks_for(batch: Batch, fields: dict[int, FieldInfo]) -> dict[str, dict]:
    """Per node: OCS blocks, one per field (fields in a block must be co-sampled). Flagged values are left out."""
    out: dict[str, dict] = {}
    for sid, rows in batch.rows.items():
        f = fields.get(sid)
        if f is None or not f.ocs:
            continue
        good = [(t, v) for t, v, _st in rows if v is not None]
        if not good:
            continue
        block = f.ocs.lower()
        out.setdefault(f.node, {})[block] = {
            "block_name": block,
            "timestamps": [t / 1000 for t, _ in good],
            "data": {f.ocs: [float(v) for _, v in good]},
        }
    return out


class OcsUplinkRunner:
    """One WAMP session on the shared loop publishing every instrument's feeds.

    ``alarm_source`` (a callable giving the active alarms as dicts) feeds the "alarms" feeds; None: no alarms feed.
    """

    def __init__(
        self,
        cfg: OcsUplink,
        index: int,
        store: Store,
        instruments: Sequence[InstrumentConfig],
        runtime: WampRuntime,
        alarm_source: Callable[[], list[dict]] | None = None,
    ) -> None:
        self.cfg, self.store, self.runtime = cfg, store, runtime
        self.name = f"uplink[{index}]"
        self.health = UplinkHealth(self.name, "ocs")
        self.secret = read_secret(cfg.secret_file, f"{self.name} secret_file") if cfg.secret_file else None
        self.models = {i.name: i.model for i in instruments}
        self.outbox = Outbox(store, f"ocs:{cfg.url}:{cfg.address_root}", set(self.models), limit=cfg.batch)
        self.session_id = str(time.time())
        self._task = None
        self.alarm_source = alarm_source

    def start(self) -> None:
        self.outbox.start_from_now()
        cfg = self.cfg
        comp = make_component(
            cfg.url,
            cfg.realm,
            authid=cfg.authid,
            secret=self.secret,
            ca_file=cfg.ca_file,
            label=f"ocs {self.name}",
            health=self.health,
        )

        @comp.on_join
        async def joined(session, details):
            log.info("ocs: joined %s (realm %s) as session %s", cfg.url, cfg.realm, details.session)
            self.health.connected = True
            self._task = asyncio.ensure_future(self._run(session))

        @comp.on_leave
        async def left(session, details):
            self.health.connected = False
            self.health.last_error = f"{details.reason} {details.message or ''}".strip()
            log.warning("ocs: left the router: %s", self.health.last_error)
            if self._task:
                self._task.cancel()

        @comp.on_disconnect
        async def disconnected(session, was_clean=True):
            self.health.connected = False

        self.runtime.add(comp)

    async def _run(self, session: ApplicationSession) -> None:
        loop = asyncio.get_running_loop()
        # After a router restart every subscriber (InfluxDB publisher, aggregator) reconnects too:
        # give them a moment, or the first backfill messages reach nobody.
        await asyncio.sleep(self.cfg.rejoin_delay)
        root = self.cfg.address_root
        self._last_heartbeat = self._last_backlog = 0.0
        delay = 1.0
        while session.is_attached():
            try:
                await self._step(session, loop, root)
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - store errors, bad batches: count, show, retry
                self.health.errors["internal"] += 1
                self.health.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("ocs: uplink step failed (keeping data, retrying in %.0f s)", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _step(self, session: ApplicationSession, loop: asyncio.AbstractEventLoop, root: str) -> None:
        now = time.time()
        if now - self._last_heartbeat >= 1.0:
            self._last_heartbeat = now
            for node, model in self.models.items():
                hb = feed_info(root, node, model, "heartbeat", self.session_id, record=False)
                session.publish(hb["address"], [{"acq": 3}, hb])
            if self.alarm_source is not None:  # the control room sees the appliance's active alarms
                active = self.alarm_source()
                for node, model in self.models.items():
                    feed = feed_info(root, node, model, "alarms", self.session_id, record=False)
                    session.publish(feed["address"], [{"alarms": active, "timestamp": now}, feed])
        if now - self._last_backlog >= 5.0:
            self._last_backlog = now
            self.health.backlog = await loop.run_in_executor(None, self.outbox.backlog)
        batch = await loop.run_in_executor(None, self.outbox.take)
        if not len(batch):
            await asyncio.sleep(0.5)
            return
        fields = await loop.run_in_executor(None, self.outbox.fields)
        try:
            for node, blocks in blocks_for(batch, fields).items():
                kind: str = self.models.get(node) or ""
                feed = feed_info(root, node, kind, ocs_feed(kind), self.session_id)
                await session.publish(feed["address"], [blocks, feed], options=PublishOptions(acknowledge=True))
        except Exception as exc:  # not acknowledged: keep the cursor, retry after reconnect
            self.health.errors["publish"] += 1
            self.health.last_error = f"publish: {exc}"
            log.warning("ocs: publish not acknowledged (%s); will resend", exc)
            await asyncio.sleep(1.0)
            return
        await loop.run_in_executor(None, self.outbox.ack, batch)
        self.health.sent += len(batch)
        self.health.last_success = time.time()
        if len(batch) < self.outbox.limit:
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        pass
