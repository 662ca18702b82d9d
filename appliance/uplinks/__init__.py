"""Build the configured uplinks (sisock data nodes, OCS feeds, InfluxDB, Prometheus remote write)."""
from __future__ import annotations

from ..config import InfluxUplink, OcsUplink, RemoteWriteUplink, SisockUplink


class _WampGroup:
    """Starts and stops the shared WAMP loop with the WAMP uplinks."""

    def __init__(self, runtime, runners) -> None:
        self.runtime, self.runners = runtime, runners

    def start(self) -> None:
        for r in self.runners:
            r.start()

    def stop(self) -> None:
        self.runtime.stop()


class FailedUplink:
    """An uplink that could not start (e.g. a secret file readable by others): shown, never fatal.

    Polling and storing go on; the uplink's health carries the reason for the front panel.
    """

    def __init__(self, index: int, kind: str, error: str) -> None:
        from ..health import UplinkHealth

        self.health = UplinkHealth(f"uplink[{index}]", kind)
        self.health.last_error = error
        self.health.errors["config"] += 1

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def build_uplinks(app) -> list:
    cfg = app.config
    if not cfg.uplink:
        return []
    instruments = [i for i in cfg.instrument if i.enabled]
    out: list = []
    wamp_runners: list = []
    runtime_box = [None]
    for idx, u in enumerate(cfg.uplink):
        try:
            _build_one(app, idx, u, instruments, out, wamp_runners, runtime_box)
        except (PermissionError, OSError, ValueError) as exc:
            import logging

            logging.getLogger("kelvinpi.uplink").error("uplink[%d] (%s) not started: %s", idx, u.kind, exc)
            out.append(FailedUplink(idx, u.kind, str(exc)))
    runtime = runtime_box[0]
    if wamp_runners:
        group = _WampGroup(runtime, wamp_runners)
        group.health = None
        out.append(group)
        app.wamp_runners = wamp_runners
    return out


def _build_one(app, idx, u, instruments, out, wamp_runners, runtime_box) -> None:
    if isinstance(u, InfluxUplink):
        from .influxdb import InfluxUplinkRunner

        out.append(InfluxUplinkRunner(u, idx, app.store, instruments))
        return
    if isinstance(u, RemoteWriteUplink):
        from .remote_write import RemoteWriteUplinkRunner

        out.append(RemoteWriteUplinkRunner(u, idx, app.store, instruments))
        return
    if runtime_box[0] is None:
        from .wamp import WampRuntime

        runtime_box[0] = WampRuntime()
    if isinstance(u, SisockUplink):
        from .sisock import SisockUplinkRunner

        wamp_runners.append(SisockUplinkRunner(u, idx, app.store, instruments, runtime_box[0]))
    elif isinstance(u, OcsUplink):
        from .ocs import OcsUplinkRunner

        runner = OcsUplinkRunner(u, idx, app.store, instruments, runtime_box[0])
        runner.alarm_source = getattr(getattr(app, "alarms", None), "active", None)
        wamp_runners.append(runner)
