"""Bad input everywhere (issue 6, scenario 6): the HTTP API fuzzed by schemathesis from the OpenAPI
description it serves, the config loader and the WAMP procedures' arguments by hypothesis.
Every case must get a clear answer; the service stays up; no traceback reaches the client."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance  # see below

from appliance import config as _config
from appliance.service import Appliance
from firmware_host.emulator import Emulator
from tests.conftest import appliance_config, wait_for

pytestmark = pytest.mark.slow  # schemathesis and hypothesis campaigns


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    e372, e240 = Emulator.ls372(seed=11), Emulator.ls240(seed=12)
    e372.listen_tcp("127.0.0.1", 0)
    e240.listen_pty(str(tmp / "ls240"))
    app = Appliance(_config.parse(appliance_config(tmp, e372, e240)))
    app.start()
    wait_for(lambda: app.store.written > 20, 20, what="some data to serve")
    yield app
    app.stop()
    e372.stop()
    e240.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_target):
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{fuzz_target.web_address[1]}/api/v1/openapi.json")


@schemathesis.check
def no_traceback(ctx, response, case):
    text = response.text or ""
    if "Traceback" in text or 'File "' in text:
        raise AssertionError(f"a traceback leaked to the client: {text[:200]!r}")


@pytest.mark.timeout(300)  # about 40 operations x 2 modes x 30 requests; slower beside the suite's other workers
def test_http_api_fuzzed(api_schema, fuzz_target):
    """Every operation of /api/v1/openapi.json, 30 generated requests per generation mode each, all checks on but one:
    schema-valid requests that break a cross-field rule (end before start, a range wider than the
    export limit) are answered 400 with a message, which the schema cannot express."""
    ran = []
    for result in api_schema.get_all_operations():
        op = result.ok()
        for mode in GenerationMode:  # valid requests, then wrong types, missing and malformed values

            @given(op.as_strategy(generation_mode=mode))
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def run(case):
                response = case.call_and_validate(
                    additional_checks=[no_traceback], excluded_checks=[positive_data_acceptance]
                )
                assert response.status_code < 500, response.text
                if response.status_code == 400:  # includes rules OpenAPI cannot state (start < end)
                    assert response.json()["error"]["message"], response.text

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, op.label  # no parameters to break (e.g. /health)
                continue
            ran.append(f"{op.label} ({mode.value})")
    print("schemathesis:", len(ran), "operations:", ", ".join(ran))
    assert len(ran) >= 12
    assert all(p.is_alive() for p in fuzz_target.pollers) and fuzz_target.store._thread.is_alive()


# -- the config loader ------------------------------------------------------------------------
from pathlib import Path  # noqa: E402

from hypothesis import strategies as st  # noqa: E402

GOOD = (Path(__file__).parent / "config_cases" / "good" / "kelvinpi.toml").read_text().splitlines()

toml_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(f), repr(f))
    ),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=80).map(
        lambda s: (
            '"'
            + s.replace("\\", "\\\\")
            .replace('"', '\\"')
            .encode("unicode_escape")
            .decode("ascii")
            .replace("\\\\\\", "\\")
            + '"'
        )
    ),
    st.sampled_from(["[]", '[1, "a"]', "{}", "{ a = 1 }", "1979-05-27T07:32:00Z", '""', "-0", "0x10"]),
)


@st.composite
def mutated_configs(draw) -> str:
    lines = list(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "delete", "duplicate", "junk", "key"]))
        if op == "value" and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + draw(toml_values)
        elif op == "delete":
            del lines[i]
            if not lines:
                lines = [""]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "junk":
            lines.insert(i, draw(st.text(max_size=40)))
        elif op == "key":
            lines.insert(i, draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True)) + " = " + draw(toml_values))
    return "\n".join(lines) + "\n"


@given(mutated_configs())
@settings(max_examples=400, deadline=None, database=None)
def test_config_loader_fuzzed(text):
    """A broken config is refused with every problem named and located, never with a traceback."""
    try:
        _config.parse(text, "kelvinpi.toml")
    except _config.ConfigError as exc:
        msg = str(exc)
        assert exc.problems and msg
        for line in msg.splitlines():
            assert line.startswith("kelvinpi.toml"), line
            assert "Traceback" not in line and "pydantic" not in line.lower(), line


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None, database=None)
def test_config_loader_on_arbitrary_text(text):
    try:
        _config.parse(text, "kelvinpi.toml")
    except _config.ConfigError as exc:
        assert str(exc).startswith("kelvinpi.toml")


# -- the WAMP procedures' arguments ------------------------------------------------------------
wamp_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.one_of(st.text(max_size=20), st.integers(), st.none()), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from([1e308, -1e308, 2**63, -(2**63) - 1, 5e-324, -1.0, 0]),
)


@given(
    field=st.one_of(wamp_values, st.lists(st.sampled_from(["mxc_control_t", "mxc_control_r", "nope", ""]), max_size=4)),
    start=st.one_of(st.sampled_from([-3600, -60, 0]), wamp_values),
    end=st.one_of(st.sampled_from([0, -1, 1e12]), wamp_values),
    min_stride=wamp_values,
)
@example(field=["mxc_control_t"], start=-3600, end=0, min_stride=1e308)  # once an OverflowError in SQLite
@example(field=["mxc_control_t"], start=-3600, end=1e300, min_stride=None)
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_wamp_procedure_arguments_fuzzed(fuzz_target, field, start, end, min_stride):
    """get_data / get_fields as the router hands them over: any argument gets data or an
    invalid_argument error with a message; nothing else escapes, nothing NaN goes on the wire."""
    import json

    from autobahn.wamp.exception import ApplicationError

    from appliance.uplinks.sisock import DataNode

    node = DataNode(fuzz_target.store, "LSA23JD", "fuzz")
    for call in (lambda: node.get_data(field, start, end, min_stride=min_stride), lambda: node.get_fields(start, end)):
        try:
            out = call()
        except ApplicationError as exc:
            assert exc.error == "org.simonsobservatory.error.invalid_argument" and exc.args[0], exc
            continue
        json.dumps(out, allow_nan=False)
