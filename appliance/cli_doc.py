"""docs/cli.md, the command-line reference, generated from ``kelvinpi``'s own argparse parser.

Every command, argument, default and help text is declared once, in the parsers
(``appliance/cli.py`` ``build_parser`` and the ``add_parser`` of curve_client, probe and
firmware_host/emulate_cli). This module walks that parser tree and writes one section per
command; the emulator's fault-control words come from ``firmware_host.emulator.CONTROLS`` with
the description its module docstring gives each. ``make docs`` rewrites the page; tests/test_docs.py
fails when the committed copy is stale, so a new option cannot be left out of the reference.

The usage lines and tables are built from the parser's actions, not from ``format_help()``:
argparse's text depends on the terminal width and changes between Python releases (3.13 writes
``-c, --config CONFIG`` where 3.11 writes ``-c CONFIG, --config CONFIG``), and the page must be
the same wherever it is generated.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .cli import build_parser

HEADER = """\
# Command-line reference

<!-- Generated from the argparse parsers (appliance/cli.py and the modules it adds) by `make docs`
(python -m appliance.cli_doc); do not edit by hand. -->

Everything is one program, `kelvinpi` (installed into the venv: `.venv/bin/kelvinpi` in a checkout,
`/opt/kelvinpi/venv/bin/kelvinpi` on the SD image). `kelvinpi COMMAND --help` prints the same facts.
Times given to `export` follow the API's rule: UNIX seconds, or a number 0 or less for that many
seconds before now. The configuration file itself is described in [config.md](config.md), the HTTP
API that `curve` talks to in [api.md](api.md).
"""


@dataclass(frozen=True)
class Command:
    """One (sub)command of the tree: its words after ``kelvinpi``, its one-line help and its parser."""

    words: tuple[str, ...]
    help: str
    parser: argparse.ArgumentParser

    @property
    def name(self) -> str:
        return " ".join(("kelvinpi", *self.words))


@dataclass(frozen=True)
class ControlWord:
    """One fault-control word of an emulator: its spelling with arguments and what it does."""

    word: str
    synopsis: str
    description: str


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def commands(
    parser: argparse.ArgumentParser | None = None, words: tuple[str, ...] = (), help: str = ""
) -> list[Command]:
    """Every command, depth first in the order the parser declares them (``kelvinpi`` itself first)."""
    parser = parser or build_parser(emulator=True)
    out = [Command(words, help or (parser.description or ""), parser)]
    sub = _subparsers(parser)
    if sub is not None:
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        for name, child in sub.choices.items():
            out += commands(child, (*words, name), helps.get(name, ""))
    return out


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions a user writes (no -h/--help, no subcommand slot)."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS
    ]


def _metavar(action: argparse.Action) -> str:
    if action.choices is not None and action.metavar is None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    if isinstance(action.metavar, str):
        return action.metavar
    return action.dest if not action.option_strings else action.dest.upper()


def _spelling(action: argparse.Action) -> str:
    """How the argument is written: ``--listen LISTEN``, ``--warm``, ``WORDS ...``, ``db``."""
    mv = _metavar(action)
    if action.nargs == 0:
        value = ""
    elif action.nargs == "+":
        value = f"{mv} [{mv} ...]"
    elif action.nargs == "*":
        value = f"[{mv} ...]"
    elif action.nargs == "?":
        value = f"[{mv}]"
    else:
        value = mv
    if not action.option_strings:
        return value
    return ", ".join(action.option_strings) + (f" {value}" if value else "")


def _short(action: argparse.Action) -> str:
    """The argument as usage shows it: the longest option string and its value."""
    if not action.option_strings:
        return _spelling(action)
    opt = max(action.option_strings, key=len)
    mv = _metavar(action)
    return opt if action.nargs == 0 else f"{opt} {mv}"


def usage(cmd: Command) -> str:
    """``kelvinpi probe --model {372,240} (--host HOST | --device DEVICE | --resource RESOURCE) [--port PORT]``."""
    grouped: dict[int, argparse._MutuallyExclusiveGroup] = {}
    for g in cmd.parser._mutually_exclusive_groups:
        for a in g._group_actions:
            grouped[id(a)] = g
    parts, done = [cmd.name], set[int]()
    for a in _arguments(cmd.parser):
        group = grouped.get(id(a))
        if group is not None:
            if id(group) in done:
                continue
            done.add(id(group))
            inner = " | ".join(_short(x) for x in group._group_actions)
            parts.append(f"({inner})" if group.required else f"[{inner}]")
        elif a.option_strings and not a.required:
            parts.append(f"[{_short(a)}]")
        else:
            parts.append(_short(a))
    if _subparsers(cmd.parser) is not None:
        parts.append("COMMAND ...")
    return " ".join(parts)


def _help(action: argparse.Action, prog: str) -> str:
    if not action.help:
        return ""
    params = {**vars(action), "prog": prog}
    if action.choices is not None:
        params["choices"] = ", ".join(str(c) for c in action.choices)
    return action.help % params


def _default(action: argparse.Action) -> str:
    if action.required or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
        return ""
    return f"`{action.default}`"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: outside `code` <node> is no HTML tag (inside, an entity would
    show as written); everywhere a | splits no column and a newline ends no row."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


# -- the emulator's control words --------------------------------------------------------------------
_ENTRY = re.compile(r"^    (\S.*?)\s{2,}(\S.*)$")
_MORE = re.compile(r"^\s{5,}(\S.*)$")


def control_words() -> list[ControlWord]:
    """The words ``kelvinpi emulate ctl`` sends, from ``CONTROLS`` and the emulator's docstring table.

    A word in ``CONTROLS`` that the docstring does not describe (or the reverse) is an error here,
    so neither the emulator's own help nor this page can fall behind the table."""
    from firmware_host import emulator

    described: dict[str, ControlWord] = {}
    last: str | None = None
    for line in (emulator.__doc__ or "").splitlines():
        if m := _ENTRY.match(line):
            synopsis, text = m.group(1), m.group(2)
            last = synopsis.split()[0]
            described[last] = ControlWord(last, synopsis, text)
        elif (m := _MORE.match(line)) and last is not None:
            w = described[last]
            described[last] = ControlWord(w.word, w.synopsis, f"{w.description} {m.group(1)}")
        elif not line.strip():
            continue
        else:
            last = None
    missing = [w for w in emulator.CONTROLS if w not in described]
    extra = [w for w in described if w not in emulator.CONTROLS]
    if missing or extra:
        raise ValueError(
            f"firmware_host/emulator.py: control words without a docstring line {missing}, "
            f"docstring lines for no control word {extra}"
        )
    return [described[w] for w in emulator.CONTROLS]


