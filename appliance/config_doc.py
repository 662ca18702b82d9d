"""The configuration reference and ``kelvinpi sample-config``, generated from the pydantic models.

Every key is declared once, in ``appliance/config.py``: its type, default, constraints and
description. This module walks those models and writes two views of them, as Telegraf and
datasette document every setting:

* ``sample()``: a commented kelvinpi.toml (what ``kelvinpi sample-config`` prints). Every key
  appears with its description; keys with a default are commented out showing the default;
  the example instruments are live, so the sample loads and validates as printed.
* ``reference()``: ``docs/config.md``, one table per section (key, type, default, constraints,
  description). ``make config-doc`` rewrites it; a test fails when the committed copy is stale.

The only things written here by hand are *examples* (values a lab must choose: a model, an
address, a URL), since no default could stand for them. A key that has neither a default nor an
example makes generation fail, so a new key cannot be left out of either view.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import tomli_w
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import Config

# Values shown for keys a lab must choose (no default could stand for them), by section and key.
# A section of one uplink kind is "uplink.<kind>".
EXAMPLES: dict[str, dict[str, Any]] = {
    "instrument": {
        "model": "372",
        "name": "LSA23JD",
        "transport": "tcp",
        "host": "192.168.1.50",
        "device": "/dev/ttyUSB0",
        "serial_number": "LSA23JD",
        "resource": "TCPIP::192.168.1.50::7777::SOCKET",
        "expect_serial": "LSA23JD",
    },
    "instrument.channel": {"number": 5, "name": "MXC"},
    "control": {"token_file": "/data/secrets/control-token", "ack_pin_file": "/data/secrets/ack-pin"},
    "uplink.sisock": {
        "url": "wss://control-room.example:8080/ws",
        "secret_file": "/data/secrets/wamp-secret",
        "ca_file": "/data/secrets/router-cert.pem",
    },
    "uplink.ocs": {
        "url": "wss://control-room.example:8080/ws",
        "authid": "kelvinpi",
        "secret_file": "/data/secrets/ocs-secret",
        "ca_file": "/data/secrets/router-cert.pem",
    },
    "uplink.influxdb": {
        "url": "http://control-room.example:8086",
        "database": "kelvinpi",
        "bucket": "kelvinpi",
        "org": "lab",
        "username": "kelvinpi",
        "password_file": "/data/secrets/influx-password",
        "token_file": "/data/secrets/influx-token",
    },
    "uplink.remote_write": {
        "url": "https://metrics.example:8428/api/v1/write",
        "username": "kelvinpi",
        "labels": {"site": "lab2"},
        "password_file": "/data/secrets/remote-write-password",
        "token_file": "/data/secrets/remote-write-token",
        "ca_file": "/data/secrets/ca.pem",
    },
    "alarm.above": {"notify": ["on-call"], "name": "mxc-warm", "field": "LSA23JD::mxc_t", "threshold": 0.05},
    "alarm.rate": {"notify": ["on-call"], "name": "warming-up", "field": "LSA23JD::mxc_t", "threshold": 0.01},
    "alarm.no_data": {"notify": ["on-call"], "name": "mxc-silent", "field": "LSA23JD::mxc_t"},
    "alarm.disconnected": {"notify": ["on-call"], "name": "bridge-gone", "instrument": "LSA23JD"},
    "alarm.store_not_writing": {"notify": ["on-call"], "name": "store-stuck"},
    "alarm.backlog": {"notify": ["on-call"], "name": "uplink-behind", "uplink": 0, "threshold": 100000},
    "notify.webhook": {
        "name": "on-call",
        "url_file": "/data/secrets/webhook-url",
        "token_file": "/data/secrets/ntfy-token",
    },
    "notify.email": {
        "name": "mail",
        "host": "smtp.example",
        "sender": "kelvinpi@example.org",
        "to": ["oncall@example.org"],
        "username": "kelvinpi",
        "password_file": "/data/secrets/smtp-password",
        "ca_file": "/data/secrets/smtp-ca.pem",
    },
}

# The live part of the sample: three instruments (the first shows every key, the others only theirs).
SAMPLE_INSTRUMENTS: list[dict[str, Any]] = [
    {
        "model": "372",
        "name": "LSA23JD",
        "description": "Bluefors fridge 1, 372 bridge",
        "transport": "tcp",
        "host": "192.168.1.50",
        "channel": [{"number": 5, "name": "MXC"}, {"number": "A", "name": "MXC control"}],
    },
    {
        "model": "240",
        "name": "LSA24AZ",
        "description": "50 K and 4 K diodes",
        "transport": "serial",
        "serial_number": "LSA24AZ",
    },
    {
        "model": "336",
        "name": "LSA336A",
        "description": "still and 4 K stages, 336 controller",
        "transport": "tcp",
        "host": "192.168.1.51",
        "read_heater": True,
        "channel": [{"number": "C", "name": "Still"}, {"number": "B", "name": "4K plate"}],
    },
    {
        "model": "cpa",
        "name": "ptc1",
        "description": "pulse tube compressor",
        "transport": "tcp",
        "host": "192.168.1.60",
    },
    {
        "model": "bluefors-logs",
        "name": "bluefors",
        "description": "Bluefors control software's logs (pressures, flow, valves, compressor)",
        "transport": "folder",
        "log_dir": "/mnt/bluefors",
        "cifs_share": "//bluefors-pc/logs",
        "credentials_file": "/data/secrets/bluefors-share",
        "timezone": "Europe/Helsinki",
    },
    {
        "model": "370",
        "name": "LS370A",
        "description": "fridge 2, 370 bridge on RS-232",
        "transport": "serial",
        "device": "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",
    },
]

# The classic plant trips (appended to the sample, commented): the ones the Bluefors alarm bots labs
# write alarm on. The compressor's own fields (the CPA ``ptc1`` above, in its panel's units, degrees F
# and psi) hear a trip first; the Bluefors log folder's fields (``bluefors`` above) the rest.
# tests/test_config.py uncomments them and checks each names a field its instrument has.
SAMPLE_PLANT_ALARMS = """
## The classic plant trips. Uncomment the ones your fridge has. The CPA's fields: cparun 1 running,
## 0 stopped; cpatempwo the cooling water out (the panel's units, here degrees F). The Bluefors logs'
## fields, named as the Bluefors software and socs name them: p1..p6 in mbar, flow in mmol/s, the
## Channels log's valves, pumps, compressor and pulsetube 1 on, 0 off (without the CPA on the network,
## compressor-stopped can watch "bluefors::compressor" instead).
# [[alarm]]
# kind = "below"
# name = "compressor-stopped"
# severity = "critical"
# field = "ptc1::cparun"
# threshold = 0.5
# [[alarm]]
# kind = "above"
# name = "cooling-water-hot"
# severity = "critical"
# field = "ptc1::cpatempwo"
# threshold = 110.0
# hysteresis = 2.0
# [[alarm]]
# kind = "above"
# name = "p1-rising"
# severity = "critical"
# field = "bluefors::p1"
# threshold = 1e-4
# hysteresis = 2e-5
# hold = 10.0
# [[alarm]]
# kind = "below"
# name = "flow-below-floor"
# field = "bluefors::flow"
# threshold = 0.1
# hold = 60.0
# [[alarm]]
# kind = "below"
# name = "pulse-tube-off"
# severity = "critical"
# field = "bluefors::pulsetube"
# threshold = 0.5
"""

SAMPLE_HEADER = """\
## kelvinpi.toml: the one configuration file of a Kelvinpi appliance (`kelvinpi sample-config` prints this).
## On the SD card, put it on the FAT boot partition; `kelvinpi check-config FILE` validates it
## (with its secret files; add --no-secrets where they are not, e.g. on a laptop).
## Lines starting with ## explain. A line `# key = value` shows the default (or an example):
## remove the `# ` to set it. The reference of every key: docs/config.md.
"""


@dataclass(frozen=True)
class Section:
    """One TOML table of the file: its header, the model behind it, and whether it repeats."""

    path: str  # "" (top level), "store", "instrument.channel", "uplink"
    model: type[BaseModel]
    array: bool
    kind: str | None = None  # for one member of a discriminated union: its ``kind``

    @property
    def key(self) -> str:
        """The name EXAMPLES uses for this section."""
        return f"{self.path}.{self.kind}" if self.kind else self.path

    @property
    def header(self) -> str:
        return f"[[{self.path}]]" if self.array else (f"[{self.path}]" if self.path else "top level")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field holds: itself, the items of a list, the members of a (discriminated) union."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (list, Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _models_in(a)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _is_table(info: FieldInfo) -> bool:
    return bool(_models_in(info.annotation))


def sections(
    model: type[BaseModel] = Config, path: str = "", array: bool = False, kind: str | None = None
) -> list[Section]:
    """Every table of the file in the order a TOML file needs: a table's own keys before its sub-tables."""
    out = [Section(path, model, array, kind)]
    for name, info in model.model_fields.items():
        models = _models_in(info.annotation)
        is_list = typing.get_origin(info.annotation) is list
        sub = f"{path}.{name}" if path else name
        for m in models:
            member_kind = None
            if len(models) > 1:
                kinds = typing.get_args(m.model_fields["kind"].annotation)
                member_kind = kinds[0]
            out += sections(m, sub, is_list, member_kind)
    return out


