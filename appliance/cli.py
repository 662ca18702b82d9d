"""``kelvinpi``: a thin command line over the appliance and emulator libraries."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from . import config


def _load(path: str) -> config.Config | None:
    """The start-up validation; prints every problem (key path and line) and returns None on error."""
    from . import config

    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from . import config, service

    cfg = _load(args.config)
    if cfg is None:
        return 2
    # The file checks check-config makes, with its words: run still starts, without what they disable.
    service.setup_logging(cfg.log_level)
    log = logging.getLogger("kelvinpi")
    problems = config.file_problems(cfg)
    rendered = config.file_error(args.config, problems).render().splitlines() if problems else []
    for line, problem in zip(rendered, problems, strict=False):  # one line per problem, in order
        log.error("%s: %s %s", line, problem.ref.disables, "starts disabled" if problem.ref.secret else "cannot work")
    return service.run(cfg, args.config)


def cmd_check_config(args: argparse.Namespace) -> int:
    """The start-up validation, and (unless --no-secrets) every file the config names, as run reads it."""
    from . import config

    cfg = _load(args.file)
    if cfg is None:
        return 1
    problems = [] if args.no_secrets else config.file_problems(cfg)
    if problems:
        print(config.file_error(args.file, problems).render(), file=sys.stderr)
        return 1
    files = (
        "secret files not checked (--no-secrets)"
        if args.no_secrets
        else f"{len(config.referenced_files(cfg))} secret/CA file(s) ok"
    )
    print(f"{args.file}: ok ({len(cfg.instrument)} instrument(s), {len(cfg.uplink)} uplink(s); {files})")
    return 0


def cmd_sample_config(args: argparse.Namespace) -> int:
    """Generated from the config models (appliance/config_doc.py), so it never misses a key."""
    from .config_doc import sample

    sys.stdout.write(sample())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """CSV of raw samples straight from a store file (works while the service runs).

    Read-only: the running service is the only writer. Its last ten minutes of readings are only
    in its journal (``<db>-log``); the reader reads that file too (without touching it), so the
    CSV holds them, as ``GET /api/v1/export.csv`` does.
    """
    import csv
    from datetime import datetime

    from .store import StoreReader, resolve_time

    if not Path(args.db).exists():
        print(f"kelvinpi export: no store at {args.db}", file=sys.stderr)
        return 1
    store = StoreReader(args.db)
    names = args.series or [f.name for f in store.fields()]
    unknown = [n for n in names if n not in store.field_map()]
    if unknown:
        print(f"kelvinpi export: unknown field {unknown[0]!r}", file=sys.stderr)
        return 1
    start, end = resolve_time(args.start), resolve_time(args.end)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["field", "t_unix", "time_utc", "value", "status"])
    for name, t, v, st in store.iter_raw(names, start, end):
        w.writerow(
            [
                name,
                f"{t:.3f}",
                datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds"),
                "" if v is None else repr(v),
                st,
            ]
        )
    return 0


class _VersionAction(argparse.Action):
    """``--version``: the release and the store schema it writes, so a lab can tell before an update or a
    rollback whether the store on the card is one this release opens (the store is imported only here)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and the store schema, then exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        from .store import SCHEMA_VERSION

        print(f"kelvinpi {__version__} (store schema {SCHEMA_VERSION})")
        parser.exit()


def build_parser(emulator: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kelvinpi", description="Lake Shore 372/240 thermometry readout appliance")
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="poll the instruments, store, serve the front panel and publish")
    r.add_argument("--config", "-c", required=True, help="the kelvinpi.toml file")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("check-config", help="validate a config file exactly as `run` does at start-up")
    c.add_argument("file")
    c.add_argument(
        "--no-secrets",
        action="store_true",
        help="skip the checks of secret and CA files (a config checked on a laptop where they are not)",
    )
    c.set_defaults(func=cmd_check_config)
    s = sub.add_parser("sample-config", help="print a commented example config holding every key")
    s.set_defaults(func=cmd_sample_config)
    e = sub.add_parser("export", help="write raw samples from a store file as CSV to stdout")
    e.add_argument("db", help="the SQLite store file")
    e.add_argument(
        "--field", dest="series", metavar="FIELD", action="append", help="<node>::<field> (repeat; default all)"
    )
    e.add_argument("--start", type=float, default=-86400, help="UNIX seconds, or <= 0 for seconds before now")
    e.add_argument("--end", type=float, default=0)
    e.set_defaults(func=cmd_export)
    from . import curve_client, probe, settings_client

    curve_client.add_parser(sub)
    settings_client.add_parser(sub)
    probe.add_parser(sub)
    from .update import cli as update_cli

    update_cli.add_parser(sub)
    if emulator:
        from firmware_host import emulate_cli

        emulate_cli.add_parser(sub)
    else:  # listed in --help; the emulator itself is imported only when asked for (see main)
        sub.add_parser("emulate", help="run an emulated Lake Shore 372 or 240 (no hardware needed)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """The appliance's runtime never imports the emulator: only ``kelvinpi emulate ...`` loads it."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(emulator=bool(argv) and argv[0] == "emulate").parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
