"""The test tiers (issue 23): `make check` answers in a minute because it starts no outside program, and
`make check` followed by the rest (`make test`) runs every test exactly once.

The markers are set in conftest.py from the fixtures a test uses and by hand on the rest; these tests read
the suite as pytest collects it, so a new test file that starts crossbar, influxd, Prometheus,
VictoriaMetrics or Chromium without its marker fails here, naming the test and the marker it needs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from .conftest import FIXTURE_MARKS, PARAM_MARKS, ROOT

# What in a test's own source or in one of its fixtures' sources starts an outside program.
STARTS = {
    "crossbar": re.compile(r"\bCrossbar\(|\bCROSSBAR\b"),
    "influxd": re.compile(r"\bInflux\("),
    "prometheus": re.compile(r"\bPrometheus\("),
    "victoria": re.compile(r"\bVictoriaMetrics\("),
    "chromium": re.compile(r"\bsync_playwright\b|\bchromium\.launch\("),
}

# A pytest plugin for a collect-only run: each test's markers, fixtures and the sources of the test and
# of the fixtures defined under tests/, split into what the `-m` expression selected and what it deselected.
PROBE = textwrap.dedent(
    """
    import inspect, json, os

    TESTS = os.environ["TIER_PROBE_TESTS"]
    SEEN = {"check": [], "rest": []}

    def _source(obj):
        try:
            return inspect.getsource(obj) if (inspect.getsourcefile(obj) or "").startswith(TESTS) else ""
        except (OSError, TypeError):
            return ""

    def _info(item):
        names = list(getattr(item, "fixturenames", ()))
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        sources = {n: _source(d.func) for n in names for d in defs.get(n, ())}
        sources["<test>"] = _source(getattr(item, "function", None))
        params = getattr(getattr(item, "callspec", None), "params", {})
        return {
            "id": item.nodeid,
            "marks": sorted({m.name for m in item.iter_markers()}),
            "fixtures": names,
            "params": {k: v for k, v in params.items() if isinstance(v, str)},
            "sources": {k: v for k, v in sources.items() if v},
        }

    def pytest_deselected(items):
        SEEN["rest"].extend(_info(i) for i in items)

    def pytest_collection_finish(session):
        SEEN["check"] = [_info(i) for i in session.items]
        with open(os.environ["TIER_PROBE_OUT"], "w") as f:
            json.dump(SEEN, f)
    """
)


def makefile_tiers() -> tuple[str, list[str]]:
    """The marker expression the Makefile's tiers are split on, and the recipe lines of check and test."""
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^OUTSIDE := (.+)$", text, re.M)
    assert m, "the Makefile defines no OUTSIDE := <marker expression>"
    return m.group(1).strip(), text.splitlines()


def recipe(lines: list[str], target: str) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        out.append(line.strip())
    return out


def test_every_marker_is_a_tier_and_make_test_runs_check_first_then_exactly_the_rest():
    outside, lines = makefile_tiers()
    names = set(re.split(r"\s+or\s+", outside))
    registered = {
        m.split(":")[0].strip()
        for m in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    }
    assert names == registered, f"registered markers {sorted(registered)} but the Makefile tiers on {sorted(names)}"
    assert set(FIXTURE_MARKS.values()) | set(PARAM_MARKS.values()) <= registered
    check, test = recipe(lines, "check"), recipe(lines, "test")
    assert len(check) == 1 and '-m "not ($(OUTSIDE))"' in check[0] and "tests" in check[0], check
    assert test[0] == "$(MAKE) --no-print-directory check", test  # the fast tier first
    assert len(test) == 2 and '-m "$(OUTSIDE)"' in test[1] and "tests" in test[1], test  # then its complement
    for line in (check[0], test[1]):  # pytest's exit 5 (no test selected, e.g. with -k) is not a failure
        assert line.endswith("|| [ $$? -eq 5 ]"), line
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.fixture(scope="module")
def tiers(tmp_path_factory) -> dict:
    """The suite as `make check` collects it: what it selects ("check") and what it leaves ("rest")."""
    outside, _ = makefile_tiers()
    tmp = tmp_path_factory.mktemp("tiers")
    (tmp / "tier_probe.py").write_text(PROBE)
    out = tmp / "tiers.json"
    env = dict(os.environ, PYTHONPATH=str(tmp), TIER_PROBE_OUT=str(out), TIER_PROBE_TESTS=str(ROOT / "tests"))
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "tier_probe", "-p", "no:cacheprovider"]
        + ["-m", f"not ({outside})", "tests"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counted = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", proc.stdout)
    assert counted, proc.stdout[-2000:]
    seen = json.loads(out.read_text())
    seen["selected"], seen["total"], seen["deselected"] = (int(g) for g in counted.groups())
    return seen


@pytest.mark.slow  # a collect-only run of the whole suite in a subprocess
def test_check_and_the_rest_together_are_every_test_once(tiers):
    check = [t["id"] for t in tiers["check"]]
    rest = [t["id"] for t in tiers["rest"]]
    assert len(check) == tiers["selected"] and len(rest) == tiers["deselected"]
    assert len(set(check)) == len(check) and len(set(rest)) == len(rest)
    assert not set(check) & set(rest)
    assert len(check) + len(rest) == tiers["total"]
    assert check and rest, "one tier is empty"
    print(f"check: {len(check)} tests, rest: {len(rest)}, all: {tiers['total']}")


@pytest.mark.slow
def test_no_check_test_starts_an_outside_program_and_each_is_marked_for_what_it_starts(tiers):
    missing = []
    for t in tiers["check"] + tiers["rest"]:
        need = {FIXTURE_MARKS[f] for f in t["fixtures"] if f in FIXTURE_MARKS}
        need |= {m for (name, value), m in PARAM_MARKS.items() if t["params"].get(name) == value}
        need |= {mark for mark, starts in STARTS.items() if any(starts.search(s) for s in t["sources"].values())}
        for mark in sorted(need - set(t["marks"])):
            missing.append(f"{t['id']}: needs @pytest.mark.{mark}")
    assert not missing, "\n".join(missing)
    starting = [t["id"] for t in tiers["check"] if set(t["fixtures"]) & set(FIXTURE_MARKS)]
    assert not starting, starting
    marked = {m for t in tiers["rest"] for m in t["marks"]}
    assert {"crossbar", "influxd", "chromium", "prometheus", "victoria", "slow"} <= marked


# Where each tier's tests live, as a record of the split: `make check` covers these kinds of test.
CHECK_COVERS = ("test_ls372_transcript.py", "test_config.py", "test_store.py", "test_alarms.py", "test_web.py")


@pytest.mark.slow
def test_check_covers_transcripts_config_store_alarms_and_the_web_in_process(tiers):
    files = {Path(t["id"].split("::")[0]).name for t in tiers["check"]}
    assert set(CHECK_COVERS) <= files, sorted(set(CHECK_COVERS) - files)
