"""``kelvinpi emulate cpa``: an emulated Cryomech CPA on Modbus TCP until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .cpa_server import CpaEmulator


def add_parser(esub: argparse._SubParsersAction) -> None:
    p = esub.add_parser("cpa", help="Cryomech CPA compressor on Modbus TCP (a real one answers on port 502)")
    p.add_argument("--listen", default="127.0.0.1:5020", help="HOST:PORT (default %(default)s: port 502 needs root)")
    p.add_argument("--serial-number", type=int, default=10556, help="the panel serial (register 31)")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--control", help="unix socket path for fault injection (see `kelvinpi emulate ctl`)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # a dropped client is not an error here
    host, _, port = args.listen.rpartition(":")
    try:
        emu = CpaEmulator(args.time_scale, args.serial_number)
        addr = emu.listen_tcp(host or "127.0.0.1", int(port))
    except (OSError, ValueError) as exc:
        print(f"kelvinpi emulate cpa: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 2
    where = [f"modbus-tcp {addr[0]}:{addr[1]}"]
    if args.control:
        where.append(f"control {emu.listen_control(args.control)}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"emulated Cryomech CPA1114 {args.serial_number} ready: {', '.join(where)}", flush=True)
    while not stop.wait(0.5):
        pass
    emu.stop()
    return 0
