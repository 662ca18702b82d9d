"""The JSON API described as OpenAPI 3.1, served at /api/v1/openapi.json (for clients and fuzzers)."""

from __future__ import annotations

from .. import __version__, settings
from ..update import web as update_routes
from . import common, control, curves

_ERROR = {"$ref": "#/components/schemas/Error"}
_TIME = {
    "oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
    "description": "UNIX seconds; a number 0 or less means that many seconds before now; or ISO 8601 "
    "after 1970 (an earlier one is refused with 400)",
}
LIMITS = (
    "Ceilings (over one: 400, 413 or 431 naming the limit): a data request names at most "
    f"{common.MAX_SERIES} distinct series (repeats collapsed) and gets at most {common.MAX_POINTS} points per series and "
    f"{common.MAX_RESPONSE_POINTS} in all (maxDataPoints is clamped); an export covers at most "
    f"{common.MAX_EXPORT_DAYS} days and {common.MAX_EXPORT_ROWS} rows; a request head is at most {common.MAX_HEAD} bytes, "
    f"a query string {common.MAX_QUERY} bytes and {common.MAX_QUERY_PARAMS} parameters, a body {common.MAX_BODY} bytes."
)


def _errors(*codes: int) -> dict:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(schema: dict, ctype: str = "application/json") -> dict:
    return {"200": {"description": "ok", "content": {ctype: {"schema": schema}}}}


FIELD_PARAM = {
    "name": "field",
    "in": "query",
    "required": True,
    "explode": True,
    "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^:]+::[^:]+$"}, "minItems": 1},
    "description": f"<node>::<field>, repeatable (repeats collapsed; at most {common.MAX_SERIES} distinct: over it, 400)",
}


def _grafana_extras() -> dict:
    """The JSON datasource's connection test (GET or POST, with or without the slash) and the
    calls of simpod's plugin that Kelvinpi answers: the series list, and empty lists for the rest."""
    root = {
        "summary": "Grafana JSON datasource: the connection test",
        "responses": _ok({"type": "object", "required": ["status"]}),
    }
    body = {"content": {"application/json": {"schema": {"type": "object"}}}}
    empty = {"requestBody": body, "responses": {**_ok({"type": "array", "maxItems": 0}), **_errors(400, 413)}}
    return {
        "/grafana": {"get": root, "post": root},
        "/grafana/": {"get": root, "post": root},
        "/grafana/metrics": {
            "post": {
                "summary": "Grafana JSON datasource: every series as {label, value}",
                "requestBody": body,
                "responses": {
                    **_ok({"type": "array", "items": {"type": "object", "required": ["label", "value"]}}),
                    **_errors(400, 413),
                },
            }
        },
        "/grafana/variable": {
            "post": {
                "summary": "Grafana JSON datasource: a query variable's values, the series whose names contain"
                " payload.target, as {__text, __value}",
                "requestBody": body,
                "responses": {
                    **_ok({"type": "array", "items": {"type": "object", "required": ["__text", "__value"]}}),
                    **_errors(400, 413),
                },
            }
        },
        **{
            f"/grafana/{name}": {"post": {"summary": f"Grafana JSON datasource: {name} (none: an empty list)", **empty}}
            for name in ("metric-payload-options", "tag-keys", "tag-values", "annotations")
        },
    }


