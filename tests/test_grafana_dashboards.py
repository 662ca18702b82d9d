"""The Grafana 12 dashboards in images/server/grafana, checked without a Grafana server (none is available
to the tests): each query is run the way Grafana would run it, with Grafana's macros substituted.

* Infinity (kelvinpi-infinity.json): every panel's URL, appended to the datasource's base URL (as the
  Infinity backend does), is fetched from a running appliance polling both emulators; the JSON or CSV
  answer is checked against a JSON schema built from the panel's declared columns (the frame Infinity's
  backend parser makes from them: a time column of epoch ms, one number column per field) and must hold
  values for every column.
* InfluxDB, no plugin (kelvinpi-influxdb.json): every InfluxQL query runs against Debian's influxd filled
  by the appliance's own InfluxDB uplink, and returns values for every column it selects, so the socs
  field names in the dashboard are the ones written.
"""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema_rs
import pytest
import yaml

from firmware_host.emulator import Emulator

from .conftest import appliance_config, start_appliance, wait_for

pytestmark = pytest.mark.slow  # one appliance scanning all 16 inputs of the 372

GRAFANA = Path(__file__).resolve().parent.parent / "images" / "server" / "grafana"


def dashboard(name: str) -> dict:
    return json.loads((GRAFANA / "dashboards" / name).read_text())


def escape_regex(value: str) -> str:
    """Grafana's regex escaping of a variable's value (templateSrv's ``regex`` format)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def substitute(text: str, values: dict[str, str | list[str]]) -> str:
    """Grafana's template syntax: ``$var``, ``${var}``, ``${var:format}`` and ``[[var]]``. A multi-value
    variable (a list: "All" or several picked) only in the ``regex`` format, ``(a|b)``, as Grafana writes it."""

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(4) or m.group(5)
        fmt = m.group(2)
        if name not in values:
            raise AssertionError(f"{m.group(0)} in {text!r} is not a variable of the dashboard or Grafana")
        value = values[name]
        if isinstance(value, list):
            if fmt != "regex":
                raise AssertionError(f"{m.group(0)} in {text!r}: a multi-value variable needs the regex format")
            return "(" + "|".join(escape_regex(v) for v in value) + ")"
        return escape_regex(value) if fmt == "regex" else str(value)

    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(__\w+|\w+)\b|\$\{(__\w+)\}", one, text)


def grafana_regex(variable: dict, found: list[str]) -> list[str]:
    """What Grafana keeps of a query variable's answer: values matching its ``regex`` (the first capture group
    when it has one), in order, without duplicates."""
    pattern = re.compile(variable["regex"].strip("/")) if variable.get("regex") else None
    out: list[str] = []
    for v in found:
        m = pattern.search(v) if pattern else None
        if pattern and not m:
            continue
        kept = m.group(1) if m and m.groups() else v
        if kept not in out:
            out.append(kept)
    return out


def frame_schema(columns: list[dict]) -> dict:
    types = {
        "timestamp_epoch": {"type": "integer"},
        "number": {"type": ["number", "null"]},
        "string": {"type": ["string", "null"]},
        "boolean": {"type": ["boolean", "null"]},
    }
    return {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": [c["selector"] for c in columns],
            "properties": {c["selector"]: types[c["type"]] for c in columns},
        },
    }


def csv_rows(text: str, columns: list[dict]) -> list[dict]:
    """CSV cells typed as Infinity's CSV backend types declared columns (empty number cell: null)."""
    out = []
    for raw in csv.DictReader(io.StringIO(text)):
        row = {}
        for c in columns:
            v = raw.get(c["selector"])
            if v is None:
                continue  # missing column: the schema reports it
            row[c["selector"]] = (
                int(v)
                if c["type"] == "timestamp_epoch"
                else (None if v == "" else float(v))
                if c["type"] == "number"
                else v
            )
        out.append(row)
    return out


