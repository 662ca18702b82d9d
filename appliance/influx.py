"""InfluxDB uplink: line protocol over HTTP, laid out exactly as OCS's InfluxDB publisher writes it.

Measurement ``observatory.<instrument>`` (the agent address), tag ``feed=temperatures``, float
fields named as socs's agents name them. Store-and-forward through the outbox; capped
exponential backoff with jitter while the server is away.
"""
from __future__ import annotations

import base64
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .config import InfluxUplink, read_secret
from .health import UplinkHealth
from .outbox import Batch, Outbox
from .store import FieldInfo, Store

log = logging.getLogger("kelvinpi.influx")


def _escape(s: str, extra: str = "") -> str:
    for c in "\\," + " " + extra:
        s = s.replace(c, "\\" + c)
    return s


def line_protocol(batch: Batch, fields: dict[int, FieldInfo], root: str = "observatory",
                  feed: str = "temperatures") -> list[str]:
    """One line per (instrument, time): ``observatory.LSA23JD,feed=temperatures control_T=0.0115 <ms>``."""
    points: dict[tuple[str, int], dict[str, float]] = {}
    for sid, rows in batch.rows.items():
        f = fields.get(sid)
        if f is None or not f.ocs:
            continue
        for t, v, _st in rows:
            if v is not None:
                points.setdefault((f.node, t), {})[f.ocs] = float(v)
    lines = []
    for (node, t), values in sorted(points.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        fields_txt = ",".join(f"{_escape(k, '=')}={v!r}" for k, v in sorted(values.items()))
        lines.append(f"{_escape(f'{root}.{node}')},feed={_escape(feed, '=')} {fields_txt} {t}")
    return lines


class InfluxUplinkRunner(threading.Thread):
    def __init__(self, cfg: InfluxUplink, index: int, store: Store, instruments) -> None:
        super().__init__(name=f"influx-{index}", daemon=True)
        self.cfg, self.store = cfg, store
        self.uplink_name = f"uplink[{index}]"
        self.health = UplinkHealth(self.uplink_name, "influxdb")
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        base = cfg.url.rstrip("/")
        if cfg.database:
            self.write_url = f"{base}/write?" + urllib.parse.urlencode({"db": cfg.database, "precision": "ms"})
            if cfg.username:
                pw = read_secret(cfg.password_file, f"{self.uplink_name} password_file")
                token = base64.b64encode(f"{cfg.username}:{pw}".encode()).decode()
                self.headers["Authorization"] = f"Basic {token}"
        else:
            self.write_url = f"{base}/api/v2/write?" + urllib.parse.urlencode(
                {"org": cfg.org, "bucket": cfg.bucket, "precision": "ms"})
            self.headers["Authorization"] = "Token " + read_secret(cfg.token_file, f"{self.uplink_name} token_file")
        self.outbox = Outbox(store, f"influx:{cfg.url}:{cfg.database or cfg.bucket}",
                             {i.name for i in instruments}, limit=cfg.batch)
        self._halt = threading.Event()

    def start(self) -> None:
        self.outbox.start_from_now()
        super().start()

    def post(self, lines: list[str]) -> None:
        body = ("\n".join(lines) + "\n").encode()
        req = urllib.request.Request(self.write_url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(req, timeout=15) as r:
            if r.status not in (200, 204):
                raise RuntimeError(f"InfluxDB answered {r.status}")

    def run(self) -> None:
        delay = 1.0
        last_backlog = 0.0
        while not self._halt.is_set():
            try:
                if time.monotonic() - last_backlog > 5:
                    self.health.backlog = self.outbox.backlog()
                    last_backlog = time.monotonic()
                batch = self.outbox.take()
                if not len(batch):
                    self._halt.wait(1.0)
                    continue
                lines = line_protocol(batch, self.outbox.fields(), self.cfg.address_root)
                if lines:
                    self.post(lines)
                self.outbox.ack(batch)
                self.health.sent += len(batch)
                self.health.connected = True
                self.health.last_success = time.time()
                delay = 1.0
                if len(batch) < self.outbox.limit:
                    self._halt.wait(1.0)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                self._failed(f"HTTP {exc.code}: {detail}", "http")
                self._halt.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 60.0)
            except (urllib.error.URLError, OSError, RuntimeError) as exc:
                self._failed(str(getattr(exc, "reason", exc)), "connection")
                self._halt.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 60.0)

    def _failed(self, message: str, kind: str) -> None:
        if self.health.connected or not self.health.errors:
            log.warning("influxdb %s: %s (keeping data, retrying with backoff)", self.cfg.url, message)
        self.health.connected = False
        self.health.errors[kind] += 1
        self.health.last_error = message

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=20)
