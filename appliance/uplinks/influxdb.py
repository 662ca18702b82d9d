"""InfluxDB uplink: line protocol over HTTP, laid out exactly as OCS's InfluxDB publisher writes it.

Measurement ``observatory.<instrument>`` (the agent address), tag ``feed=temperatures``, float
fields named as socs's agents name them. Store-and-forward through the outbox; capped
exponential backoff with jitter while the server is away.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from ..config import InfluxUplink, InstrumentConfig, read_secret
from ..models import ocs_feed
from ..store import FieldInfo, Store
from .outbox import Batch, Outbox
from .push import PushUplink, error_body, post_once

REFUSED = (400, 422)  # the request itself is wrong: retrying the same points can never succeed
# What InfluxDB says when it is the points it refuses, as its write handler words it (1.x services/httpd
# handler.go: {"error": "<err>"} for models.ParsePoints' "unable to parse '<line>': <why>" and the tsdb's
# "partial write: <why> dropped=N" - field type conflict, points beyond retention policy, max-values-per-tag;
# measured on influxd 1.6: 'partial write: field type conflict: input field "a" on measurement "m" is type
# float, already exists as type string dropped=1'. 2.x: {"code": "invalid", "message": "unable to parse
# ..."} and 422 {"code": "unprocessable entity", "message": "failure writing points to database: partial
# write: ..."}). The message must START so: a gateway's {"message": "Invalid API route: /write"} or any
# other 400, and every 413 (a proxy's or InfluxDB's own body limit: a smaller ``batch`` fixes that, not
# dropping points) are the setup: kept, shown and retried.
POINT_ERROR = re.compile(
    r"^(?:failure writing points to database: )?(?:partial write: |unable to parse '|field type conflict: )"
)
_UNESCAPED_SPACE = re.compile(r"(?<!\\) ")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def refuses_points(code: int, body: bytes) -> bool:
    """True when this answer means "these points, never": retrying them cannot help, isolate them.
    Only InfluxDB's own JSON errors about the points count (``POINT_ERROR``)."""
    if code not in REFUSED:
        return False
    try:
        said = json.loads(body)
    except ValueError:
        return False
    if not isinstance(said, dict):
        return False
    text = said.get("error") if "error" in said else said.get("message")  # 1.x; 2.x
    return isinstance(text, str) and POINT_ERROR.match(text.strip()) is not None


def split_fields(line: str) -> list[str]:
    """``m,tags a=1,b=2 t`` -> ``m,tags a=1 t``, ``m,tags b=2 t`` (our own lines: float fields, escaped keys)."""
    head, fields, t = _UNESCAPED_SPACE.split(line)
    return [f"{head} {f} {t}" for f in _UNESCAPED_COMMA.split(fields)]


def _escape(s: str, extra: str = "") -> str:
    for c in "\\," + " " + extra:
        s = s.replace(c, "\\" + c)
    return s


def line_protocol(
    batch: Batch,
    fields: dict[int, FieldInfo],
    root: str = "observatory",
    feed: str = "temperatures",
    feeds: dict[str, str] | None = None,
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
        tag = (feeds or {}).get(node, feed)  # a node's own feed (a gauge's "pressures")
        lines.append(f"{_escape(f'{root}.{node}')},feed={_escape(tag, '=')} {fields_txt} {t}")
    return lines


class InfluxUplinkRunner(PushUplink):
    """Line protocol to InfluxDB 1.x (database, basic auth) or 2.x (bucket, org, token)."""

    kind = "influxdb"
    label = "influxdb"
    log = logging.getLogger("kelvinpi.influx")

    def __init__(self, cfg: InfluxUplink, index: int, store: Store, instruments: Sequence[InstrumentConfig]) -> None:
        super().__init__("influx", index, cfg.url, store)
        self.cfg = cfg
        self.feeds = {i.name: ocs_feed(i.model) for i in instruments}  # as the OCS feed of each node
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
        with post_once(req, 15) as r:
            said = r.read(300)
            if r.status != 204 and (r.status != 200 or said.strip()):  # InfluxDB's write answers 204, empty
                raise http.client.HTTPException(f"InfluxDB answered {r.status} {said[:200]!r}, not 204: not written")

    def deliver(self, batch: Batch) -> None:
        lines = line_protocol(batch, self.outbox.fields(), self.cfg.address_root, feeds=self.feeds)
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
            body = error_body(exc)
            if isinstance(body, Exception):  # an answer cut short says nothing about the points: later
                raise http.client.HTTPException(f"InfluxDB answered {exc.code} with a body cut short") from None
            if not refuses_points(exc.code, body):
                exc.detail = body[:300].decode("utf-8", "replace")  # type: ignore[attr-defined]
                raise
            why = f"HTTP {exc.code}: {body[:200].decode('utf-8', 'replace').strip()}"
        if len(lines) == 1:
            fields = split_fields(lines[0])
            if len(fields) == 1:
                return [(lines[0], why)]
            # one field refused (a type conflict) must not take the node's other readings of that time
            return [r for f in fields for r in self.post_isolating([f])]
        mid = len(lines) // 2
        return self.post_isolating(lines[:mid]) + self.post_isolating(lines[mid:])

    def refuse(self, refused: list[tuple[str, str]]) -> None:
        """Points InfluxDB will never take: skipped, counted, and named in an event."""
        if not refused:
            return
        shown = "; ".join(f"{line[:160]} ({why[:160]})" for line, why in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        self.report_refused(len(refused), "point", refused[0][1], shown + more)