# what the emulators' channels are named on the Pi: the test knows the demo, the dashboards must not
DEMO_FIELDS = {
    f"{node}::{stem}_{kind}"
    for node, stems in (
        ("LSA23JD", ("mxc_control", "mxc", "cold_plate", "still", "4k_plate")),
        ("LSA24AZ", ("50k_plate", "4k_plate")),
    )
    for stem in stems
    for kind in "tr"
}


def demo_channel_names() -> set[str]:
    """Every spelling of the demo's channels a dashboard could hard-code: the Pi's field stems and OCS's names."""
    from appliance.naming import slug
    from firmware_host.ls240_device import NAMES as LS240_NAMES
    from firmware_host.ls372_device import WIRING

    names = {slug(n) for _, n, _ in WIRING.values()} | {short for short, _, _ in WIRING.values()}
    names |= {slug(n) for n in LS240_NAMES.values()} | {f"channel_{k}" for k in LS240_NAMES} | {"control"}
    return names


def target_texts(d: dict) -> list[str]:
    return [t[k] for p in d["panels"] for t in p["targets"] for k in ("url", "query", "target") if k in t]


@pytest.fixture(scope="module")
def fridge(tmp_path_factory):
    """One appliance for the module (the 372 scans its inputs one after the other): both emulators, and
    an InfluxDB uplink to Debian's influxd when it is installed. Yields (appliance, influx or None)."""
    from .support.routers import Influx

    tmp = tmp_path_factory.mktemp("fridge")
    emu372 = Emulator.ls372(seed=1, time_scale=1.0)
    emu372.listen_tcp("127.0.0.1", 0)
    with socket.create_connection(emu372.tcp.address, timeout=5) as s, s.makefile("rw", newline="\r\n") as f:
        for ch in range(1, 17):  # dwell 1 s instead of 10 (as a user would set it): the scan takes ~16 s, not ~52
            f.write(f"INSET? {ch}\r\n")
            f.flush()
            on, _dwell, pause, curve, tempco = f.readline().strip().split(",")
            f.write(f"INSET {ch},{on},001,{pause},{curve},{tempco}\r\n")
            f.flush()
    emu240 = Emulator.ls240(channels=2, seed=3)
    emu240.listen_pty(str(tmp / "ls240"))
    influx = None
    if Path(Influx.BIN).exists():
        influx = Influx(tmp)
        influx.start()
        influx.create_db()
    extra = f'\n[[uplink]]\nkind = "influxdb"\nurl = "{influx.url}"\ndatabase = "ocs_feeds"\n' if influx else ""
    app = start_appliance(appliance_config(tmp, emu372, emu240, extra=extra))
    app.t_start = int(time.time() * 1000) - 5000
    try:
        # the 372 scans its inputs one after the other: until each has been read once
        wait_for(
            lambda: set(app.store.field_map()) >= DEMO_FIELDS, 90, step=0.5, what=f"readings of {sorted(DEMO_FIELDS)}"
        )
        yield app, influx
    finally:
        app.stop()
        if influx:
            influx.stop()
        emu372.stop()
        emu240.stop()


def test_dashboard_json_is_valid_and_uses_provisioned_datasources():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "kelvinpi.yaml").read_text())
    types = {d["uid"]: d["type"] for d in ds["datasources"]}
    assert types == {"kelvinpi-influx": "influxdb", "kelvinpi-infinity": "yesoreyeram-infinity-datasource"}
    for name in ("kelvinpi-infinity.json", "kelvinpi-influxdb.json"):
        d = dashboard(name)
        assert d["uid"] and d["title"] and d["schemaVersion"] >= 39
        variables = {v["name"]: v for v in d["templating"]["list"]}
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids)
        for p in d["panels"]:
            var = p["datasource"]["uid"].strip("${}")
            assert variables[var]["type"] == "datasource"
            assert variables[var]["current"]["value"] in types
            assert variables[var]["query"] == p["datasource"]["type"] == types[variables[var]["current"]["value"]]
            assert p["targets"] and all(t["refId"] for t in p["targets"])


