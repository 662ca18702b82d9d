"""docs/settings.md (issue 22): every declared setting with its manual reference and limits, written from
the declarations. Fast: no emulator, no appliance."""

from __future__ import annotations

import re

from appliance import settings
from appliance.settings import SETTINGS
from tests.conftest import ROOT

PAGE = ROOT / "docs/settings.md"


def test_settings_page_is_current():
    """docs/settings.md is what `python -m tools.gen_docs` writes now: regenerate it after changing a declaration."""
    assert PAGE.read_text(encoding="utf-8") == settings.reference(), "docs/settings.md is stale: run `make docs`"


def test_every_setting_names_its_manual_reference_and_every_limit():
    page = settings.reference()
    for model, declared in SETTINGS.items():
        section = page.split(f"## Model {model}\n")[1].split("\n## Model ")[0]
        for name, s in declared.items():
            # a page (p.N) or a section (§N.N) of the instrument's manual, or a plain "page not at hand"
            assert re.search(r"p\.\d+|§\d|page not at hand", s.manual), (model, name, s.manual)
            if "§6.6.1" in s.manual and not re.search(r"p\.\d+", s.manual.split(":")[0]):
                assert "not at hand" in s.manual, (model, name, "a command page without a page number")
            part = section.split(f"### `{name}` ({s.command})\n")[1].split("\n### ")[0]
            assert f"Manual: {s.manual}." in part
            for a in s.args:
                assert f"| `{a.name}` | {a.limit()}" in part, (model, name, a.name)
                for target, hi in a.hi_for.items():
                    assert f"{s.target} {target}: up to {hi:g}" in part, (model, name, a.name, target)
