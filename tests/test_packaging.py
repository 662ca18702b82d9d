"""Packaging that matches what runs: declared imports, no test helpers or emulator in the runtime."""

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("appliance", "drivers", "firmware_host")  # what setuptools installs (pyproject packages.find)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(path: Path) -> set[str]:
    """Top-level modules a file imports anywhere (lazy imports inside functions too: firstboot's yaml was one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.slow
def test_every_runtime_import_is_a_declared_dependency():
    """An import of a package that only the test extra (or nothing) installs crashes on the Pi."""
    declared = {_norm(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in _pyproject()["project"]["dependencies"]}
    dists = importlib.metadata.packages_distributions()
    problems = []
    for pkg in SHIPPED:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for mod in _imports(f):
                if mod in sys.stdlib_module_names or mod in SHIPPED or mod == "__future__":
                    continue
                names = {_norm(d) for d in dists.get(mod, [])}
                if not names & declared:
                    problems.append(
                        f"{f.relative_to(ROOT)}: imports {mod} ({sorted(names) or 'not installed'}),"
                        " not in [project].dependencies"
                    )
    assert problems == []


def test_the_shipped_packages_do_not_import_tests_or_tools():
    for pkg in SHIPPED:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            assert not _imports(f) & {"tests", "tools"}, f
            assert "sys.path" not in f.read_text(encoding="utf-8"), f"{f}: edits sys.path"
    assert not (ROOT / "appliance" / "bench.py").exists() and not (ROOT / "appliance" / "devrun.py").exists()


@pytest.mark.slow
def test_the_runtime_never_loads_the_emulator_or_the_tests():
    """`kelvinpi run` (service + cli, a config parsed, the parser built) leaves firmware_host and tests unloaded;
    `kelvinpi emulate` loads the emulator only when asked."""
    probe = (
        "import sys\n"
        "import appliance.service, appliance.cli, appliance.config_doc, appliance.firstboot\n"
        "appliance.cli.build_parser(emulator=False).parse_args(['run', '--config', 'x.toml'])\n"
        "appliance.config_doc.sample()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('firmware_host', 'tests', 'tools'))\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    # through the real entry point (main() picks the parser from argv)
    cfg_probe = (
        "import sys\n"
        "sys.argv = ['kelvinpi', 'sample-config']\n"
        "import appliance.cli\n"
        "try:\n    appliance.cli.main()\n"
        "finally:\n    print('LOADED', sorted(m for m in sys.modules if m.startswith('firmware_host')), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", cfg_probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "LOADED []" in proc.stderr, proc.stderr
    emu = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "emulate", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert emu.returncode == 0 and "ls372" in emu.stdout and "ls240" in emu.stdout


def test_license_is_an_spdx_string_and_autobahn_is_core():
    """The license table is deprecated (setuptools warns on every install); the uplinks need autobahn."""
    project = _pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"
    deps = {_norm(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    assert {"autobahn", "pyyaml"} <= deps


@pytest.mark.slow
def test_version_names_the_release_and_the_store_schema():
    """`kelvinpi --version` says both, so a lab can tell which store schema a release writes."""
    import appliance
    from appliance.store import SCHEMA_VERSION

    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert out == f"kelvinpi {appliance.__version__} (store schema {SCHEMA_VERSION})"
    assert importlib.metadata.version("kelvinpi") == appliance.__version__  # pyproject's version is the package's