@pytest.mark.parametrize(
    "path",
    [GRAFANA / "dashboards" / "kelvinpi-infinity.json", GRAFANA / "dashboards" / "kelvinpi-influxdb.json"]
    + [GRAFANA.parent / "grafana-11-simpod" / "dashboards" / "kelvinpi.json"],
    ids=lambda p: p.name,
)
def test_channels_come_from_the_data_not_the_demo(path):
    """No panel target names a demo channel (the Pi's ``mxc_t`` or OCS's ``Channel_4K_Plate_T``): a lab's own
    channels appear without editing the dashboard. The channel variable is a query variable, filled from a
    datasource, and every time-series panel is repeated over a query variable or selects through one."""
    d = json.loads(path.read_text())
    demo = demo_channel_names()
    for text in target_texts(d):
        low = text.lower()
        named = [n for n in demo if re.search(rf"(?<![a-z0-9]){re.escape(n)}(?![a-z0-9])", low)]
        assert not named, f"{path.name}: demo channel {named} hard-coded in {text!r}"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["channel"]["type"] == "query" and variables["channel"]["datasource"]["uid"], variables["channel"]
    queried = {n for n, v in variables.items() if v["type"] == "query"}
    for p in d["panels"]:
        if p["type"] != "timeseries":
            continue
        used = {m for text in target_texts({"panels": [p]}) for m in re.findall(r"\$\{?(\w+)", text)}
        assert p.get("repeat") in queried or used & queried - {"node"}, (path.name, p["title"])


def infinity_variable(app, variable: dict) -> list[str]:
    """An Infinity query variable as its backend runs it: GET base URL + url, the rows under root_selector, the
    first declared column, then Grafana's regex."""
    q = variable["query"]["infinityQuery"]
    assert variable["query"]["queryType"] == "infinity" and q["source"] == "url" and q["parser"] == "backend"
    with urllib.request.urlopen(app.base_url + q["url"], timeout=30) as r:
        rows = json.loads(r.read())
    for key in filter(None, q["root_selector"].split(".")):
        rows = rows[key]
    return grafana_regex(variable, [str(row[q["columns"][0]["selector"]]) for row in rows])


@pytest.mark.influxd  # the module's appliance uplinks to Debian's influxd when it is installed
def test_infinity_panels_resolve_against_the_appliance(fridge):
    """The channel variables filled as Infinity fills them, from the Pi's /api/v1/fields: every field of that kind
    the Pi stores, and nothing the dashboard made up. Then each repeated panel's query as Infinity's backend
    runs it (base URL + the interpolated URL) for every value: the answer parses into the declared frame, with
    values in every column, for a 10-minute and a 7-day range."""
    app, _ = fridge
    d = dashboard("kelvinpi-infinity.json")
    variables = {v["name"]: v for v in d["templating"]["list"]}
    stored = set(app.store.field_map())
    values = {name: infinity_variable(app, variables[name]) for name in ("channel", "sensor")}
    assert set(values["channel"]) == {f for f in stored if f.endswith("_t")} and len(values["channel"]) >= 7
    assert set(values["sensor"]) == {f for f in stored if f.endswith("_r")} and len(values["sensor"]) >= 7
    now_ms = int(time.time() * 1000) + 1000
    checked = 0
    for span_ms, interval_ms in ((600_000, 500), (7 * 86400_000, 600_000)):
        macros = {"__from": str(now_ms - span_ms), "__to": str(now_ms), "__interval_ms": str(interval_ms)}
        for p in d["panels"]:
            for value in values[p["repeat"]] if "repeat" in p else [None]:
                scoped = {**macros, p["repeat"]: value} if value else macros
                for t in p["targets"]:
                    assert t["source"] == "url" and t["parser"] == "backend" and t["url"].startswith("/")
                    url = app.base_url + substitute(t["url"], scoped)
                    with urllib.request.urlopen(url, timeout=30) as r:
                        body = r.read().decode()
                        ctype = r.headers["Content-Type"]
                    if t["type"] == "csv":
                        assert ctype.startswith("text/csv")
                        rows = csv_rows(body, t["columns"])
                    else:
                        assert ctype.startswith("application/json")
                        rows = json.loads(body)
                    schema = jsonschema_rs.validator_for(frame_schema(t["columns"]))
                    errors = [e.message for e in schema.iter_errors(rows)]
                    assert not errors, (p["title"], url, errors[:3])
                    for c in t["columns"]:
                        assert any(r[c["selector"]] is not None for r in rows), (p["title"], c["selector"], url)
                    if t["format"] == "timeseries":
                        times = [r["time"] for r in rows]
                        assert times == sorted(times) and len(set(times)) == len(times)
                        assert now_ms - span_ms <= times[0] and times[-1] <= now_ms, (p["title"], url)
                        assert len(rows) <= 1000 * (len(t["columns"]) - 1)
                        if span_ms > 86400_000:  # a week: from the rollups, buckets on whole 10 minutes
                            assert all(t_ % 600_000 == 0 for t_ in times), (p["title"], times[:5])
                    checked += 1
    per_range = sum(len(p["targets"]) * (len(values[p["repeat"]]) if "repeat" in p else 1) for p in d["panels"])
    assert checked == 2 * per_range


