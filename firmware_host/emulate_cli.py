"""``kelvinpi emulate ls372|ls336|ls350|ls370|ls240|cpa|tpg366|maxigauge|bluefors-logs|ctl``: run an emulated instrument until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from . import cpa_cli, pfeiffer_emulator
from .emulator import Emulator, send_control


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulate", help="run an emulated Lake Shore 372, 336, 350, 370 or 240 (no hardware needed)")
    esub = p.add_subparsers(dest="model", required=True)
    a = esub.add_parser("ls372", help="Model 372 on TCP (and optionally a serial pty)")
    a.add_argument("--listen", default="127.0.0.1:7777", help="HOST:PORT for the TCP interface (default %(default)s)")
    a.add_argument("--serial-link", help="also expose the USB serial interface as a pty symlinked here")
    a.add_argument("--serial-number", default="LSA23JD")
    m336 = [esub.add_parser(m, help=f"Model {m[2:]} on TCP (and optionally a serial pty)") for m in ("ls336", "ls350")]
    b = esub.add_parser("ls240", help="Model 240 on a serial pty")
    b.add_argument("--serial-link", required=True, help="path of the symlink to the pty")
    b.add_argument("--channels", type=int, choices=(2, 8), default=2)
    b.add_argument("--serial-number", default="LSA24AZ")
    m = esub.add_parser("ls370", help="Model 370 on a serial pty (RS-232, 9600 7O1), and optionally TCP")
    m.add_argument("--serial-link", required=True, help="path of the symlink to the pty")
    m.add_argument("--listen", help="HOST:PORT: also answer on TCP (a test convenience; a real 370 has no Ethernet)")
    m.add_argument("--serial-number", default="370A1B")
    for q in m336:
        q.add_argument(
            "--listen", default="127.0.0.1:7777", help="HOST:PORT for the TCP interface (default %(default)s)"
        )
        q.add_argument("--serial-link", help="also expose the USB serial interface as a pty symlinked here")
        q.add_argument("--serial-number", default="LSA336A")
        q.add_argument("--scanner", action="store_true", help="with the 3062 scanner option (inputs D2-D5)")
    for q in (a, b, m, *m336):
        q.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
        q.add_argument("--seed", type=int, default=None, help="noise seed for reproducible readings")
        q.add_argument("--warm", action="store_true", help="start at room temperature (a cooldown)")
        q.add_argument("--control", help="unix socket path for fault injection (see `kelvinpi emulate ctl`)")
    bf = esub.add_parser("bluefors-logs", help="the Bluefors control software's log folder, written live")
    bf.add_argument("--dir", required=True, help="the folder to write the YY-MM-DD day folders into")
    bf.add_argument("--zone", default="Europe/Helsinki", help="the emulated PC's time zone (default %(default)s)")
    bf.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    bf.add_argument("--seed", type=int, default=0, help="seed for reproducible values")
    bf.add_argument("--control", help="unix socket path for faults (stall, rotate, replace, half, set, advance)")
    pfeiffer_emulator.add_parsers(esub)
    cpa_cli.add_parser(esub)
    c = esub.add_parser("ctl", help="send one fault-control command to a running emulator")
    c.add_argument("socket")
    c.add_argument("words", nargs="+", help="e.g. mute on | slow 3 | garbage 2 | unplug 5 | reset | status")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model == "ctl":
        reply = send_control(args.socket, " ".join(args.words))
        print(reply)
        return 0 if not reply.startswith("error") else 1
    if args.model in ("tpg366", "maxigauge"):
        return pfeiffer_emulator.run(args)
    if args.model == "cpa":
        return cpa_cli.run(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.model == "bluefors-logs":
        from .bluefors_emulate import run_live

        return run_live(args)
    if args.model in ("ls372", "ls336", "ls350") or (args.model == "ls370" and args.listen):
        if args.model in ("ls372", "ls370"):
            make = Emulator.ls372 if args.model == "ls372" else Emulator.ls370
            emu = make(args.serial_number, args.time_scale, args.seed, args.warm)
        else:
            model, scanner = args.model[2:], args.scanner
            emu = Emulator.ls336(
                args.serial_number, args.time_scale, args.seed, args.warm, model=model, scanner=scanner
            )
        host, _, port = args.listen.rpartition(":")
        try:
            addr = emu.listen_tcp(host or "127.0.0.1", int(port))
        except (OSError, ValueError) as exc:
            print(f"kelvinpi emulate {args.model}: cannot listen on {args.listen}: {exc}", file=sys.stderr)
            return 2
        where = [f"tcp {addr[0]}:{addr[1]}"]
    elif args.model == "ls370":
        emu = Emulator.ls370(args.serial_number, args.time_scale, args.seed, args.warm)
        where = []
    else:
        emu = Emulator.ls240(args.channels, args.serial_number, args.time_scale, args.seed, args.warm)
        where = []
    if args.serial_link:
        where.append(f"serial {emu.listen_pty(args.serial_link)}")
    if args.control:
        where.append(f"control {emu.listen_control(args.control)}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    name = f"Model {args.model[2:]}" if args.model != "ls240" else f"Model 240-{args.channels}P"
    print(f"emulated {name} {args.serial_number} ready: {', '.join(where)}", flush=True)
    while not stop.wait(0.5):
        pass
    emu.stop()
    return 0
