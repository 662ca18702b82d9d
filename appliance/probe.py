"""``kelvinpi probe``: a read-only check of a real instrument, printed as a report for a bug report.

Only queries are sent (``*IDN?``, ``SCAN?``, ``INSET?``, ``INTYPE?``, ``INNAME?``, ``FILTER?``,
on a 370 ``RDGRNG?``, ``CMODE?``, ``CSET?``, ``HTRRNG?``,
``CRVHDR?``, readings): no setting is changed, and ``*ESR?`` is not sent either, since reading
the 372's event register clears it. Run it with the appliance stopped (or on another of the 372's
two TCP slots): a serial port has room for one program only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from drivers import DriverError
from drivers.cpa import CryomechCPA
from drivers.ls240 import Model240
from drivers.ls336 import Model336
from drivers.ls370 import Model370
from drivers.ls372 import MEASUREMENT_CHANNELS, Model372
from drivers.pfeiffer import STATUS_NAMES, TPG256A, TPG366, PfeifferGauge
from drivers.transport import TcpTransport

from .ls336_probe import open_ls336, probe_ls336
from .models import MODEL_NAMES, REGISTRY


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, text: str = "") -> None:
        self.lines.append(text)

    def text(self) -> str:
        out = list(self.lines)
        if self.problems:
            out += ["", "problems:"] + [f"  {p}" for p in self.problems]
        return "\n".join(out) + "\n"


def open_instrument(
    model: str,
    host: str | None = None,
    port: int = 7777,
    device: str | None = None,
    resource: str | None = None,
    timeout: float = 2.0,
) -> Any:
    """The driver object for the given link (not yet connected): any model's driver class."""
    if model == "370":
        if device:
            return Model370.serial(device, timeout=timeout)
        if resource:
            return Model370.visa(resource, timeout=timeout)
        raise ValueError(
            "a Model 370 is reached through --device (RS-232) or --resource (GPIB): it has no Ethernet port"
        )
    if model in ("336", "350"):
        return open_ls336(model, host, port, device, resource, timeout)
    if model == "cpa":
        if not host:
            raise ValueError("a CPA compressor is reached through --host (Modbus TCP, port 502)")
        return CryomechCPA.tcp(host, port, timeout=timeout)
    if model in ("tpg366", "maxigauge"):
        cls: type[PfeifferGauge] = TPG366 if model == "tpg366" else TPG256A
        if host:
            if model == "maxigauge":
                raise ValueError("a MaxiGauge TPG 256 A is reached through --device or --resource (RS-232 only)")
            return cls(TcpTransport(host, port), timeout=timeout)
        if device:
            return cls.serial(device, timeout=timeout)
        if resource:
            return cls.visa(resource, timeout=timeout)
        raise ValueError(f"a {cls.MODEL} is reached through --host, --device or --resource")
    if model == "372":
        if host:
            return Model372(TcpTransport(host, port), timeout=timeout)
        if device:
            return Model372.serial(device, timeout=timeout)
        if resource:
            return Model372.visa(resource, timeout=timeout)
        raise ValueError("a Model 372 is reached through --host, --device or --resource")
    if device:
        return Model240.serial(device, timeout=timeout)
    if resource:
        return Model240.visa(resource, timeout=timeout)
    raise ValueError("a Model 240 is reached through --device or --resource (it has no Ethernet port)")


def _timed(fn: Callable[[], object], n: int = 5) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def _try(report: Report, what: str, fn: Callable[..., Any]) -> Any:
    try:
        return fn()
    except DriverError as exc:
        report.problems.append(f"{what}: {exc.kind}: {exc}")
        return None


