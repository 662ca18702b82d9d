"""Prometheus remote-write uplink: every stored sample, store-and-forward, to any remote-write receiver.

Prometheus (``--web.enable-remote-write-receiver``), VictoriaMetrics, Grafana Mimir, Thanos
Receive and Grafana Cloud all take the same request: a snappy-compressed protobuf
``WriteRequest`` POSTed to their write URL. The messages are built with protobuf's own
runtime from descriptors declared here (the subset in ``remote_write.proto`` beside this file),
the compression is cramjam's snappy: nothing of the wire format is hand-encoded.

Series are named as ``/metrics`` names them, so a dashboard works on either:
``kelvinpi_temperature_kelvin{node, field}`` (units K), ``kelvinpi_resistance_ohms`` (Ohm),
``kelvinpi_sensor_volts`` (V), ``kelvinpi_value{units}`` (anything else); ``field`` is the
``<node>::<field>`` name used everywhere else. Status rule: a reading flagged invalid has no
value, so its value series gets no sample; with ``send_status`` (the default) every reading,
flagged or not, also gives a sample of ``kelvinpi_reading_status{node, field}`` holding its
status bits (the number ``/metrics`` shows), at the same time.

Delivery follows the InfluxDB uplink: the outbox's durable sequence cursor, advanced only on a
2xx; backfill and live rows in each batch. An error answer drops samples only when the receiver
says, in its body, that it will never take those samples (``refusal``: ``AGE_MARKERS`` and
``SAMPLE_MARKERS``, the receivers' own texts). Samples refused as too old or out of order
(Prometheus' "too old sample" - a 500 in Prometheus 2.42 -, "out of bounds", "out of order sample";
Mimir's err-mimir-sample-timestamp-too-old / -out-of-order; Thanos answers Prometheus' texts with a
409) are found (see ``Sender.isolate``), counted as ``refused``, named in an ``uplink_refused``
event, and the cursor moves on; a refusal of particular samples for another reason (a duplicate
timestamp with another value, an invalid label) is narrowed down by halving to those samples.
Every other answer - connection errors, 5xx, and any 4xx that does not say so: a wrong path
(VictoriaMetrics' 400 "unsupported path requested"), a proxy's own error page, 401/403/404/405/
413/429 - is about the route or the receiver's setup, not the samples: the data waits in the
store, the answer (status and the start of its body) is shown in the health, and the batch is
retried with capped backoff.
"""

from __future__ import annotations

import base64
import http.client
import logging
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .. import __version__
from ..config import InstrumentConfig, RemoteWriteUplink, read_secret
from ..naming import OTHER_UNITS_METRIC, UNITS_METRICS
from ..store import FieldInfo, Store
from .outbox import Batch, Outbox
from .push import PushUplink, error_text, post_once

