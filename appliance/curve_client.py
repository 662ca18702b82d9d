"""``kelvinpi curve list|show|upload|verify|delete``: the client of the appliance's curve API.

It talks to a running appliance over HTTP with the control token (never to the instrument
itself: the appliance's poller owns the link). The token comes from a 0600 file.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .config import read_secret


class CurveClientError(Exception):
    """The appliance refused or could not be reached; the message is the appliance's own."""


class CurveClient:
    def __init__(self, url: str, node: str, token: str, timeout: float = 150.0) -> None:
        self.base = f"{url.rstrip('/')}/api/v1/control/{node}/curves"
        self.token, self.timeout = token, timeout

    def _call(self, method: str, path: str = "", body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = e.reason
            raise CurveClientError(f"HTTP {e.code}: {message}") from None
        except (urllib.error.URLError, OSError) as e:
            raise CurveClientError(f"cannot reach {self.base}: {getattr(e, 'reason', e)}") from None

    def list(self) -> list[dict]:
        return self._call("GET")["curves"]

    def show(self, number: int) -> dict:
        return self._call("GET", f"/{number}")

    def upload(self, number: int, text: str, filename: str = "", force: bool = False) -> dict:
        return self._call("PUT", f"/{number}", {"text": text, "filename": filename, "force": force})

    def verify(self, number: int, text: str, filename: str = "") -> dict:
        return self._call("POST", f"/{number}/verify", {"text": text, "filename": filename})

    def delete(self, number: int, force: bool = False) -> dict:
        return self._call("DELETE", f"/{number}" + ("?force=true" if force else ""))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curve", help="calibration curves on a running appliance's instrument (control API)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the appliance (default %(default)s)")
    p.add_argument("--node", required=True, help="the instrument's data node name, e.g. LSA23JD")
    p.add_argument("--token-file", required=True, help="file holding the control token (mode 0600)")
    csub = p.add_subparsers(dest="action", required=True)
    csub.add_parser("list", help="headers of the stored curves")
    s = csub.add_parser("show", help="print one curve as a .340 file")
    s.add_argument("number", type=int)
    for name, text in (
        ("upload", "write a .340 file into a curve slot and read every point back"),
        ("verify", "compare a .340 file with the instrument's curve (changes nothing)"),
    ):
        q = csub.add_parser(name, help=text)
        q.add_argument("number", type=int, help="372: user curve 21-59; 240: the input 1-8")
        q.add_argument("file", help="the .340 file")
        if name == "upload":
            q.add_argument("--force", action="store_true", help="replace a curve an input uses")
    d = csub.add_parser("delete", help="delete a user curve")
    d.add_argument("number", type=int)
    d.add_argument("--force", action="store_true", help="delete a curve an input uses")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        token = read_secret(Path(args.token_file), "--token-file")
    except (OSError, PermissionError, ValueError) as exc:
        print(f"kelvinpi curve: {exc}", file=sys.stderr)
        return 2
    client = CurveClient(args.url, args.node, token)
    try:
        if args.action == "list":
            for c in client.list():
                print(
                    f"{c['number']:3d}  {c['name']:<15}  {c['serial']:<10}  format {c['data_format']}  "
                    f"limit {c['limit']:g} K  coefficient {c['coefficient']}"
                )
        elif args.action == "show":
            sys.stdout.write(client.show(args.number)["text"])
        elif args.action in ("upload", "verify"):
            text = Path(args.file).read_text(encoding="ascii", errors="replace")
            if args.action == "upload":
                r = client.upload(args.number, text, args.file, force=args.force)
                print(f"curve {r['number']}: {r['name']} {r['serial']}, {r['points']} points written and read back")
            else:
                r = client.verify(args.number, text, args.file)
                print(f"curve {r['number']}: " + ("same as the file" if r["same"] else r["difference"]))
                return 0 if r["same"] else 1
        elif args.action == "delete":
            client.delete(args.number, force=args.force)
            print(f"curve {args.number} deleted")
    except (CurveClientError, OSError) as exc:
        print(f"kelvinpi curve: {exc}", file=sys.stderr)
        return 1
    return 0
