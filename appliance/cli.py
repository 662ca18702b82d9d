"""``kelvinpi``: a thin command line over the appliance and emulator libraries."""
from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kelvinpi", description="Lake Shore 372/240 thermometry readout appliance")
    p.add_argument("--version", action="version", version=f"kelvinpi {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    from firmware_host import cli as emulate_cli

    emulate_cli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