def spec() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kelvinpi",
            "version": __version__,
            "description": "API of a Kelvinpi thermometry appliance: read-only, but for token-protected control, "
            "off by default. " + LIMITS,
        },
        "paths": {
            "/api/v1/ping": {
                "get": {
                    "summary": "a constant answer that touches nothing (liveness; the server's ceiling)",
                    "responses": _ok({"type": "object", "required": ["ok"]}),
                }
            },
            "/api/v1/health": {
                "get": {
                    "summary": "instrument, store, uplink and clock health",
                    "responses": _ok({"type": "object", "required": ["ok", "instruments", "store"]}),
                }
            },
            "/api/v1/instruments": {
                "get": {
                    "summary": "instruments and their latest configuration snapshot",
                    "responses": _ok({"type": "object"}),
                }
            },
            "/api/v1/fields": {
                "get": {
                    "summary": "every series: field, node, name, units, timeline, description",
                    "responses": _ok({"type": "object"}),
                }
            },
            "/api/v1/latest": {
                "get": {
                    "summary": "latest sample of every series, with its status bits by name, age and whether it is stale",
                    "responses": _ok(
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["field", "value", "units", "status", "t"],
                                "properties": {
                                    "field": {"type": "string"},
                                    "value": {"type": ["number", "null"]},
                                    "units": {"type": "string"},
                                    "status": {"type": "integer"},
                                    "t": {"type": "number"},
                                },
                            },
                        }
                    ),
                }
            },
            "/api/v1/data": {
                "get": {
                    "summary": "samples at least min_stride seconds apart; long ranges come from the rollups",
                    "parameters": [
                        FIELD_PARAM,
                        {"name": "start", "in": "query", "schema": _TIME},
                        {"name": "end", "in": "query", "schema": _TIME},
                        {"name": "min_stride", "in": "query", "schema": {"type": "number", "minimum": 0}},
                    ],
                    "responses": {**_ok({"type": "object"}), **_errors(400, 404)},
                }
            },
            "/api/v1/timeseries": {
                "get": {
                    "summary": "a wide table for Grafana Infinity: UNIX-ms time, one column per field (JSON or CSV)",
                    "parameters": [
                        FIELD_PARAM,
                        {
                            "name": "from",
                            "in": "query",
                            "schema": {"type": "number", "minimum": 0},
                            "description": "UNIX milliseconds (Grafana's ${__from}); default an hour before to",
                        },
                        {
                            "name": "to",
                            "in": "query",
                            "schema": {"type": "number", "minimum": 0},
                            "description": "UNIX milliseconds (Grafana's ${__to}); default now",
                        },
                        {
                            "name": "max_points",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                            "description": "points per field at most (default 1000)",
                        },
                        {"name": "interval_ms", "in": "query", "schema": {"type": "number", "minimum": 0}},
                        {
                            "name": "name",
                            "in": "query",
                            "explode": True,
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "description": "column names, one per field in the same order (default: the field names)",
                        },
                        {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
                    ],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["time"],
                                            "properties": {"time": {"type": "integer"}},
                                            "additionalProperties": {"type": ["number", "null"]},
                                        },
                                    }
                                },
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 404),
                    },
                }
            },
            "/api/v1/export.csv": {
                "get": {
                    "summary": "raw samples as CSV (streamed), each temperature with the calibration curve that produced it",
                    "parameters": [
                        {**FIELD_PARAM, "required": False},
                        {"name": "start", "in": "query", "schema": _TIME},
                        {"name": "end", "in": "query", "schema": _TIME},
                    ],
                    "responses": {**_ok({"type": "string"}, "text/csv"), **_errors(400, 404)},
                }
            },
            "/api/v1/events": {
                "get": {
                    "summary": "events, newest first: disconnects, reconnects, clock steps, retention, control changes, alarms",
                    "parameters": [{"name": "since", "in": "query", "schema": _TIME}],
                    "responses": {**_ok({"type": "object"}), **_errors(400)},
                }
            },
            "/grafana/search": {
                "post": {
                    "summary": "Grafana JSON datasource: series names",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": {"target": {"type": "string"}}}
                            }
                        }
                    },
                    "responses": {**_ok({"type": "array", "items": {"type": "string"}}), **_errors(400, 413)},
                }
            },
            "/grafana/query": {
                "post": {
                    "summary": "Grafana JSON datasource: time series (maxDataPoints and intervalMs honoured)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"type": "object", "required": ["range", "targets"]}}
                        },
                    },
                    "responses": {**_ok({"type": "array"}), **_errors(400, 413)},
                }
            },
            **_grafana_extras(),
            "/api/v1/control/{node}/setpoint": {
                "post": {
                    "summary": "set a heater setpoint on a 372, 370, 336 or 350 (off unless control.enabled; "
                    "needs the control token)",
                    "security": [{"controlToken": []}],
                    "parameters": [{"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["kelvin"],
                                    "properties": {
                                        "output": {
                                            "type": "integer",
                                            "description": "the model's output, its first by default: 372 0 sample, "
                                            "1 warm-up; 370 0; 336/350 1, 2 heaters, 3, 4 analog",
                                            "enum": [0, 1, 2, 3, 4],
                                        },
                                        "kelvin": {"type": "number", "minimum": 0},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {**_ok({"type": "object"}), **_errors(400, 401, 403, 404, 503)},
                }
            },
            **curves.openapi_paths(_ok, _errors),
            **update_routes.openapi_paths(_ok, _errors),
            **settings.openapi_paths(_ok, _errors, "/api/v1/control"),
            **control.openapi_view_paths(_ok, _errors),
            "/api/v1/panel": {
                "get": {
                    "summary": "front panel extras: store reach and wear, channels in config order",
                    "responses": _ok({"type": "object", "required": ["store", "channels"]}),
                }
            },
            "/api/v1/alarms": {
                "get": {
                    "summary": "every alarm rule's state (active, acknowledged, since, value)",
                    "responses": _ok({"type": "object", "required": ["alarms", "active"]}),
                }
            },
            "/api/v1/alarms/{name}/ack": {
                "post": {
                    "summary": "acknowledge an active alarm: its repeats stop (needs the control token, or "
                    "'Authorization: PIN <digits>' with control.ack_pin_file; wrong PINs are rate-limited: 429)",
                    "security": [{"controlToken": []}],
                    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {**_ok({"type": "object"}), **_errors(401, 403, 404, 429)},
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "this document",
                    "responses": _ok({"type": "object", "required": ["openapi", "paths"]}),
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus exposition: latest values, instrument, store, uplink and alarm health",
                    "responses": _ok({"type": "string"}, "text/plain"),
                }
            },
            "/": {"get": {"summary": "the front panel", "responses": _ok({"type": "string"}, "text/html")}},
            "/static/{path}": {
                "get": {
                    "summary": "the front panel's scripts, styles and vendored libraries",
                    "parameters": [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {**_ok({"type": "string"}, "*/*"), **_errors(400, 403, 404)},
                }
            },
        },
        "components": {
            "securitySchemes": {"controlToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "message"],
                            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
                        }
                    },
                }
            },
        },
    }
