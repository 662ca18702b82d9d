"""The HTTP API on a real socket, against the running appliance and both emulators."""

import contextlib
import csv
import io
import json
import re
import socket
import time
import urllib.error
import urllib.request

import pytest

from .conftest import wait_for


def get(app, path, expect=200):
    try:
        with urllib.request.urlopen(app.base_url + path, timeout=10) as r:
            body, status, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        body, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
    assert status == expect, (path, status, body[:300])
    return json.loads(body) if "json" in ctype else body.decode()


def post(app, path, body, expect=200, raw=False):
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(app.base_url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            out, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        out, status = e.read(), e.code
    assert status == expect, (path, status, out[:300])
    return json.loads(out)


def error_message(resp):
    assert set(resp) == {"error"} and set(resp["error"]) == {"status", "message"}
    return resp["error"]["message"]


def test_health_and_instruments(running_appliance):
    h = get(running_appliance, "/api/v1/health")
    assert h["ok"] and [i["name"] for i in h["instruments"]] == ["LSA23JD", "LSA24AZ"]
    assert all(i["connected"] for i in h["instruments"])
    inst = get(running_appliance, "/api/v1/instruments")["instruments"]
    snap = inst[0]["configuration"]
    assert snap["channels"]["A"]["inset"]["curve"] == 22 and snap["curves"]["22"]["name"] == "RX-102A-CAL"


def test_instruments_pairs_each_running_instrument_with_its_own_health(tmp_path, emu372, emu240):
    """A disabled instrument listed first has no poller: it must not shift the others' health and names."""
    from appliance import config as _config
    from appliance.service import Appliance

    from .conftest import appliance_config, wait_for

    spare = (
        '[[instrument]]\nmodel = "240"\nname = "LSA99ZZ"\nenabled = false\ntransport = "serial"\n'
        'device = "/dev/null"\n\n'
    )
    app = Appliance(_config.parse(spare + appliance_config(tmp_path, emu372, emu240)))
    app.start()
    try:
        app.base_url = f"http://127.0.0.1:{app.web_address[1]}"
        inst = wait_for(
            lambda: (lambda x: x if all(i["configuration"] for i in x) else None)(
                get(app, "/api/v1/instruments")["instruments"]
            ),
            20,
            what="a configuration snapshot of each instrument",
        )
        assert [(i["name"], i["model"]) for i in inst] == [("LSA23JD", "372"), ("LSA24AZ", "240")]
        assert [i["health"]["name"] for i in inst] == ["LSA23JD", "LSA24AZ"]
        assert inst[0]["configuration"]["channels"]["A"]["inset"]["curve"] == 22  # the 372's own snapshot
    finally:
        app.stop()


def test_fields_and_latest_follow_naming(running_appliance, emu372):
    names = {f["field"] for f in get(running_appliance, "/api/v1/fields")["fields"]}
    assert {
        "LSA23JD::mxc_control_t",
        "LSA23JD::mxc_control_r",
        "LSA24AZ::50k_plate_t",
        "LSA24AZ::4k_plate_r",
        "LSA23JD::sample_heater",
    } <= names
    latest = get(running_appliance, "/api/v1/latest")
    by = {x["field"]: x for x in latest}
    a = by["LSA23JD::mxc_control_t"]
    assert set(a) >= {"field", "value", "units", "status", "t"} and a["units"] == "K"
    assert 0.005 < a["value"] < 0.05 and abs(a["t"] - time.time()) < 10
    assert by["LSA24AZ::50k_plate_r"]["units"] == "V"
    # values equal what the emulator produces: the physics model's mixing chamber temperature
    # (emu372 is the emulator running_appliance polls: pytest gives one test one instance of a fixture)
    status = json.loads(emu372.control("status"))
    assert a["value"] == pytest.approx(status["temperatures"]["mxc"], rel=0.01)


@pytest.mark.slow
def test_data_and_strides(running_appliance):
    path = "/api/v1/data?field=LSA23JD::mxc_control_t&field=LSA23JD::mxc_control_r&start=-60"

    def five_readings():
        d = get(running_appliance, path)
        return d if len(d["fields"]["LSA23JD::mxc_control_t"]["t"]) >= 5 else None

    d = wait_for(five_readings, 20, what="five mixing chamber readings served")
    t = d["fields"]["LSA23JD::mxc_control_t"]["t"]
    assert t == d["fields"]["LSA23JD::mxc_control_r"]["t"]  # same reading, same time
    d2 = get(running_appliance, "/api/v1/data?field=LSA23JD::mxc_control_t&start=-60&end=0&min_stride=1")
    t2 = d2["fields"]["LSA23JD::mxc_control_t"]["t"]
    assert all(b - a >= 1 for a, b in zip(t2, t2[1:], strict=False)) and len(t2) < len(t)


@pytest.mark.slow  # ten appliances started and stopped (~0.8 s each under load)
@pytest.mark.parametrize(
    "path,status,words",
    [
        ("/api/v1/data", 400, "field="),
        ("/api/v1/data?field=LSA23JD::nope", 404, "unknown field 'LSA23JD::nope'"),
        ("/api/v1/data?field=LSA23JD::mxc_control_t&start=yesterday", 400, "start='yesterday' is not a time"),
        ("/api/v1/data?field=LSA23JD::mxc_control_t&start=nan", 400, "start"),
        ("/api/v1/data?field=LSA23JD::mxc_control_t&min_stride=-3", 400, "min_stride"),
        ("/api/v1/data?field=LSA23JD::mxc_control_t&start=100&end=50", 400, "before start"),
        ("/api/v1/export.csv?field=bogus", 404, "unknown field"),
        ("/api/v1/nothing", 404, "no such resource"),
        ("/api/v1/events?since=yesterday&since=8", 400, "since is given 2 times"),  # not read as the last copy
        ("/api/v1/data?field=LSA23JD::mxc_control_t&start=-60&start=x", 400, "start is given 2 times"),
        ("/api/v1/timeseries?field=LSA23JD::mxc_control_t&to=1&to=2", 400, "to is given 2 times"),
        ("/no/such/page", 404, "no such resource"),
    ],
)
def test_bad_requests_have_one_error_shape(running_appliance, path, status, words):
    msg = error_message(get(running_appliance, path, expect=status))
    assert words in msg


def test_wrong_method_and_malformed_json(running_appliance):
    req = urllib.request.Request(running_appliance.base_url + "/api/v1/latest", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405 and "not allowed" in error_message(json.loads(e.value.read()))
    msg = error_message(post(running_appliance, "/grafana/query", b"{not json", expect=400, raw=True))
    assert msg.startswith("malformed JSON")
    assert "range" in error_message(post(running_appliance, "/grafana/query", {"targets": []}, expect=400))
    # a body declared over the limit is refused before it is read
    host, port = running_appliance.web_address[:2]
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(
        b"POST /grafana/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000000\r\n\r\n" + b"{" * 1000
    )
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    assert reply.startswith(b"HTTP/1.1 413") and b"limit" in reply


def test_malformed_http_does_not_hurt(running_appliance):
    host, port = running_appliance.web_address[:2]
    for junk in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET /api/v1/health HTTP/9.9\r\n\r\n", b"GET " + b"a" * 70000):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(junk)
        with contextlib.suppress(OSError):
            s.recv(1000)
        s.close()
    assert get(running_appliance, "/api/v1/health")["ok"]


def test_export_csv_names_the_curve(running_appliance):
    text = get(
        running_appliance, "/api/v1/export.csv?field=LSA23JD::mxc_control_t&field=LSA24AZ::50k_plate_t&start=-60"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and {r["field"] for r in rows} == {"LSA23JD::mxc_control_t", "LSA24AZ::50k_plate_t"}
    r372 = next(r for r in rows if r["field"].startswith("LSA23JD"))
    assert r372["curve"] == "22:RX-102A-CAL:EMU-MXC" and float(r372["value"]) > 0
    r240 = next(r for r in rows if r["field"].startswith("LSA24AZ"))
    assert r240["curve"].startswith("input:DT-600")


def test_grafana_datasource(running_appliance):
    assert get(running_appliance, "/grafana/")["status"] == "ok"
    names = post(running_appliance, "/grafana/search", {"target": "mxc"})
    assert "LSA23JD::mxc_control_t" in names and all("mxc" in n for n in names)
    now = time.time()
    body = {
        "range": {
            "from": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 120)),
            "to": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now + 1)),
        },
        "intervalMs": 100,
        "maxDataPoints": 5,
        "targets": [
            {"target": "LSA23JD::mxc_control_t", "refId": "A", "type": "timeserie"},
            {"target": "LSA23JD::unknown", "refId": "B"},
        ],
    }
    out = post(running_appliance, "/grafana/query", body)
    assert [o["target"] for o in out] == ["LSA23JD::mxc_control_t", "LSA23JD::unknown"]
    pts = out[0]["datapoints"]
    assert 1 <= len(pts) <= 5 and all(0.005 < v < 0.05 for v, _ in pts)
    assert all((now - 121) * 1000 <= t <= (now + 2) * 1000 for _, t in pts)
    assert out[1]["datapoints"] == []
    body["interval"] = "1y"
    del body["intervalMs"]
    assert post(running_appliance, "/grafana/query", body)[0]["datapoints"] == []  # 1 y stride: nothing in 2 min
    body["interval"] = "bogus"
    assert "interval" in error_message(post(running_appliance, "/grafana/query", body, expect=400))


