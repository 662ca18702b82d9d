"""InfluxDB uplink: line protocol over HTTP, laid out exactly as OCS's InfluxDB publisher writes it.

Measurement ``observatory.<instrument>`` (the agent address), tag ``feed=temperatures``, float
fields named as socs's agents name them. Store-and-forward through the outbox; capped
exponential backoff with jitter while the server is away.
"""
from __future__ import annotations

import base64
import http.client
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from ..config import InfluxUplink, read_secret
from ..health import UplinkHealth
from ..store import FieldInfo, Store
from .outbox import Batch, Outbox

log = logging.getLogger("kelvinpi.influx")
REFUSED = (400, 413, 422)  # the request itself is wrong: retrying the same points can never succeed


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
                raise http.client.HTTPException(f"InfluxDB answered {r.status}")

    def run(self) -> None:
        """Send, acknowledge, repeat; any failure is counted, shown, and retried with backoff.

        Nothing ends this loop but ``stop()``: a server answering nonsense, a store that cannot
        commit the cursor, or a bug in a batch all keep the data and try again later.
        """
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
                    self.refuse(self.post_isolating(lines))
                self.outbox.ack(batch)
                self.health.sent += len(batch)
                self.health.connected = True
                self.health.last_success = time.time()
                delay = 1.0
                if len(batch) < self.outbox.limit:
                    self._halt.wait(1.0)
                continue
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                self._failed(f"HTTP {exc.code}: {detail}", "http")
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                self._failed(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}", "connection")
            except Exception as exc:  # noqa: BLE001 - the loop must outlive anything a batch or the store throws
                log.exception("influxdb uplink %s: unexpected error (retrying)", self.cfg.url)
                self._failed(f"{type(exc).__name__}: {exc}", "internal")
            self._halt.wait(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 60.0)

    def post_isolating(self, lines: list[str]) -> list[tuple[str, str]]:
        """Post; if InfluxDB refuses the batch as malformed, halve it until the bad points are alone.

        Returns the refused points with the reason. Re-posting points that were accepted is
        harmless: InfluxDB keeps one value per series, field and time.
        """
        try:
            self.post(lines)
            return []
        except urllib.error.HTTPError as exc:
            if exc.code not in REFUSED:
                raise
            if len(lines) == 1:
                return [(lines[0], f"HTTP {exc.code}: {exc.read()[:200].decode('utf-8', 'replace').strip()}")]
        mid = len(lines) // 2
        return self.post_isolating(lines[:mid]) + self.post_isolating(lines[mid:])

    def refuse(self, refused: list[tuple[str, str]]) -> None:
        """Points InfluxDB will never take: skipped, counted, and named in an event."""
        if not refused:
            return
        self.health.errors["refused"] += len(refused)
        self.health.last_error = f"{len(refused)} point(s) refused: {refused[0][1]}"
        shown = "; ".join(f"{line[:160]} ({why[:160]})" for line, why in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        log.error("influxdb %s refused %d point(s), skipped: %s%s", self.cfg.url, len(refused), shown, more)
        self.store.event("uplink_refused", None, f"{self.uplink_name} influxdb refused {len(refused)} point(s):"
                                                 f" {shown}{more}")

    def _failed(self, message: str, kind: str) -> None:
        if self.health.connected or not self.health.errors:
            log.warning("influxdb %s: %s (keeping data, retrying with backoff)", self.cfg.url, message)
        self.health.connected = False
        self.health.errors[kind] += 1
        self.health.last_error = message

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=20)
