"""The generated reference pages (docs/cli.md, docs/api.md) are current, complete, and every link in the
docs and the README reaches a page and a heading that exist. Fast: no servers, no subprocesses."""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path

import pytest

from appliance import api_doc, cli_doc
from appliance.cli import build_parser
from appliance.web.openapi import spec
from firmware_host import emulator

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
DOCS = ROOT / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_cli_page_is_current():
    """docs/cli.md is what `make docs` writes now: regenerate it after changing a command or option."""
    assert _page("cli.md") == cli_doc.reference(), "docs/cli.md is stale: run `make docs`"


def test_api_page_is_current():
    """docs/api.md is what `make docs` writes now: regenerate it after changing the OpenAPI document."""
    assert _page("api.md") == api_doc.reference(), "docs/api.md is stale: run `make docs`"


def _walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(words, parser) of every command, read from argparse directly (not through cli_doc)."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, (*words, name))


def test_cli_page_names_every_command_and_option():
    """Each command has its section and each of its options and positionals is in that section."""
    page = _page("cli.md")
    commands = list(_walk(build_parser(emulator=True)))
    assert len(commands) >= 15  # kelvinpi, 6 commands, 5 curve actions, emulate's ls372/ls240/ctl
    for words, parser in commands:
        title = " ".join(("kelvinpi", *words))
        m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", page, re.M | re.S)
        assert m, f"no section for `{title}` in docs/cli.md"
        section = m.group(1)
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            spelled = action.option_strings or [action.metavar or action.dest]
            for s in spelled:
                assert re.search(rf"(`\[?|, ){re.escape(s)}\b", section), (title, s)
    for word in ("--serial-number", "--version", "--no-secrets"):
        assert word in page


def test_cli_page_lists_every_emulator_control_word():
    page = _page("cli.md")
    for word in emulator.CONTROLS:
        assert re.search(rf"^\| `{word}\b", page, re.M), f"control word {word!r} missing from docs/cli.md"


def test_an_undescribed_control_word_stops_generation(monkeypatch):
    """A word added to CONTROLS without its line in the emulator's docstring cannot reach the page silently."""
    monkeypatch.setitem(emulator.CONTROLS, "freeze", emulator.Emulator._clear)
    with pytest.raises(ValueError, match="freeze"):
        cli_doc.control_words()


def test_api_page_has_every_route_with_its_auth():
    """Every (path, method) of the OpenAPI document has a section, and token-protected ones say so."""
    page = _page("api.md")
    doc = spec()
    n = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            n += 1
            m = re.search(rf"^## {method.upper()} {re.escape(path)}\n(.*?)(?=^## |\Z)", page, re.M | re.S)
            assert m, f"{method.upper()} {path} missing from docs/api.md"
            auth = re.search(r"^Authentication: (.*)$", m.group(1), re.M)
            assert auth, (method, path)
            assert (auth.group(1) != "none.") == bool(op.get("security")), (method, path, auth.group(1))
            if {"controlToken": []} in op.get("security", []):
                assert "Bearer" in auth.group(1), (method, path, auth.group(1))
            for p in op.get("parameters", []):
                assert f"| `{p['name']}` |" in m.group(1), (method, path, p["name"])
    assert n >= 30
    for route in ("/api/v1/alarms", "/api/v1/alarms/{name}/ack", "/api/v1/panel"):
        assert f" {route}\n" in page


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings (a repeated one gets -1, -2, ...)."""
    out: set[str] = set()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if m := re.match(r"^#{1,6} (.+)$", line):
            base = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = counts.get(base, 0)
            counts[base] = n + 1
            out.add(f"{base}-{n}" if n else base)
    return out


def _strip_code(text: str) -> str:
    """The text without fenced blocks (a # in a shell block is no heading, a ](x) in code no link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT))
)
def test_links_reach_a_page_and_a_heading(page: Path):
    """Every relative link of the README and of docs/ names a file that exists and, when it names a
    heading (`page.md#heading`), a heading that page has: moved sections leave no dead link behind."""
    text = _strip_code(page.read_text(encoding="utf-8"))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            anchors = _anchors(_strip_code(dest.read_text(encoding="utf-8")))
            assert anchor in anchors, f"{page.name}: link to {target}: no such heading in {dest.name}"


README = ROOT / "README.md"


def test_readme_first_screen_shows_how_to_try_it():
    """A new lab's first screen (the first 25 lines) says how to try it and how to test it."""
    first = "\n".join(README.read_text(encoding="utf-8").splitlines()[:25])
    for command in ("make run", "make test"):
        assert re.search(rf"\b{command}\b", first), f"`{command}` has left the README's first screen"


def test_readme_configuration_examples_are_one_valid_config():
    """The README's TOML blocks (the first config, the alarm and its target, the uplinks) are what a lab
    copies: together they must pass the start-up validation as written (secret files not read)."""
    from appliance import config

    text = README.read_text(encoding="utf-8")
    blocks = [textwrap.dedent(b) for _, b in re.findall(r"^( *)```toml\n(.*?)^\1```", text, re.M | re.S)]
    assert len(blocks) >= 3, "the README lost a configuration example"
    cfg = config.parse("\n".join(blocks), "README.md")
    assert cfg.instrument and cfg.uplink and cfg.alarm and cfg.notify


def test_every_docs_page_is_in_the_index():
    """docs/README.md lists every page of docs/, so a moved section is never an orphan page."""
    index = _page("README.md")
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/{page.name} is missing from docs/README.md"