def scalar_fields(section: Section) -> list[tuple[str, FieldInfo]]:
    return [(n, f) for n, f in section.model.model_fields.items() if not _is_table(f)]


def describe_type(annotation: Any) -> str:
    """A reader's name for a field's type: ``float``, ``path``, ``"372" or "240"``, ``list of ...``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return describe_type(typing.get_args(annotation)[0])
    if origin is Literal:
        return " or ".join(_toml(v) for v in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(describe_type(a) for a in args)
    if origin is list:
        return f"list of {describe_type(typing.get_args(annotation)[0])}"
    if annotation is Path:
        return "path"
    names = {str: "string", int: "integer", float: "float", bool: "boolean"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def constraints(info: FieldInfo) -> str:
    """The bounds pydantic enforces (``> 0, <= 60``, ``matches ^wss?://``, ``at least 1``)."""
    out = []
    for m in info.metadata:  # annotated_types' Gt, Ge, ..., MinLen and pydantic's pattern metadata
        for attr, fmt in (
            ("gt", "> {}"),
            ("ge", ">= {}"),
            ("lt", "< {}"),
            ("le", "<= {}"),
            ("min_length", "at least {}"),
            ("max_length", "at most {}"),
            ("pattern", "matches `{}`"),
        ):
            if getattr(m, attr, None) is not None:
                out.append(fmt.format(getattr(m, attr)))
    return ", ".join(out)


def _toml(value: Any) -> str:
    """One value as TOML text (tomli_w does the quoting; lists stay on one line)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table ({} for an empty one)
        return "{" + ", ".join(f"{tomli_w.dumps({k: 0}).split(' = ')[0]} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Path):
        value = str(value)
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def _default(info: FieldInfo) -> Any:
    """The default as the file would spell it, or None for none (required, or unset by default)."""
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    return value.model_dump() if isinstance(value, BaseModel) else value


def missing_descriptions(model: type[BaseModel] = Config) -> list[str]:
    """Every key and table without a description: the reference would have a hole there."""
    holes = []
    for s in sections(model):
        if not (s.model.__doc__ or "").strip() or s.model.__doc__ is BaseModel.__doc__:
            holes.append(f"{s.header}: the model {s.model.__name__} has no docstring")
        for name, info in s.model.model_fields.items():
            if not (info.description or "").strip():
                holes.append(f"{s.header} {name}: no description")
    return holes


# -- the sample --------------------------------------------------------------------------------------
def _wrap(text: str, prefix: str = "## ", width: int = 110) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=prefix, subsequent_indent=prefix) or [prefix.rstrip()]


def _key_lines(section: Section, values: dict[str, Any], full: bool, live: bool = True) -> list[str]:
    """The keys of one table: the given values (commented out unless ``live``), then, when ``full``,
    every other key commented out with its default or, lacking one, its example."""
    lines = []
    examples = EXAMPLES.get(section.key, {})
    off = "" if live else "# "
    for name, info in scalar_fields(section):
        if name in values:
            if full and name != "kind":
                lines += _wrap(_hint(info))
            lines.append(f"{off}{name} = {_toml(values[name])}")
            continue
        if not full:
            continue
        default = _default(info)
        if default is not None:
            shown = default
        elif name in examples:
            shown = examples[name]
        elif info.examples:  # declared beside the key: Field(..., examples=[...]) (a new kind needs no edit here)
            shown = info.examples[0]
        else:
            raise ValueError(
                f"{section.header} {name}: no default and no example (Field(examples=[...]) or config_doc.EXAMPLES)"
            )
        lines += _wrap(_hint(info))
        lines.append(f"# {name} = {_toml(shown)}")
    return lines


def _hint(info: FieldInfo) -> str:
    """``description (type; constraints; required)`` for the ## line above a key."""
    facts = [describe_type(info.annotation)]
    if c := constraints(info):
        facts.append(c)
    if info.is_required():
        facts.append("required")
    elif _default(info) is None:
        facts.append("unset by default")
    return f"{info.description} ({'; '.join(facts)})"


def sample() -> str:
    """The commented kelvinpi.toml that ``kelvinpi sample-config`` prints; it validates as printed."""
    secs = sections()
    out = [SAMPLE_HEADER]
    out += _key_lines(secs[0], {}, True)
    channel = next(s for s in secs if s.path == "instrument.channel")
    first_of: dict[str, Section] = {}
    for s in secs[1:]:
        first = first_of.setdefault(s.path, s) is s
        out.append("")
        if s.path == "instrument":
            for i, inst in enumerate(SAMPLE_INSTRUMENTS):
                if i == 0:
                    out += _wrap(f"[[instrument]]: {_field_doc(s.path)}. {_doc(s.model)}")
                else:
                    out.append("")
                out.append("[[instrument]]")
                out += _key_lines(s, inst, i == 0)
                for j, ch in enumerate(inst.get("channel", [])):
                    if i == 0 and j == 0:
                        out += _wrap(f"[[instrument.channel]]: {_doc(channel.model)}")
                    out.append("[[instrument.channel]]")
                    out += _key_lines(channel, ch, i == 0 and j == 0)
        elif s.path == "instrument.channel":
            out.pop()  # written with its instrument
        elif s.array:  # the uplinks: every kind, commented out (each needs a router and a secret file)
            if first:
                out += _wrap(f"[[{s.path}]]: {_field_doc(s.path)}.")
            out += _wrap(f"kind = {_toml(s.kind)}: {_doc(s.model)}")
            out.append(f"# [[{s.path}]]")
            out += _key_lines(s, {"kind": s.kind}, True, live=False)
        else:
            out += _wrap(f"[{s.path}]: {_doc(s.model)}")
            out.append(f"[{s.path}]")
            out += _key_lines(s, {}, True)
    return "\n".join(out) + "\n" + SAMPLE_PLANT_ALARMS


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def _field_doc(path: str) -> str:
    model: type[BaseModel] = Config
    *parents, name = path.split(".")
    for p in parents:
        model = _models_in(model.model_fields[p].annotation)[0]
    return model.model_fields[name].description or ""


# -- the reference -----------------------------------------------------------------------------------
def _md(text: str) -> str:
    """Plain text for Markdown: <name> is not an HTML tag, *IDN? starts no emphasis."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")


def _cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def reference() -> str:
    """docs/config.md: every section and key with type, default, constraints and description."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from appliance/config.py by `make config-doc` (python -m appliance.config_doc);"
        " do not edit by hand. -->",
        "",
        "Kelvinpi reads one TOML file, `kelvinpi.toml` (on the Pi: the SD card's FAT partition). It is validated"
        " at start-up and by `kelvinpi check-config FILE`; every error names the key and the line. Unknown keys"
        ' are errors. Values are taken as written: a number or a flag written as a string (`port = "8080"`,'
        ' `enabled = "yes"`) is an error, as is `model = 372` (it is the string `"372"`); an integer is'
        " fine where a number is wanted. An alarm rule's `field` must be one the instrument can write: where"
        " the config names every input the instrument reads (including a 372's control input A, unless"
        " `read_control_input = false`), a field outside those names is an error; where names come from the"
        " instrument, it is checked at run time. `check-config` also reads every secret and CA file the config"
        " names, as `kelvinpi run` does at start-up (missing, unreadable, readable by others or empty is an"
        " error there; `run` starts without the target and logs the same line); `check-config --no-secrets`"
        " skips these files, for checking a config away from the appliance."
        " `kelvinpi sample-config` prints a commented example holding every key below.",
        "",
    ]
    first_of: dict[str, Section] = {}
    for s in sections():
        title = "Top level" if not s.path else (f"`[[{s.path}]]`" if s.array else f"`[{s.path}]`")
        if s.kind:
            title += f' with `kind = "{s.kind}"`'
        out += [f"## {title}", ""]
        if s.path and first_of.setdefault(s.path, s) is s:
            doc = _field_doc(s.path)
            out += [_md(f"{doc[0].upper()}{doc[1:]}."), ""]
        out += [_md(_doc(s.model)), ""]
        rows = scalar_fields(s)
        subs = [n for n, f in s.model.model_fields.items() if _is_table(f)]
        if rows:
            out += ["| key | type | default | constraints | description |", "|---|---|---|---|---|"]
            for name, info in rows:
                default = (
                    "*required*"
                    if info.is_required()
                    else ("*unset*" if _default(info) is None else f"`{_toml(_default(info))}`")
                )
                out.append(
                    f"| `{name}` | {_cell(describe_type(info.annotation))} | {default} | "
                    f"{_cell(constraints(info))} | {_cell(info.description or '')} |"
                )
            out.append("")
        if subs:
            out += ["Tables: " + ", ".join(f"`{(s.path + '.' if s.path else '') + n}`" for n in subs), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m appliance.config_doc [--write docs/config.md] [--sample]``."""
    p = argparse.ArgumentParser(prog="python -m appliance.config_doc", description=__doc__.splitlines()[0])
    p.add_argument("--write", type=Path, help="write the reference to this file instead of stdout")
    p.add_argument("--sample", action="store_true", help="print the sample config instead")
    args = p.parse_args(argv)
    if holes := missing_descriptions():
        print("\n".join(holes), file=sys.stderr)
        return 1
    text = sample() if args.sample else reference()
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
