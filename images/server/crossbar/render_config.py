#!/usr/bin/env python3
"""Render config.json for crossbar, replacing every "$NAME" string value from the environment.

Crossbar 26.10 substitutes "$VAR" in endpoint ports but not in WAMP-CRA secrets of a web
transport's websocket path (the router worker gets the unsubstituted copy: verified), so the
secrets are put in here, with Python's json (secrets may contain & or quotes), into a file
readable only by its owner.

    render_config.py TEMPLATE OUTPUT   # env: WAMP_SECRET, WAMP_CONSUMER_SECRET, CROSSBAR_*_PORT, CROSSBAR_*INTERFACE
"""

import json
import os
import re
import sys

VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


def render(value):
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items() if k != "$schema"}
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, str):
        m = VAR.match(value)
        if m:
            name = m.group(1)
            if name not in os.environ:
                sys.exit(f"render_config: environment variable {name} is not set")
            v = os.environ[name]
            return int(v) if name.endswith("_PORT") else v
    return value


def main(template: str, output: str) -> None:
    with open(template, encoding="utf-8") as f:
        config = render(json.load(f))
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    os.chmod(output, 0o600)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
