"""``make docs``: regenerate every generated page of docs/ (``--check``: only say which are stale).

Each page is rendered by the module that owns its source: the configuration reference from the
pydantic models (appliance/config_doc.py), the command line from the argparse parsers
(appliance/cli_doc.py), the HTTP API from the OpenAPI document (appliance/api_doc.py), the
instrument settings from their declarations (appliance/settings.py). tests/test_config.py,
tests/test_docs.py and tests/test_settings_docs.py fail when a committed page differs from what
its module writes now; this runs them all at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from appliance import api_doc, cli_doc, config_doc, settings

ROOT = Path(__file__).resolve().parent.parent

# page (relative to the checkout) -> the function that writes it
PAGES: dict[str, Callable[[], str]] = {
    "docs/config.md": config_doc.reference,
    "docs/cli.md": cli_doc.reference,
    "docs/api.md": api_doc.reference,
    "docs/settings.md": settings.reference,  # the declared instrument settings, manual references and limits
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.gen_docs", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 naming every stale page")
    args = p.parse_args(argv)
    stale = []
    for page, render in PAGES.items():
        path = ROOT / page
        text = render()
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(page)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check:
        for page in stale:
            print(f"{page} is stale: run `make docs`", file=sys.stderr)
        return 1 if stale else 0
    print(f"docs: {len(stale)} of {len(PAGES)} generated page(s) rewritten{': ' + ', '.join(stale) if stale else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