METRIC_BY_UNITS = {units: m.name for units, m in UNITS_METRICS.items()}  # the names /metrics uses too
OTHER_METRIC = OTHER_UNITS_METRIC.name
STATUS_METRIC = "kelvinpi_reading_status"
# What a receiver says when it will never take the samples themselves (nothing else ever drops a sample):
#   Prometheus: storage/interface.go ErrTooOldSample "too old sample", ErrOutOfBounds "out of bounds"
#     (also a sample too far ahead: storage/remote/write_handler.go timeLimitAppender), ErrOutOfOrderSample
#     "out of order sample", ErrDuplicateSampleForTimestamp "duplicate sample for timestamp"; the v1 write
#     handler answers them with http.Error(w, err.Error(), ...): the error's text as the whole plain-text
#     body, one line (400; "too old sample" was a 500 up to 2.4x: measured, "too old sample\n", text/plain);
#     newer versions and Thanos wrap it ("add 3 samples: out of bounds", "... for series {...}: out of bounds",
#     "duplicate sample for timestamp 17; overrides not allowed ..."); v2's label checks say "invalid metric
#     name or labels" and "invalid labels for series".
#   Thanos Receive: the same tsdb errors, in a 409.
#   Mimir (and Grafana Cloud): pkg/util/globalerror/errors.go, "(err-mimir-<id>)" at the end of each message,
#     e.g. "... out-of-order samples are not allowed (err-mimir-sample-out-of-order)".
#   VictoriaMetrics refuses no sample by answer: too old or too new ones it drops itself and answers 204.
#     Its 400 "unsupported path requested" (lib/httpserver/httpserver.go) is a wrong URL: the data is kept.
# So a marker counts only as those receivers write it: in a plain-text body (an HTML page - a proxy's or a
# gateway's, whatever it quotes - never refuses), at the start of a line or of a wrapped error's last parts
# (after ": "), and ending there (end of line, ":", ";", "," or a number/bracket after a space). A Java or Go
# error page's "Index 3 out of bounds for length 3" or "index out of bounds [3]" is no refusal. A 5xx
# refuses only as Prometheus 2.42 does: its body exactly "too old sample"; any other 5xx is the receiver's
# or a proxy's trouble, kept and retried.
AGE_MARKERS = (  # "older than I take": found by bisection on age (Sender.isolate)
    "too old sample",
    "out of bounds",
    "out of order sample",
    "err-mimir-sample-timestamp-too-old",
    "err-mimir-sample-out-of-order",
)
ORDER_MARKERS = ("out of order sample", "err-mimir-sample-out-of-order")  # no window: at or before the newest
SAMPLE_MARKERS = (  # these samples, for another reason: narrowed down by halving
    "duplicate sample for timestamp",
    "invalid metric name or labels",
    "invalid labels for series",
    "err-mimir-sample-duplicate-timestamp",
    "err-mimir-too-far-in-future",
    "err-mimir-missing-metric-name",
    "err-mimir-metric-name-invalid",
    "err-mimir-label-invalid",
    "err-mimir-label-value-invalid",
    "err-mimir-label-name-too-long",
    "err-mimir-label-value-too-long",
    "err-mimir-duplicate-label-names",
    "err-mimir-labels-not-sorted",
    "err-mimir-max-label-names-per-series",
)
BODY_READ = 4096  # bytes of an error body searched for the markers (Mimir's id comes after up to 400 characters)
SHOWN = 200  # characters of it shown in the health and the log
# "out of bounds" also means too far AHEAD (Prometheus' timeLimitAppender, Thanos' too-far-in-future
# window, 10 min and more): samples stamped further ahead of this clock than this are suspects of that,
# tested on their own, not taken for the newest of an old series (which refused every older one with it)
FUTURE_MARGIN_MS = 60_000


def _marker_pattern(markers: tuple[str, ...]) -> re.Pattern[str]:
    """A marker where a receiver writes it: Prometheus' texts at a line's start or after ": ", ending
    there; Mimir's ids as the parenthesised tag that closes its messages."""
    tsdb = [re.escape(m) for m in markers if not m.startswith("err-mimir-")]
    mimir = [re.escape(m) for m in markers if m.startswith("err-mimir-")]
    parts = []
    if tsdb:
        parts.append(rf"(?:^|: )(?:{'|'.join(tsdb)})(?=$|[:;,]| [\d(\[{{])")
    if mimir:
        parts.append(rf"\((?:{'|'.join(mimir)})\)")
    return re.compile("|".join(parts), re.MULTILINE)


AGE_RE, ORDER_RE, SAMPLE_RE = (_marker_pattern(m) for m in (AGE_MARKERS, ORDER_MARKERS, SAMPLE_MARKERS))


def _is_html(detail: str, content_type: str) -> bool:
    head = detail.lstrip()[:200].lower()
    return "html" in content_type.lower() or head.startswith(("<!doctype", "<html", "<?xml", "<head", "<body"))


def refusal(detail: str, status: int = 400, content_type: str = "text/plain") -> str | None:
    """``"age"`` or ``"sample"`` when the receiver's answer says it will never take these samples; else None.

    ``detail``: the start of the body; ``status`` and ``content_type``: the answer's (the rules are above
    ``AGE_MARKERS``)."""
    if _is_html(detail, content_type):
        return None
    d = detail.lower().replace("\r\n", "\n")
    if status >= 500:  # Prometheus 2.42's "too old sample" is its only 5xx about the samples
        return "age" if d.strip() == "too old sample" else None
    if AGE_RE.search(d):
        return "age"
    if SAMPLE_RE.search(d):
        return "sample"
    return None


