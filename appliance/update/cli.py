"""``kelvinpi update FILE``: check a bundle, install it into the other slot, reboot into it once.

A refused bundle (unsigned, signed by a key the keyring does not hold, truncated, for another
board or architecture, a plain bundle) is one line naming the file and the reason, exit 2, and
nothing has changed. The service's health gate commits the new slot after the reboot, or the old
slot comes back (docs/update.md). Run as root (RAUC writes a partition; the reboot). The file is
copied into ``[update] state_dir`` first, and that copy is checked, installed and removed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import UpdateConfig
    from .install import Installer

DEFAULT_CONFIG = Path("/data/kelvinpi.toml")  # the accepted configuration on the Pi's data partition


def add_parser(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("update", help="install a signed update bundle into the other slot and reboot into it once")
    u.add_argument("file", help="the RAUC bundle (.raucb)")
    u.add_argument(
        "--config",
        "-c",
        help=f"the kelvinpi.toml whose [update] section applies (default: {DEFAULT_CONFIG} if it exists)",
    )
    u.set_defaults(func=cmd_update)


def _update_config(path: str | None) -> UpdateConfig | None:
    """The [update] section (defaults without a config file); None when the config is refused (printed)."""
    from .. import config

    if path is None and not DEFAULT_CONFIG.exists():
        return config.UpdateConfig()
    try:
        return config.load(path or str(DEFAULT_CONFIG)).update
    except config.ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return None


def cmd_update(args: argparse.Namespace) -> int:
    from .bundle import BundleRefused
    from .install import Installer, InstallFailed, UpdateCommands

    cfg = _update_config(args.config)
    if cfg is None:
        return 2
    installer = Installer(UpdateCommands.of(cfg))
    try:
        installer.refuse_if_busy()
    except InstallFailed as exc:
        print(f"kelvinpi update: {exc}", file=sys.stderr)
        return 2
    try:  # checked and installed from a copy of our own: the file given may change under its name
        copy = installer.stage(args.file)
    except BundleRefused as exc:
        print(f"kelvinpi update: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"kelvinpi update: {args.file} could not be copied into {cfg.state_dir}: {exc}", file=sys.stderr)
        return 1
    try:
        return _install(installer, copy, args.file)
    finally:
        with contextlib.suppress(OSError):
            copy.unlink()


def _install(installer: Installer, copy: Path, given: str) -> int:
    from .bundle import BundleRefused
    from .install import InstallFailed

    try:
        info = installer.check(copy, shown=given)
    except BundleRefused as exc:
        print(f"kelvinpi update: {exc}", file=sys.stderr)
        return 2
    print(f"{given}: version {info.version} for {info.compatible}, signed by {info.signer or '?'}", flush=True)
    try:
        pending = installer.install(info, progress=lambda line: print(f"  {line}", flush=True))
        print(f"installed into slot {pending.to_slot}; rebooting into it once (the try boot)", flush=True)
        installer.reboot_into_try()
    except InstallFailed as exc:
        print(f"kelvinpi update: {exc}", file=sys.stderr)
        return 1
    return 0