@pytest.mark.influxd  # the module's appliance uplinks to Debian's influxd when it is installed
def test_timeseries_endpoint_rejects_bad_input(fridge):
    base = fridge[0].base_url + "/api/v1/timeseries?"
    for qs, code, words in [
        ("", 400, "field="),
        ("field=LSA23JD::nope_t", 404, "unknown field"),
        ("field=LSA23JD::mxc_control_t&from=5&to=1", 400, "before"),
        ("field=LSA23JD::mxc_control_t&max_points=100001", 400, "max_points"),
        ("field=LSA23JD::mxc_control_t&name=a&name=b", 400, "one name= per field="),
        ("field=LSA23JD::mxc_control_t&format=xml", 400, "json or csv"),
    ]:
        try:
            urllib.request.urlopen(base + qs, timeout=10)
            raise AssertionError(f"{qs}: accepted")
        except urllib.error.HTTPError as e:
            assert e.code == code, (qs, e.code)
            assert words in json.loads(e.read())["error"]["message"], qs


@pytest.mark.influxd  # the module's appliance uplinks to Debian's influxd when it is installed
def test_influxdb_dashboard_queries_read_what_the_uplink_writes(fridge):
    """The no-plugin dashboard against Debian's influxd filled by the InfluxDB uplink: its query variables run as
    Grafana runs them (the query, then the variable's regex) list the nodes and channels written, and each
    repeated panel's InfluxQL, with $node, ${channel:regex} ("All"), $timeFilter and $__interval substituted as
    Grafana does, returns a column with values for every channel that node has."""
    app, influx = fridge
    if influx is None:
        pytest.skip("Debian's influxdb is not installed (`make ci-deps` as root installs it)")
    t0 = app.t_start
    d = dashboard("kelvinpi-influxdb.json")
    variables = {v["name"]: v for v in d["templating"]["list"]}

    def run(q: str) -> list[dict]:
        res = influx.query(q)["results"][0]
        assert "error" not in res, (q, res)
        return res.get("series") or []

    def variable(name: str) -> list[str]:
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${influx}"
        return grafana_regex(v, [str(row[0]) for s in run(v["query"]) for row in s["values"]])

    def fields_of(node: str, regex: str) -> list[str]:
        keys = [row[0] for s in run(f'SHOW FIELD KEYS FROM "observatory.{node}"') for row in s["values"]]
        return [k for k in keys if re.search(regex.strip("/"), k)]

    why: list[str] = ["nothing asked yet"]

    def panels_answer() -> bool:
        nodes = variable("node")
        why[0] = f"nodes {nodes}"
        if set(nodes) != {"LSA23JD", "LSA24AZ"}:
            return False
        to = int(time.time() * 1000) + 1000
        for p in d["panels"]:
            var = p["repeat"]
            for node in nodes:
                for t in p["targets"]:
                    picked = re.search(r"\$\{(\w+):regex\}", t["query"]).group(1)
                    macros = {
                        var: node,
                        picked: variable(picked),
                        "timeFilter": f"time >= {t0}ms and time <= {to}ms",
                        "__interval": "1s",
                    }
                    series = run(substitute(t["query"], macros))
                    want = sorted(f"mean_{f}" for f in fields_of(node, variables[picked]["regex"]))
                    got = sorted(series[0]["columns"][1:]) if series else []
                    why[0] = f"{p['title']} for {node}: columns {got}, channels written {want}"
                    if not want or got != want:
                        return False
                    cols, rows = series[0]["columns"], series[0]["values"]
                    empty = [c for i, c in enumerate(cols) if i and all(row[i] is None for row in rows)]
                    why[0] = f"{p['title']} for {node}: no values in {empty}"
                    if empty:
                        return False
                    assert series[0]["name"] == f"observatory.{node}"
        return True

    try:
        wait_for(panels_answer, 60, step=1.0, what="every repeated panel returning every channel of its node")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {why[0]}") from None
    # the MXC is a scanned input: its first reading can come a scan rotation after the panels answer
    wait_for(
        lambda: (
            {"MXC_T", "Channel_1_T"} <= set(variable("channel")) and {"MXC_R", "Channel_1_V"} <= set(variable("sensor"))
        ),
        60,
        step=1.0,
        what="the channel variables listing the scanned MXC and the 240's channel",
    )


