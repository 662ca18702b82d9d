"""InfluxDB uplink: line protocol over HTTP, laid out exactly as OCS's InfluxDB publisher writes it.

Measurement ``observatory.<instrument>`` (the agent address), tag ``feed=temperatures``, float
fields named as socs's agents name them. Store-and-forward through the outbox; capped
exponential backoff with jitter while the server is away.
"""

from __future__ import annotations

import base64
import http.client
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from ..config import InfluxUplink, InstrumentConfig, read_secret
from ..store import FieldInfo, Store
from .outbox import Batch, Outbox
from .push import PushUplink

REFUSED = (400, 413, 422)  # the request itself is wrong: retrying the same points can never succeed


def _escape(s: str, extra: str = "") -> str:
    for c in "\\," + " " + extra:
        s = s.replace(c, "\\" + c)
    return s


def line_protocol(
    batch: Batch, fields: dict[int, FieldInfo], root: str = "observatory", feed: str = "temperatures"
) -> list[str]:
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


class InfluxUplinkRunner(PushUplink):
    """Line protocol to InfluxDB 1.x (database, basic auth) or 2.x (bucket, org, token)."""

    kind = "influxdb"
    label = "influxdb"
    log = logging.getLogger("kelvinpi.influx")

    def __init__(self, cfg: InfluxUplink, index: int, store: Store, instruments: Sequence[InstrumentConfig]) -> None:
        super().__init__("influx", index, cfg.url, store)
        self.cfg = cfg
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        base = cfg.url.rstrip("/")
        if cfg.database:
            self.write_url = f"{base}/write?" + urllib.parse.urlencode({"db": cfg.database, "precision": "ms"})
            if cfg.username and cfg.password_file:  # the config refuses a username without password_file
                pw = read_secret(cfg.password_file, f"{self.uplink_name} password_file")
                token = base64.b64encode(f"{cfg.username}:{pw}".encode()).decode()
                self.headers["Authorization"] = f"Basic {token}"
        else:
            self.write_url = f"{base}/api/v2/write?" + urllib.parse.urlencode(
                {"org": cfg.org, "bucket": cfg.bucket, "precision": "ms"}
            )
            if cfg.token_file:  # the config refuses a bucket without token_file
                self.headers["Authorization"] = "Token " + read_secret(cfg.token_file, f"{self.uplink_name} token_file")
        self.outbox = Outbox(
            store, f"influx:{cfg.url}:{cfg.database or cfg.bucket}", {i.name for i in instruments}, limit=cfg.batch
        )

    def post(self, lines: list[str]) -> None:
        body = ("\n".join(lines) + "\n").encode()
        req = urllib.request.Request(self.write_url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(req, timeout=15) as r:
            if r.status not in (200, 204):
                raise http.client.HTTPException(f"InfluxDB answered {r.status}")

    def deliver(self, batch: Batch) -> None:
        lines = line_protocol(batch, self.outbox.fields(), self.cfg.address_root)
        if lines:
            self.refuse(self.post_isolating(lines))

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
        shown = "; ".join(f"{line[:160]} ({why[:160]})" for line, why in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        self.report_refused(len(refused), "point", refused[0][1], shown + more)
