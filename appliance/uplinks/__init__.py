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
from typing import TYPE_CHECKING

from ..config import InfluxUplink, InstrumentConfig, OcsUplink, RemoteWriteUplink, SisockUplink, Uplink
from ..store import Store
from .runner import FailedUplink, UplinkRunner

if TYPE_CHECKING:
    from .wamp import WampRuntime

__all__ = ["FailedUplink", "UplinkRunner", "build_uplinks"]

log = logging.getLogger("kelvinpi.uplink")


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
    runtime: WampRuntime | None = None
    for idx, u in enumerate(configs):
        try:
            if isinstance(u, InfluxUplink):
                from .influxdb import InfluxUplinkRunner

                out.append(InfluxUplinkRunner(u, idx, store, instruments))
            elif isinstance(u, RemoteWriteUplink):
                from .remote_write import RemoteWriteUplinkRunner

                out.append(RemoteWriteUplinkRunner(u, idx, store, instruments))
            else:
                if runtime is None:  # one loop for every WAMP session, made only when one is configured
                    from .wamp import WampRuntime

                    runtime = WampRuntime()
                wamp.append(_wamp_runner(u, idx, store, instruments, runtime, alarm_source))
        except (PermissionError, OSError, ValueError) as exc:
            log.error("uplink[%d] (%s) not started: %s", idx, u.kind, exc)
            out.append(FailedUplink(idx, u.kind, str(exc)))
    if wamp and runtime is not None:
        out += [*wamp, runtime]
    return out


def _wamp_runner(
    u: SisockUplink | OcsUplink,
    idx: int,
    store: Store,
    instruments: Sequence[InstrumentConfig],
    runtime: WampRuntime,
    alarm_source: Callable[[], list[dict]] | None,
) -> UplinkRunner:
    if isinstance(u, SisockUplink):
        from .sisock import SisockUplinkRunner

        return SisockUplinkRunner(u, idx, store, instruments, runtime)
    from .ocs import OcsUplinkRunner

    return OcsUplinkRunner(u, idx, store, instruments, runtime, alarm_source=alarm_source)
