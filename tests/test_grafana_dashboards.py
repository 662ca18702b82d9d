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

GRAFANA = Path(__file__).resolve().parent.parent / "images" / "server" / "grafana"
VARIABLES = {"node372": "LSA23JD", "node240": "LSA24AZ"}


def dashboard(name: str) -> dict:
    return json.loads((GRAFANA / "dashboards" / name).read_text())


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's template syntax: ``$var``, ``${var}``, ``${var:format}`` and ``[[var]]`` (single values)."""

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3) or m.group(4)
        if name not in values:
            raise AssertionError(f"{m.group(0)} in {text!r} is not a variable of the dashboard or Grafana")
        return str(values[name])

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(__\w+|\w+)\b|\$\{(__\w+)\}", one, text)


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


def dashboard_fields(name: str) -> set[str]:
    """Every <node>::<field> the Infinity dashboard asks for (variables substituted)."""
    return {
        substitute(f, VARIABLES)
        for p in dashboard(name)["panels"]
        for t in p["targets"]
        for f in urllib.parse.parse_qs(urllib.parse.urlsplit(t["url"]).query).get("field", [])
    }


@pytest.fixture(scope="module")
def fridge(tmp_path_factory):
    """One appliance for the module (the 372 scans its inputs one after the other): both emulators, and
    an InfluxDB uplink to Debian's influxd when it is installed. Yields (appliance, influx or None)."""
    from .routers import Influx

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
        wanted = dashboard_fields("kelvinpi-infinity.json")
        # the 372 scans its inputs one after the other: until each has been read once
        wait_for(lambda: wanted <= set(app.store.field_map()), 90, step=0.5, what=f"readings of {sorted(wanted)}")
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


def test_infinity_panels_resolve_against_the_appliance(fridge):
    """Each Infinity query as Infinity's backend runs it: base URL + the interpolated query URL; the answer
    parses into the declared frame, with values in every column, for a 10-minute and a 7-day range."""
    app, _ = fridge
    d = dashboard("kelvinpi-infinity.json")
    assert len(dashboard_fields("kelvinpi-infinity.json")) == 9
    now_ms = int(time.time() * 1000) + 1000
    checked = 0
    for span_ms, interval_ms in ((600_000, 500), (7 * 86400_000, 600_000)):
        macros = {**VARIABLES, "__from": str(now_ms - span_ms), "__to": str(now_ms), "__interval_ms": str(interval_ms)}
        for p in d["panels"]:
            for t in p["targets"]:
                assert t["source"] == "url" and t["parser"] == "backend" and t["url"].startswith("/")
                url = app.base_url + substitute(t["url"], macros)
                with urllib.request.urlopen(url, timeout=30) as r:
                    body = r.read().decode()
                    ctype = r.headers["Content-Type"]
                if t["type"] == "csv":
                    assert ctype.startswith("text/csv")
                    rows = csv_rows(body, t["columns"])
                else:
                    assert ctype.startswith("application/json")
                    rows = json.loads(body)
                errors = [e.message for e in jsonschema_rs.validator_for(frame_schema(t["columns"])).iter_errors(rows)]
                assert not errors, (p["title"], url, errors[:3])
                for c in t["columns"]:
                    assert any(r[c["selector"]] is not None for r in rows), (p["title"], c["selector"], url)
                if t["format"] == "timeseries":
                    times = [r["time"] for r in rows]
                    assert times == sorted(times) and len(set(times)) == len(times)
                    assert now_ms - span_ms <= times[0] and times[-1] <= now_ms, (p["title"], url)
                    assert len(rows) <= 1000 * (len(t["columns"]) - 1)
                    if (
                        span_ms > 86400_000
                    ):  # a week: from the rollups, buckets on whole 10 minutes shared by all fields
                        assert all(t_ % 600_000 == 0 for t_ in times), (p["title"], times[:5])
                checked += 1
    assert checked == 2 * sum(len(p["targets"]) for p in d["panels"])


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


def test_influxdb_dashboard_queries_read_what_the_uplink_writes(fridge):
    """The no-plugin dashboard's InfluxQL, with $timeFilter, $__interval and the node variables substituted
    as Grafana does, against influxd filled by the InfluxDB uplink: every selected column has values."""
    app, influx = fridge
    if influx is None:
        pytest.skip("Debian's influxdb is not installed (`make ci-deps` as root installs it)")
    t0 = app.t_start
    d = dashboard("kelvinpi-influxdb.json")
    targets = [(p["title"], t) for p in d["panels"] for t in p["targets"]]

    def run(q: str) -> list[dict]:
        to = int(time.time() * 1000) + 1000
        macros = {**VARIABLES, "timeFilter": f"time >= {t0}ms and time <= {to}ms", "__interval": "1s"}
        res = influx.query(substitute(q, macros))["results"][0]
        assert "error" not in res, (q, res)
        return res.get("series") or []

    def all_columns_have_values() -> bool:
        for _title, t in targets:
            series = run(t["query"])
            if not series:
                return False
            cols, values = series[0]["columns"], series[0]["values"]
            if not all(any(row[i] is not None for row in values) for i in range(1, len(cols))):
                return False
        return True

    wait_for(all_columns_have_values, 60, step=1.0, what="every dashboard query returning values for every column")
    for title, t in targets:
        series = run(t["query"])
        selected = re.findall(r'AS "([^"]+)"', t["query"]) or re.findall(r'SELECT "(\w+)"', t["query"])
        assert series[0]["columns"][1:] == selected, (title, series[0]["columns"])
        assert series[0]["name"] == substitute(re.search(r'FROM "([^"]+)"', t["query"]).group(1), VARIABLES)