@pytest.mark.influxd  # the module's appliance uplinks to Debian's influxd when it is installed
def test_simpod_dashboard_variables_and_panels_read_the_pi(fridge):
    """Grafana <= 11's dashboard (simpod JSON datasource): its channel variables as simpod asks for them
    (POST /variable with the variable's query as payload target), Grafana's regex applied, list the Pi's fields of
    that kind; each repeated panel's target, interpolated as simpod does (regex format), gets datapoints."""
    app, _ = fridge
    d = json.loads((GRAFANA.parent / "grafana-11-simpod" / "dashboards" / "kelvinpi.json").read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}

    def post(path: str, body: dict):
        req = urllib.request.Request(
            app.base_url + "/grafana" + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    import datetime

    def iso(t: float) -> str:  # as Grafana sends the range
        return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")

    rng = {"from": iso(time.time() - 600), "to": iso(time.time() + 1)}
    values = {}
    for name, v in variables.items():
        if v["type"] != "query" or v["datasource"]["type"] != "simpod-json-datasource":
            continue
        assert v["query"]["format"] == "string"
        found = post("/variable", {"payload": {"target": v["query"]["query"]}, "range": rng})
        values[name] = grafana_regex(v, [f["__value"] for f in found])
    stored = set(fridge[0].store.field_map())
    assert set(values["channel"]) == {f for f in stored if f.endswith("_t")}
    assert set(values["sensor"]) == {f for f in stored if f.endswith("_r")}
    for p in d["panels"]:
        if p["datasource"]["type"] != "simpod-json-datasource":
            continue
        for value in values[p["repeat"]]:
            targets = [
                {"refId": t["refId"], "target": substitute(t["target"], {p["repeat"]: value})} for t in p["targets"]
            ]
            assert [t["target"] for t in targets] == [value] == [escape_regex(value)]  # simpod's regex format
            got = post("/query", {"range": rng, "intervalMs": 1000, "maxDataPoints": 500, "targets": targets})
            assert got[0]["target"] == value and got[0]["datapoints"], (p["title"], value)
