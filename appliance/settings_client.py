"""``kelvinpi setting list|get|set``: the client of the appliance's declared settings (settings.py).

It talks to a running appliance over HTTP with the control token (never to the instrument: the
appliance's poller owns the link). ``list`` prints the declarations themselves, so what the CLI
offers is what the API and the OpenAPI document offer.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from pathlib import Path

from .config import read_secret
from .curve_client import CurveClient, CurveClientError
from .settings import SETTINGS


class SettingClient(CurveClient):
    """The same HTTP call and error shape as ``CurveClient``, under ``.../settings``."""

    def __init__(self, url: str, node: str, token: str, timeout: float = 60.0) -> None:
        super().__init__(url, node, token, timeout)
        self.base = self.base.rsplit("/curves", 1)[0] + "/settings"

    def get(self, name: str, target: str | None) -> dict:
        q = f"?target={urllib.parse.quote(target)}" if target else ""
        return self._call("GET", f"/{name}{q}")

    def set(self, name: str, target: str | None, values: dict) -> dict:
        return self._call("PUT", f"/{name}", {"target": target, "values": values})


def _value(text: str, name: str = "", key: str = "") -> str | int | float:
    """The value as the field's declared type takes it: a text or channel field keeps the text
    (a name ``100`` stays a name); a number field ``7.5`` -> 7.5, ``3`` -> 3."""
    kinds = {a.kind for per in SETTINGS.values() if name in per for a in per[name].args if a.name == key}
    if kinds and kinds <= {"text", "channel"}:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _show(values: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setting", help="instrument settings on a running appliance (control API)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the appliance (default %(default)s)")
    p.add_argument("--node", help="the instrument's data node name, e.g. LSA23JD")
    p.add_argument("--token-file", help="file holding the control token (mode 0600)")
    s = p.add_subparsers(dest="action", required=True)
    s.add_parser("list", help="every declared setting: command, arguments and their limits")
    g = s.add_parser("get", help="read a setting")
    g.add_argument("name")
    g.add_argument("target", nargs="?", help="the input or output (none for the scanner)")
    w = s.add_parser("set", help="change fields of a setting; it is read back (e.g. set pid 0 p=40 i=20)")
    w.add_argument("name")
    w.add_argument("target", help="the input or output ('-' for the scanner)")
    w.add_argument("values", nargs="+", metavar="FIELD=VALUE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        for model, declared in SETTINGS.items():
            for s in declared.values():
                limits = "; ".join(a.limit() for a in s.args)
                print(f"{model} {s.name:<14} {s.command:<8} {s.target or '-':<7} {limits}")
        return 0
    if not (args.node and args.token_file):
        print("kelvinpi setting: --node and --token-file are needed to reach the appliance", file=sys.stderr)
        return 2
    try:
        token = read_secret(Path(args.token_file), "--token-file")
    except (OSError, PermissionError, ValueError) as exc:
        print(f"kelvinpi setting: {exc}", file=sys.stderr)
        return 2
    client = SettingClient(args.url, args.node, token)
    target = None if args.target in (None, "-") else args.target
    try:
        if args.action == "get":
            print(_show(client.get(args.name, target)["values"]))
        else:
            values = {}
            for word in args.values:
                key, eq, text = word.partition("=")
                if not eq:
                    print(f"kelvinpi setting: give FIELD=VALUE, not {word!r}", file=sys.stderr)
                    return 2
                values[key] = _value(text, args.name, key)
            r = client.set(args.name, target, values)
            print(f"{args.name} {r['target']}: {_show(r['values'])} (read back)")
    except (CurveClientError, OSError) as exc:
        print(f"kelvinpi setting: {exc}", file=sys.stderr)
        return 1
    return 0
