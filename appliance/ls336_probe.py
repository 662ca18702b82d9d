"""``kelvinpi probe --model 336|350``: the read-only report for a Model 336 or 350 (``appliance.probe``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.ls336 import SENSOR_UNITS, Model336, Model350, SensorType
from drivers.transport import TcpTransport

if TYPE_CHECKING:
    from .probe import Report


def open_ls336(
    model: str, host: str | None, port: int, device: str | None, resource: str | None, timeout: float
) -> Model336:
    """The driver for a 336 or 350 on the given link (not yet connected)."""
    cls = Model350 if model == "350" else Model336
    if host:
        return cls(TcpTransport(host, port), timeout=timeout)
    if device:
        return cls.serial(device, timeout=timeout)
    return cls.visa(resource or "", timeout=timeout)


def probe_ls336(inst: Model336, r: Report) -> None:
    """Inputs (type, curve, name), the curves in use, one reading per enabled input, the four outputs: queries only."""
    from .probe import _fields, _try

    r.add(f"inputs: {', '.join(inst.inputs)} (KRDG? 0 answered {len(inst.inputs)} readings)")
    r.add("")
    r.add("inputs (INTYPE? sensor/autorange/range/compensation/units; INCRV?; INNAME?):")
    enabled, curves = [], set()
    for ch in inst.inputs:
        name = _try(r, f"INNAME? {ch}", lambda ch=ch: inst.input_name(ch))
        t = _try(r, f"INTYPE? {ch}", lambda ch=ch: inst.input_type(ch))
        curve = _try(r, f"INCRV? {ch}", lambda ch=ch: inst.input_curve(ch))
        if t is not None and t.sensor_type:
            enabled.append((ch, SENSOR_UNITS.get(SensorType(t.sensor_type), "V")))
        if curve:
            curves.add(curve)
        r.add(f"  {ch:>2} {name!r:<18} intype {_fields(t)}  curve {curve}")
    r.add("")
    r.add("curve headers in use (CRVHDR? name/serial/format/limit/coefficient):")
    for n in sorted(curves):
        r.add(f"  {n:2d} {_fields(_try(r, f'CRVHDR? {n}', lambda n=n: inst.curve_header(n)))}")
    r.add("")
    r.add("one reading per enabled input:")
    for ch, units in enabled:
        rd = _try(r, f"reading {ch}", lambda ch=ch, units=units: inst.read(ch, units))
        if rd is not None:
            bits = ",".join(rd.status_bits) or "ok"
            r.add(f"  {ch:>2} {rd.raw_kelvin!r} K  {rd.raw_sensor!r} {units}  status {rd.status:03d} {bits}")
    r.add("")
    r.add("outputs (OUTMODE? mode/input/powerup; RANGE?; SETP?; PID?; MOUT?; HTR? or AOUT? %):")
    for out in inst.heater_outputs:
        conf = _try(r, f"output {out}", lambda out=out: inst.output_configuration(out))
        pct = _try(
            r,
            f"output {out} %",
            lambda out=out: inst.heater_output(out) if out in (1, 2) else inst.analog_output(out),
        )
        r.add(f"  {out} {conf}  output {pct}%")