def test_metrics(running_appliance):
    text = get(running_appliance, "/metrics")
    assert 'kelvinpi_temperature_kelvin{field="LSA23JD::mxc_control_t",node="LSA23JD"}' in text
    assert 'kelvinpi_resistance_ohms{field="LSA23JD::mxc_control_r"' in text
    assert 'kelvinpi_instrument_up{model="240",node="LSA24AZ"} 1.0' in text
    assert "kelvinpi_store_commit_seconds" in text and "kelvinpi_store_file_bytes" in text


def test_front_panel_assets(running_appliance):
    html = get(running_appliance, "/")
    assert "uPlot.iife.min.js" in html
    js = get(running_appliance, "/static/vendor/uPlot.iife.min.js")
    assert "uPlot" in js


def served_routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route the running Bottle app has: ``<node>`` and
    ``<number:int>`` written as ``{node}`` and ``{number}``."""
    bottle_app = app.server.application
    return {(re.sub(r"<(\w+)(?::[^>]*)?>", r"{\1}", r.rule), r.method.lower()) for r in bottle_app.routes}


def test_every_route_is_documented_and_every_documented_route_served(running_appliance):
    spec = get(running_appliance, "/api/v1/openapi.json")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    served = served_routes(running_appliance)
    assert ("/api/v1/control/{node}/curves/{number}", "put") in served  # the rule rewriting works
    assert served - documented == set(), "served but not in the OpenAPI document"
    assert documented - served == set(), "in the OpenAPI document but not served"


def test_openapi_describes_the_routes(running_appliance):
    spec = get(running_appliance, "/api/v1/openapi.json")
    assert spec["openapi"].startswith("3.")
    for path, ops in spec["paths"].items():
        for method in ops:
            if method == "get" and "{" not in path:
                req = urllib.request.Request(running_appliance.base_url + path)
                try:
                    status = urllib.request.urlopen(req, timeout=10).status
                except urllib.error.HTTPError as e:
                    status = e.code
                assert str(status) in ops[method]["responses"], (path, status)