# -- the page ----------------------------------------------------------------------------------------
def reference() -> str:
    """docs/cli.md: every command with its usage, arguments, defaults and help; the ctl words."""
    cmds = commands()
    out = [HEADER, "| command | does |", "|---|---|"]
    for c in cmds[1:]:
        out.append(f"| [`{c.name}`](#{_anchor(c.name)}) | {_cell(c.help)} |")
    out.append("")
    for c in cmds:
        out += [f"## {c.name}", ""]
        if c.help:
            out += [_cell(c.help[0].upper() + c.help[1:]) + ".", ""]
        out += ["```", usage(c), "```", ""]
        args = _arguments(c.parser)
        if args:
            out += ["| argument | default | meaning |", "|---|---|---|"]
            for a in args:
                req = " (required)" if a.required and a.option_strings else ""
                out.append(f"| `{_spelling(a)}`{req} | {_default(a)} | {_cell(_help(a, c.name))} |")
            out.append("")
        sub = _subparsers(c.parser)
        if sub is not None:
            names = ", ".join(f"[`{n}`](#{_anchor(c.name + ' ' + n)})" for n in sub.choices)
            out += [f"Commands: {names}.", ""]
        if c.words == ("emulate", "ctl"):
            out += _control_section()
    return "\n".join(out).rstrip("\n") + "\n"


def _control_section() -> list[str]:
    out = [
        "The words a running emulator accepts on its `--control` socket (the same words from Python,",
        "`Emulator.control(line)`); the reply is `ok`, `error: ...` or, for `status` and `ledger`, one JSON line.",
        "",
        "| words | does |",
        "|---|---|",
    ]
    for w in control_words():
        out.append(f"| `{_cell(w.synopsis)}` | {_cell(w.description.replace('``', '`'))} |")
    out.append("")
    return out


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, spaces to -, punctuation other than - and _ dropped."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    """``python -m appliance.cli_doc [--write docs/cli.md]``."""
    p = argparse.ArgumentParser(prog="python -m appliance.cli_doc", description=(__doc__ or "").splitlines()[0])
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