def probe(inst: Any) -> Report:  # any model's driver object
    """Connect, query everything a bug report needs, close. Raises DriverError if even ``*IDN?`` fails."""
    r = Report()
    t0 = time.perf_counter()
    ident = inst.connect()
    connect_s = time.perf_counter() - t0
    try:
        r.add(f"kelvinpi probe, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        r.add(f"link: {inst.transport.description}")
        r.add(f"identity: {ident.manufacturer},{ident.model},{ident.serial},{ident.firmware}")
        if isinstance(inst, CryomechCPA):  # no *IDN?: the whole register block is its one query
            _probe_cpa(inst, r, connect_s)
            return r
        times, _ = _timed(inst.identify)
        r.add(
            f"round trip (*IDN?, 5 times): min {min(times) * 1e3:.1f} ms, median "
            f"{statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms; connect {connect_s:.2f} s"
        )
        if isinstance(inst, Model370):
            _probe_370(inst, r)
        elif isinstance(inst, Model336):
            probe_ls336(inst, r)
        elif isinstance(inst, Model372):
            _probe_372(inst, r)
        elif isinstance(inst, PfeifferGauge):
            _probe_gauges(inst, r)
        else:
            _probe_240(inst, r)
    finally:
        inst.close()
    return r


def _probe_gauges(inst: PfeifferGauge, r: Report) -> None:
    """A Pfeiffer controller: its gauges, their on/off states and one reading each (queries only)."""
    r.add(f"gauges (TID): {','.join(inst.gauge_ids)}; unit (UNI): {inst.units}")
    states = _try(r, "SEN", inst.sensor_states)
    r.add(f"sensor states (SEN, 0 none/fixed 1 off 2 on): {','.join(map(str, states)) if states else '?'}")
    r.add("one reading per gauge:")
    for n in range(1, 7):
        rd = _try(r, f"PR{n}", lambda n=n: inst.read(n))
        if rd is not None:
            # only a measurement is a pressure: a flagged gauge's number (a limit, a placeholder) is not printed as one
            shown = f"{rd.pressure!r} {rd.units}" if rd.pressure is not None else "no pressure"
            r.add(f"  {n} {shown}  status {rd.code} {STATUS_NAMES[rd.code]}")


def _probe_372(inst: Model372, r: Report) -> None:
    scan = _try(r, "SCAN?", inst.scan)
    if scan is not None:
        r.add(f"scanner: channel {scan.channel}, autoscan {'on' if scan.autoscan else 'off'}")
    r.add("")
    r.add(
        "inputs (INSET? enabled/dwell/pause/curve/tempco; INTYPE? mode/excitation/autorange/range/shunt/units;"
        " FILTER? on/settle/window):"
    )
    curves: set[int] = set()
    enabled: list[str] = []
    for ch in ["A"] + MEASUREMENT_CHANNELS:
        name = _try(r, f"INNAME? {ch}", lambda: inst.input_name(ch))
        s = _try(r, f"INSET? {ch}", lambda: inst.input_setup(ch))
        t = _try(r, f"INTYPE? {ch}", lambda: inst.input_type(ch))
        f = _try(r, f"FILTER? {ch}", lambda: inst.filter(ch))
        if s is not None:
            if s.curve:
                curves.add(s.curve)
            if s.enabled or ch == "A":
                enabled.append(ch)
        r.add(f"  {ch:>2} {name!r:<18} inset {_fields(s)}  intype {_fields(t)}  filter {_fields(f)}")
    r.add("")
    r.add("curve headers (CRVHDR? name/serial/format/limit/coefficient):")
    for n in sorted(curves | set(range(21, 60))):
        h = _try(r, f"CRVHDR? {n}", lambda: inst.curve_header(n))
        if h is not None and (h.data_format or n in curves):
            r.add(
                f"  {n:2d} {h.name!r} {h.serial!r} format {h.data_format} limit {h.limit:g} K "
                f"coefficient {h.coefficient}" + ("  (in use)" if n in curves else "")
            )
    r.add("")
    _scanned_readings(inst, r, enabled, scan, "input")


def _scanned_readings(inst: Model372 | Model370, r: Report, enabled: list[str], scan: Any, noun: str) -> None:
    """One reading per enabled input of a scanning bridge (372 or 370), the scanner's channel marked."""
    r.add(f"one reading per enabled {noun} (a channel the scanner is not on repeats its last value):")
    for ch in enabled:
        rd = _try(r, f"reading {ch}", lambda: inst.read(ch))
        if rd is not None:
            active = " (scanner here)" if scan is not None and scan.channel == ch else ""
            r.add(
                f"  {ch:>2} {rd.raw_kelvin!r} K  {rd.raw_sensor!r} ohm  status {rd.status:03d} "
                f"{','.join(rd.status_bits) or 'ok'}{active}"
            )


def _probe_370(inst: Model370, r: Report) -> None:
    """As the 372's, with RDGRNG? for the excitation and range, curves 1-20, and the heater's CMODE/CSET."""
    scan = _try(r, "SCAN?", inst.scan)
    if scan is not None:
        r.add(f"scanner: channel {scan.channel}, autoscan {'on' if scan.autoscan else 'off'}")
    r.add("")
    r.add("channels (INSET? enabled/dwell/pause/curve/tempco; RDGRNG? mode/excitation/range/autorange/cs off):")
    curves: set[int] = set()
    enabled: list[str] = []
    for ch in MEASUREMENT_CHANNELS:
        s = _try(r, f"INSET? {ch}", lambda: inst.input_setup(ch))
        g = _try(r, f"RDGRNG? {ch}", lambda: inst.reading_range(ch))
        if s is not None and s.curve:
            curves.add(s.curve)
        if s is not None and s.enabled:
            enabled.append(ch)
        r.add(f"  {ch:>2} inset {_fields(s)}  rdgrng {_fields(g)}")
    r.add("")
    r.add("curve headers (CRVHDR? name/serial/format/limit/coefficient):")
    for n in inst.curve_slots:
        h = _try(r, f"CRVHDR? {n}", lambda: inst.curve_header(n))
        if h is not None and (h.data_format or n in curves):
            r.add(
                f"  {n:2d} {h.name!r} {h.serial!r} format {h.data_format} limit {h.limit:g} K"
                + ("  (in use)" if n in curves else "")
            )
    r.add("")
    mode = _try(r, "CMODE?", inst.control_mode)
    cset = _try(r, "CSET?", inst.control_setup)
    rng = _try(r, "HTRRNG?", inst.heater_range_index)
    r.add(f"sample heater: CMODE {mode!r}  CSET {_fields(cset)}  HTRRNG {rng}")
    r.add("")
    _scanned_readings(inst, r, enabled, scan, "channel")


def _probe_cpa(inst: CryomechCPA, r: Report, connect_s: float) -> None:
    times, _ = _timed(inst.read)
    rd = inst.last  # the last of those reads
    r.add(
        f"round trip (registers 1-53, 5 times): min {min(times) * 1e3:.1f} ms, median "
        f"{statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms; connect {connect_s:.2f} s"
    )
    if rd is None:
        return
    r.add(f"state: {rd.state_name}, {'running' if rd.running else 'not running'}; units {rd.pressure_unit}, "
          f"{rd.temperature_unit}")  # fmt: skip
    r.add(f"warnings: {', '.join(rd.warnings) or 'none'}; alarms: {', '.join(rd.alarms) or 'none'}")
    for name, value in rd.values.items():
        r.add(f"  {name:<11} {value!r}")


def _probe_240(inst: Model240, r: Report) -> None:
    r.add(f"module name: {_try(r, 'MODNAME?', inst.module_name)!r}")
    r.add("")
    r.add("inputs (INTYPE? sensor/autorange/range/reversal/units/enabled; CRVHDR? of the input's curve):")
    enabled = []
    for n in range(1, inst.channel_count + 1):
        name = _try(r, f"INNAME? {n}", lambda: inst.input_name(n))
        t = _try(r, f"INTYPE? {n}", lambda: inst.input_type(n))
        h = _try(r, f"CRVHDR? {n}", lambda: inst.curve_header(n))
        if t is not None and t.enabled:
            enabled.append((n, t))
        r.add(f"  {n} {name!r:<18} intype {_fields(t)}  curve {_fields(h)}")
    r.add("")
    r.add("one reading per enabled input:")
    from drivers.ls240 import SENSOR_UNITS

    for n, t in enabled:
        units = SENSOR_UNITS.get(t.sensor, "V")
        rd = _try(r, f"reading {n}", lambda: inst.read(n, units))
        if rd is not None:
            r.add(
                f"  {n} {rd.raw_kelvin!r} K  {rd.raw_sensor!r} {units}  status {rd.status:03d} {','.join(rd.status_bits) or 'ok'}"
            )


def _fields(x: Any) -> str:
    if x is None:
        return "?"
    return ",".join(str(v) for v in asdict(x).values())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="read-only check of a real instrument, printed as a report")
    p.add_argument("--model", choices=MODEL_NAMES, required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="372, 336 or 350 over Ethernet (TCP port --port)")
    where.add_argument("--device", help="USB serial device, e.g. /dev/ttyUSB0 (a 370's RS-232 adapter too)")
    where.add_argument("--resource", help="a VISA resource, e.g. ASRL/dev/ttyUSB0::INSTR or GPIB0::12::INSTR")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: the model's own, 7777 for a Lake Shore)")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        port = args.port if args.port is not None else REGISTRY[args.model].port
        inst = open_instrument(args.model, args.host, port, args.device, args.resource, args.timeout)
        report = probe(inst)
    except (DriverError, ValueError) as exc:
        print(f"kelvinpi probe: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(report.text())
    return 1 if report.problems else 0
