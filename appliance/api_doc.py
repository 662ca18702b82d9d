"""docs/api.md, the HTTP API reference, generated from the OpenAPI document the appliance serves.

``appliance/web/openapi.py`` ``spec()`` builds ``/api/v1/openapi.json`` without a running server,
and tests/test_web.py holds it equal to the routes the Bottle app serves (every served route
documented, every documented route served). This module renders that same dict for people: one
table of every route, then each route with its authentication, parameters, request body and
responses. ``make docs`` rewrites the page; tests/test_docs.py fails when the committed copy is
stale, so a new route or parameter cannot be left out. The document's version is left out of
the page on purpose: a release bump is not a change to the API.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from .web.openapi import spec

METHODS = ("get", "put", "post", "delete", "patch")

HEADER = """\
# HTTP API reference

<!-- Generated from appliance/web/openapi.py (the document served at /api/v1/openapi.json) by `make docs`
(python -m appliance.api_doc); do not edit by hand. -->

The appliance serves this API on `web.bind`:`web.port` (`http://<pi>:8080` by default;
[config.md](config.md#web)). The same description, machine-readable, is `GET /api/v1/openapi.json`
(OpenAPI 3.1). What the server does with slow clients, proxies and many screens is in
[operations.md](operations.md#serving-the-api).
"""


def _cell(text: str) -> str:
    """Text for a Markdown table cell: outside `code` <node> is no HTML tag (inside, an entity would
    show as written); everywhere a | splits no column and a newline ends no row."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def schema_text(schema: dict[str, Any]) -> str:
    """A one-line reading of a JSON schema: ``array of string matching ^[^:]+::[^:]+$, at least 1``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "oneOf" in schema:
        return " or ".join(schema_text(s) for s in schema["oneOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    facts = []
    if kind == "array" and "items" in schema:
        kind = f"array of {schema_text(schema['items'])}"
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", [])
        named = [f"{n}{'' if n in required else '?'}: {schema_text(s)}" for n, s in props.items()]
        named += [f"{n}" for n in required if n not in props]
        if named:
            kind = "object {" + ", ".join(named) + "}"
        if isinstance(schema.get("additionalProperties"), dict):
            kind += f", other keys {schema_text(schema['additionalProperties'])}"
    for key, fmt in (
        ("format", "{}"),
        ("pattern", "matching `{}`"),
        ("minimum", ">= {}"),
        ("maximum", "<= {}"),
        ("minItems", "at least {} item{}"),
        ("maxItems", "at most {} item{}"),
    ):
        if key in schema:
            facts.append(fmt.format(schema[key], "" if schema[key] == 1 else "s"))
    return ", ".join([kind, *facts])


def _auth(op: dict[str, Any], doc: dict[str, Any]) -> str:
    """What a request must carry: OpenAPI's ``security`` is a list of alternatives, each naming
    schemes that are all needed together."""
    schemes = doc.get("components", {}).get("securitySchemes", {})

    def one(name: str) -> str:
        s = schemes.get(name, {})
        if s.get("type") == "http" and s.get("scheme") == "bearer":
            return "control token (`Authorization: Bearer <token>`)"
        return s.get("description") or f"`{name}`"

    alternatives = [" and ".join(one(n) for n in req) for req in op.get("security", []) if req]
    return " or ".join(alternatives) if alternatives else "none"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, spaces to -, punctuation other than - and _ dropped."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def routes(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) in the document's order."""
    return [(path, m, ops[m]) for path, ops in doc["paths"].items() for m in METHODS if m in ops]


def _sentence(text: str) -> str:
    return _cell(text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def _operation(path: str, method: str, op: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    out = [f"## {method.upper()} {path}", "", _sentence(op.get("summary", ""))]
    out += ["", f"Authentication: {_cell(_auth(op, doc))}.", ""]
    params = op.get("parameters", [])
    if params:
        out += ["| parameter | in | required | type | meaning |", "|---|---|---|---|---|"]
        for p in params:
            many = " (repeatable)" if p.get("explode") and p.get("schema", {}).get("type") == "array" else ""
            out.append(
                f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                f"{_cell(schema_text(p.get('schema', {})))}{many} | "
                f"{_cell(p.get('description') or p.get('schema', {}).get('description', ''))} |"
            )
        out.append("")
    body = op.get("requestBody")
    if body:
        for ctype, media in body.get("content", {}).items():
            req = "required" if body.get("required") else "optional"
            out += [f"Request body ({req}, `{ctype}`): {_cell(schema_text(media.get('schema', {})))}.", ""]
    out += ["| status | content | body |", "|---|---|---|"]
    for status, resp in op.get("responses", {}).items():
        content = resp.get("content", {})
        if not content:
            out.append(f"| {status} |  | {_cell(resp.get('description', ''))} |")
        for ctype, media in content.items():
            out.append(f"| {status} | `{ctype}` | {_cell(schema_text(media.get('schema', {})))} |")
    out.append("")
    return out


def reference(doc: dict[str, Any] | None = None) -> str:
    """docs/api.md: the introduction, a table of every route, then every route in full."""
    doc = doc or spec()
    out = [HEADER, _cell(doc["info"].get("description", "")), ""]
    error = doc.get("components", {}).get("schemas", {}).get("Error")
    if error:
        out += [
            "Every error answer is JSON of one shape, `Error`: "
            '`{"error": {"status": <HTTP status>, "message": "<what was wrong, naming the input>"}}`.',
            "",
        ]
    out += ["| method | path | authentication | what |", "|---|---|---|---|"]
    seen: dict[str, int] = {}
    for path, method, op in routes(doc):
        anchor = _anchor(f"{method.upper()} {path}")
        n = seen.get(anchor, 0)
        seen[anchor] = n + 1
        anchor = f"{anchor}-{n}" if n else anchor  # GitHub numbers a repeated heading's anchor
        auth = "token" if op.get("security") else ""
        out.append(f"| {method.upper()} | [`{path}`](#{anchor}) | {auth} | {_cell(op.get('summary', ''))} |")
    out.append("")
    for path, method, op in routes(doc):
        out += _operation(path, method, op, doc)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m appliance.api_doc [--write docs/api.md]``."""
    p = argparse.ArgumentParser(prog="python -m appliance.api_doc", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--write", type=Path, help="write the reference to this file instead of stdout")
    args = p.parse_args(argv)
    text = reference()
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