def short_body(text: str) -> str:
    """An error body for a person: an HTML page's text without its tags, whitespace collapsed, cut short."""
    if "<" in text and ">" in text:
        text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
        text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text[:SHOWN] + ("..." if len(text) > SHOWN else "")


def _messages():
    """The WriteRequest classes, from descriptors (field numbers as in Prometheus' prompb)."""
    fd = descriptor_pb2.FileDescriptorProto(name="kelvinpi/remote_write.proto", package="prometheus", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto

    def message(name: str, *fields: tuple[str, int, int, int, str | None]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name

    message(
        "Sample",
        ("value", 1, T.TYPE_DOUBLE, T.LABEL_OPTIONAL, None),
        ("timestamp", 2, T.TYPE_INT64, T.LABEL_OPTIONAL, None),
    )
    message(
        "Label", ("name", 1, T.TYPE_STRING, T.LABEL_OPTIONAL, None), ("value", 2, T.TYPE_STRING, T.LABEL_OPTIONAL, None)
    )
    message(
        "TimeSeries",
        ("labels", 1, T.TYPE_MESSAGE, T.LABEL_REPEATED, ".prometheus.Label"),
        ("samples", 2, T.TYPE_MESSAGE, T.LABEL_REPEATED, ".prometheus.Sample"),
    )
    message("WriteRequest", ("timeseries", 1, T.TYPE_MESSAGE, T.LABEL_REPEATED, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()  # our own pool: no clash with any other prompb in the process
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _messages()


@dataclass(frozen=True, order=True)
class Point:
    """One sample on the wire: ordered by time first, so a batch sorts oldest first."""

    t: int  # ms
    labels: tuple[tuple[str, str], ...]  # sorted by name, __name__ included
    value: float


def series_labels(f: FieldInfo, extra: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The labels of a series' value samples, as /metrics would label it."""
    labels = dict(extra)
    labels.update(__name__=METRIC_BY_UNITS.get(f.units, OTHER_METRIC), node=f.node, field=f.name)
    if f.units not in METRIC_BY_UNITS:
        labels["units"] = f.units
    return tuple(sorted(labels.items()))


def status_labels(f: FieldInfo, extra: dict[str, str]) -> tuple[tuple[str, str], ...]:
    labels = dict(extra)
    labels.update(__name__=STATUS_METRIC, node=f.node, field=f.name)
    return tuple(sorted(labels.items()))


def points(
    batch: Batch, fields: dict[int, FieldInfo], extra: dict[str, str] | None = None, send_status: bool = True
) -> list[Point]:
    """The batch's rows as remote-write samples, oldest first (the status rule is in the module docstring)."""
    extra = extra or {}
    out: list[Point] = []
    for sid, rows in batch.rows.items():
        f = fields.get(sid)
        if f is None:
            continue
        vl = series_labels(f, extra)
        sl = status_labels(f, extra) if send_status else None
        for t, v, st in rows:
            if v is not None:
                out.append(Point(int(t), vl, float(v)))
            if sl is not None:
                out.append(Point(int(t), sl, float(st)))
    out.sort()
    return out


def encode(pts: list[Point]) -> bytes:
    """A snappy-compressed WriteRequest: one TimeSeries per label set, its samples in time order."""
    by_series: dict[tuple, list[Point]] = {}
    for p in pts:
        by_series.setdefault(p.labels, []).append(p)
    req = WriteRequest()
    for labels, ps in by_series.items():
        ts = req.timeseries.add()
        for name, value in labels:
            ts.labels.add(name=name, value=value)
        for p in sorted(ps, key=lambda p: p.t):
            ts.samples.add(value=p.value, timestamp=p.t)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


class Refused(Exception):
    """The receiver said it will never take these samples (``refusal``); ``detail``: what it said."""

    def __init__(self, status: int, detail: str, kind: str) -> None:
        super().__init__(f"HTTP {status}: {short_body(detail)}")
        self.status, self.detail, self.kind = status, detail, kind

    @property
    def old(self) -> bool:
        return self.kind == "age"

    @property
    def out_of_order(self) -> bool:
        return self.old and ORDER_RE.search(self.detail.lower()) is not None


class Sender:
    """POSTs write requests; the refusal rules (which answers mean 'never', which mean 'later')."""

    def __init__(self, cfg: RemoteWriteUplink, what: str) -> None:
        self.cfg = cfg
        self.url = cfg.url
        self.headers = {
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
            "User-Agent": f"kelvinpi/{__version__}",
        }
        if cfg.username and cfg.password_file:  # the config refuses one without the other
            pw = read_secret(cfg.password_file, f"{what} password_file")
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{cfg.username}:{pw}".encode()).decode()
        elif cfg.token_file:
            self.headers["Authorization"] = "Bearer " + read_secret(cfg.token_file, f"{what} token_file")
        # https is always verified: against ca_file if given, else the system's CAs
        self.context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        self.requests = 0

    def post(self, pts: list[Point]) -> None:
        """Deliver or raise: ``Refused`` (the receiver says: never), HTTPError/URLError/OSError/HTTPException (later)."""
        req = urllib.request.Request(self.url, data=encode(pts), headers=self.headers, method="POST")
        self.requests += 1
        try:
            with post_once(req, self.cfg.timeout, self.context) as r:
                if not 200 <= r.status < 300:
                    raise http.client.HTTPException(f"receiver answered {r.status}")
        except urllib.error.HTTPError as exc:
            detail = error_text(exc, BODY_READ)
            ctype = exc.headers.get("Content-Type", "") if exc.headers is not None else ""
            kind = refusal(detail, exc.code, ctype or "")
            if kind is not None:
                raise Refused(exc.code, detail, kind) from None
            # not about the samples (a wrong path, a proxy's page, auth, size, a limit): kept and retried
            exc.detail = short_body(detail)  # type: ignore[attr-defined]  # the body is read: shown in the health
            raise

    def isolate(self, pts: list[Point]) -> list[tuple[Point, str]]:
        """Post ``pts`` (oldest first); return the samples the receiver will never take, with why.

        Too-old refusals (an out-of-order window, older than it): a receiver takes a request whole
        or not at all (Prometheus rolls it back), so the first refused sample is found by bisecting
        on the newest suffix that is taken (accepted suffixes are committed; resending one later is
        harmless, a receiver keeps one sample per series and time; a newer sample committed first
        moves the window by less than a batch spans). That sample and every older one of its series
        are refused (Prometheus' head only moves forward), then the rest is tried again: a few
        requests per refused series, not per sample. "Out of order" (no window): ``_oldest_first``.
        A too-old refusal of a batch holding samples stamped ahead of now (``FUTURE_MARGIN_MS``) may be
        "out of bounds" for being too new: the rest goes first, those are halved down on their own.
        A refusal for another reason (``SAMPLE_MARKERS``) is halved down to the single samples. Any
        other error answer is raised from here: the whole batch is kept and retried later.
        """
        try:
            self.post(pts)
            return []
        except Refused as exc:
            first = exc
        if len(pts) == 1:
            return [(pts[0], str(first))]
        if not first.old:
            return self._halved(pts)
        ahead = int(time.time() * 1000) + FUTURE_MARGIN_MS
        if not first.out_of_order and pts[-1].t > ahead:  # perhaps refused as too new: those on their own
            rest = [p for p in pts if p.t <= ahead]  # first: a newer one taken first would put them out of order
            future = [p for p in pts if p.t > ahead]
            return (self.isolate(rest) if rest else []) + self._halved(future)
        if first.out_of_order:
            return self._oldest_first(pts)
        lo, hi, why = 0, len(pts), first  # pts[lo:] refused (why), pts[hi:] taken (empty: trivially)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                self.post(pts[mid:])
                hi = mid
            except Refused as exc:
                lo, why = mid, exc
        culprit = pts[lo]
        if not why.old:  # the suffix failed for another reason: isolate it the other way
            return self.isolate(pts[lo:hi]) + self.isolate(pts[:lo])
        refused = [p for p in pts[:hi] if p.labels == culprit.labels and p.t <= culprit.t]
        rest = [p for p in pts[:hi] if not (p.labels == culprit.labels and p.t <= culprit.t)]
        return [(p, str(why)) for p in refused] + (self.isolate(rest) if rest else [])

    def _halved(self, pts: list[Point]) -> list[tuple[Point, str]]:
        """Split in two, each half on its own: down to the single samples refused."""
        if len(pts) == 1:
            try:
                self.post(pts)
                return []
            except Refused as exc:
                return [(pts[0], str(exc))]
        mid = len(pts) // 2
        return self.isolate(pts[:mid]) + self.isolate(pts[mid:])

    def _oldest_first(self, pts: list[Point]) -> list[tuple[Point, str]]:
        """ "Out of order": a receiver without an out-of-order window refuses every sample at or before its
        series' newest. Bisecting on newer suffixes would commit a newer sample ahead of an older new one
        of its series, which is then out of order too and lost (a resend after a crash did exactly that).
        So each series goes on its own (series do not interact), oldest first: the rest of it at once,
        and after a refusal its oldest sample alone (refused: skipped; taken: it was the first new one).
        Costs a request or two per refused sample, and nothing new is refused.
        """
        by_series: dict[tuple[tuple[str, str], ...], list[Point]] = {}
        for p in pts:
            by_series.setdefault(p.labels, []).append(p)
        out: list[tuple[Point, str]] = []
        for series in by_series.values():
            i = 0
            while i < len(series):
                try:
                    self.post(series[i:])
                    break
                except Refused as exc:
                    if not exc.old:  # something else is wrong with these: halved down to the culprits
                        out += self.isolate(series[i:])
                        break
                try:
                    self.post(series[i : i + 1])
                except Refused as exc:
                    out.append((series[i], str(exc)))
                i += 1
        return out


class RemoteWriteUplinkRunner(PushUplink):
    """Every stored sample to one remote-write receiver (delivery and refusals: the module docstring)."""

    kind = "remote_write"
    label = "remote write"
    log = logging.getLogger("kelvinpi.remote_write")

    def __init__(
        self, cfg: RemoteWriteUplink, index: int, store: Store, instruments: Sequence[InstrumentConfig]
    ) -> None:
        super().__init__("remote-write", index, cfg.url, store)
        self.cfg = cfg
        self.sender = Sender(cfg, self.uplink_name)
        self.outbox = Outbox(
            store,
            f"remote_write:{cfg.url}",
            {i.name for i in instruments},
            limit=cfg.batch,
            live=cfg.live_during_backfill,
        )

    def deliver(self, batch: Batch) -> None:
        pts = points(batch, self.outbox.fields(), self.cfg.labels, self.cfg.send_status)
        if pts:
            self.refuse(self.sender.isolate(pts))

    def http_detail(self, exc: urllib.error.HTTPError) -> str:
        return getattr(exc, "detail", "")  # read (and the body consumed) by Sender.post

    def refuse(self, refused: list[tuple[Point, str]]) -> None:
        """Samples the receiver will never take: skipped, counted, and summarised in one event."""
        if not refused:
            return
        first = refused[0][1]
        per_series: dict[str, list[int]] = {}
        for p, _why in refused:
            d = dict(p.labels)
            per_series.setdefault(f"{d['__name__']}{{field={d.get('field', '')!r}}}", []).append(p.t)
        shown = "; ".join(f"{k}: {len(ts)} from {min(ts)} to {max(ts)} ms" for k, ts in list(per_series.items())[:5])
        more = f" and {len(per_series) - 5} more series" if len(per_series) > 5 else ""
        self.report_refused(len(refused), "sample", first, shown + more, cause=first)
