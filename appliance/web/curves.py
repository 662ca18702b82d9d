"""The curve routes under ``/api/v1/control/<node>/curves`` (operations: appliance/curve_api.py).

Each needs the control token (``ControlAccess``, web/control.py) and runs ``CurveService`` on
the instrument's poller; a refusal is the one error shape with the ``ControlRefused`` status.
"""

from __future__ import annotations

from collections.abc import Callable

from bottle import Bottle, HTTPError, request

from ..control import ControlRefused
from ..curve_api import CurveService
from .common import API as V1
from .common import read_json
from .control import ControlAccess

API = f"{V1}/control"


def install(app: Bottle, *, access: ControlAccess) -> None:
    def guarded(fn):
        def handler(*args, **kwargs):
            try:
                ctl = access.authorize("instrument control is disabled")
                return fn(CurveService(ctl), *args, **kwargs)
            except ControlRefused as exc:
                raise HTTPError(exc.status, str(exc)) from None

        return handler

    body, who = read_json, access.who  # the size limit and JSON errors; the peer who changed a curve

    app.get(f"{API}/<node>/curves")(guarded(lambda s, node: s.list(node)))
    app.get(f"{API}/<node>/curves/<number:int>")(guarded(lambda s, node, number: s.show(node, number)))
    app.put(f"{API}/<node>/curves/<number:int>")(guarded(lambda s, node, number: s.upload(node, number, body(), who())))
    app.post(f"{API}/<node>/curves/<number:int>/verify")(
        guarded(lambda s, node, number: s.verify(node, number, body()))
    )
    app.delete(f"{API}/<node>/curves/<number:int>")(
        guarded(lambda s, node, number: s.delete(node, number, who(), force=request.query.get("force") == "true"))
    )


def openapi_paths(ok: Callable[..., dict], errors: Callable[..., dict]) -> dict:
    """The curve routes for /api/v1/openapi.json (``ok``/``errors`` are openapi.py's helpers)."""
    node = {"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}
    number = {"name": "number", "in": "path", "required": True, "schema": {"type": "integer"}}
    file_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["text"],
                    "properties": {
                        "text": {"type": "string", "description": "the .340 file"},
                        "filename": {"type": "string"},
                        "force": {
                            "type": "boolean",
                            "description": "replace a curve an input uses (without it: 409 naming the inputs)",
                        },
                    },
                }
            }
        },
    }
    sec: list[dict[str, list[str]]] = [{"controlToken": []}]
    fails = errors(400, 401, 403, 404, 409, 413, 503)
    return {
        f"{API}/{{node}}/curves": {
            "get": {
                "summary": "headers of the instrument's stored curves (needs the control token)",
                "security": sec,
                "parameters": [node],
                "responses": {**ok({"type": "object"}), **fails},
            }
        },
        f"{API}/{{node}}/curves/{{number}}": {
            "get": {
                "summary": "one curve: header, points and .340 text",
                "security": sec,
                "parameters": [node, number],
                "responses": {**ok({"type": "object"}), **fails},
            },
            "put": {
                "summary": "upload a .340 file, read every point back",
                "security": sec,
                "parameters": [node, number],
                "requestBody": file_body,
                "responses": {**ok({"type": "object"}), **fails},
            },
            "delete": {
                "summary": "delete a user curve (its old content is kept in the store)",
                "security": sec,
                "parameters": [
                    node,
                    number,
                    {
                        "name": "force",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["true", "false"]},
                        "description": "delete a curve an input uses (without it: 409 naming the inputs)",
                    },
                ],
                "responses": {**ok({"type": "object"}), **fails},
            },
        },
        f"{API}/{{node}}/curves/{{number}}/verify": {
            "post": {
                "summary": "compare a .340 file with the instrument's curve",
                "security": sec,
                "parameters": [node, number],
                "requestBody": file_body,
                "responses": {**ok({"type": "object"}), **fails},
            }
        },
    }
