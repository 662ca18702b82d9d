"""The uplinks: where stored readings go beyond the box, each behind one runner protocol.

``build_uplinks`` turns the configured uplinks into runners (``runner.UplinkRunner``): the push
uplinks with a thread of their own (``influxdb``, ``remote_write``, both on ``push``), the WAMP ones
(``sisock`` data nodes, ``ocs`` feeds) on one shared event loop (``wamp``), which is a runner too;
``outbox`` is the durable cursor of the uplinks that forward what the store holds. The service owns
the list: it starts, stops and reports every runner alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import (
    UPLINK_MODELS,
    InfluxUplink,
    InstrumentConfig,
    OcsUplink,
    RemoteWriteUplink,
    SisockUplink,
    Uplink,
    kinds_of,
)
from ..store import Store
from .runner import FailedUplink, UplinkRunner

if TYPE_CHECKING:
    from .wamp import WampRuntime

__all__ = ["UPLINKS", "FailedUplink", "UplinkKind", "UplinkRunner", "build_uplinks"]

log = logging.getLogger("kelvinpi.uplink")


@dataclass
class BuildContext:
    """What a runner factory may need besides its config: its index, the store, the enabled
    instruments, the active alarms (OCS feeds publish them) and the shared WAMP loop, made only
    when a WAMP uplink asks for it."""

    index: int
    store: Store
    instruments: Sequence[InstrumentConfig]
    alarm_source: Callable[[], list[dict]] | None
    _runtime: list[WampRuntime]

    def runtime(self) -> WampRuntime:
        if not self._runtime:  # one loop for every WAMP session, made only when one is configured
            from .wamp import WampRuntime

            self._runtime.append(WampRuntime())
        return self._runtime[0]


@dataclass(frozen=True)
class UplinkKind:
    """One uplink kind: its config model (``appliance.config.UPLINK_MODELS``) and the factory of its
    runner, which imports the runner's module only when the kind is configured (so the config,
    the CLI's check and the docs never load a WAMP or HTTP stack). ``wamp``: runs on the shared
    WAMP loop (started after the other runners, stopped before the loop)."""

    model: type
    build: Callable[..., UplinkRunner]
    wamp: bool = False


def _influxdb(u: InfluxUplink, ctx: BuildContext) -> UplinkRunner:
    from .influxdb import InfluxUplinkRunner

    return InfluxUplinkRunner(u, ctx.index, ctx.store, ctx.instruments)


def _remote_write(u: RemoteWriteUplink, ctx: BuildContext) -> UplinkRunner:
    from .remote_write import RemoteWriteUplinkRunner

    return RemoteWriteUplinkRunner(u, ctx.index, ctx.store, ctx.instruments)


def _sisock(u: SisockUplink, ctx: BuildContext) -> UplinkRunner:
    from .sisock import SisockUplinkRunner

    return SisockUplinkRunner(u, ctx.index, ctx.store, ctx.instruments, ctx.runtime())


def _ocs(u: OcsUplink, ctx: BuildContext) -> UplinkRunner:
    from .ocs import OcsUplinkRunner

    return OcsUplinkRunner(u, ctx.index, ctx.store, ctx.instruments, ctx.runtime(), alarm_source=ctx.alarm_source)


# The registry: [[uplink]] kind -> model and runner factory. A new kind is its model (in
# config.UPLINK_MODELS), its runner module, a factory above and one line here.
UPLINKS: dict[str, UplinkKind] = {
    kinds_of(k.model)[0]: k
    for k in (
        UplinkKind(SisockUplink, _sisock, wamp=True),
        UplinkKind(OcsUplink, _ocs, wamp=True),
        UplinkKind(InfluxUplink, _influxdb),
        UplinkKind(RemoteWriteUplink, _remote_write),
    )
}
assert [k.model for k in UPLINKS.values()] == list(UPLINK_MODELS), "config.UPLINK_MODELS and UPLINKS differ"


def build_uplinks(
    configs: Sequence[Uplink],
    store: Store,
    instruments: Sequence[InstrumentConfig],
    alarm_source: Callable[[], list[dict]] | None = None,
) -> list[UplinkRunner]:
    """The runners of ``configs`` (built, not started), for the enabled ``instruments``.

    ``alarm_source`` gives the active alarms the OCS feeds publish. An uplink that cannot start
    (a secret readable by others, a missing file) becomes a ``FailedUplink``: shown, never fatal.
    Order: the other runners in config order, then the WAMP ones, then their loop (stopped last).
    """
    out: list[UplinkRunner] = []
    wamp: list[UplinkRunner] = []
    runtime: list[WampRuntime] = []
    for idx, u in enumerate(configs):
        kind = UPLINKS[u.kind]
        try:
            runner = kind.build(u, BuildContext(idx, store, instruments, alarm_source, runtime))
        except (PermissionError, OSError, ValueError) as exc:
            log.error("uplink[%d] (%s) not started: %s", idx, u.kind, exc)
            failed = FailedUplink(idx, u.kind, str(exc))
            failed.health.index = idx
            out.append(failed)
            continue
        if runner.health is not None:
            runner.health.index = idx  # backlog alarms find it by position, not by its display name
        (wamp if kind.wamp else out).append(runner)
    if wamp and runtime:
        out += [*wamp, runtime[0]]
    return out
