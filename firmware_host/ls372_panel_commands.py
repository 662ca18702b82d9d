"""The emulated 372's panel, interface, alarm, relay, zone and analog-output commands.

Lake Shore's own ``lakeshore`` package (``Model372``) sends every one of these; before issue 24
the emulator answered none of them (ESR 32). They keep settings and report them back; none of
them changes a reading or the heater loop (no alarm ever goes off, no zone is followed). Reply
formats are the ones the vendor's driver parses, with the manual page where one was at hand;
each decision and its evidence is a row of ``FIDELITY.md`` ("Model 372", rows 26-38).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol import PERCENT, Command, ExecutionError, Float, Int, Text, fmt_372

if TYPE_CHECKING:
    from .ls372_device import LS372Device

FLAG = Int(0, 1)
FLOAT = Float()
OUT01 = Int(0, 1)  # ZONE: the sample and warm-up heaters
ANALOG_OUT = Int(1, 2)  # ANALOG: the warm-up heater (1) and the analog/still output (2)
RELAY_NUMBER = Int(1, 2)
PAD = 15  # WEBLOG pads each string to its 15 characters (the vendor's driver strips the padding)


def _channel(text: str, allow_zero: bool) -> str:
    """``A``, ``1``-``16`` (``05`` reads as ``5``) and, where the field allows it, ``0``."""
    s = text.strip().upper()
    if s == "A":
        return "A"
    try:
        n = int(s)
    except ValueError:
        raise ExecutionError(f"bad channel {s!r}") from None
    if not (0 if allow_zero else 1) <= n <= 16:
        raise ExecutionError(f"channel {n} outside {'0' if allow_zero else '1'}-16")
    return str(n)


class _Channel:
    """An input field: ``A`` or ``1``-``16``; with ``allow_zero``, also ``0`` (scan channel, none or all)."""

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def parse(self, text: str) -> str:
        return _channel(text, self.allow_zero)


CHANNEL = _Channel()
CHANNEL_OR_ZERO = _Channel(allow_zero=True)


def _fmt_channel(ch: str) -> str:
    return ch if ch == "A" else f"{int(ch):02d}"


def _fmt_value(v: float) -> str:
    """An alarm or analog value: signed, short. The vendor's ALARM? parse reads the value fields
    with ``int()``, which a whole value in this form passes (``+5``); the real width is UNVERIFIED."""
    return f"{v:+.6g}" if v != int(v) else f"{int(v):+d}"


# -- input curve (the same field INSET's curve sets) --------------------------------------
def incrv_set(d: LS372Device, ch: str, curve: int) -> None:
    d.channels[ch].curve = curve


# -- display, interface, keypad ---------------------------------------------------------------
def display_set(d: LS372Device, mode: int, fields: int | None = None, info: int | None = None) -> None:
    old = d.panel.display
    d.panel.display = (mode, old[1] if fields is None else fields, old[2] if info is None else info)


def ieee_set(d: LS372Device, *values: int) -> None:
    """``IEEE <address>`` or ``IEEE <terminator>,<EOI>,<address>`` (the vendor's driver sends the latter)."""
    if len(values) == 1:
        if not 1 <= values[0] <= 30:
            raise ExecutionError(f"IEEE address {values[0]} outside 1-30")
        d.panel.ieee_address = values[0]
        return
    terminator, eoi, address = values
    if not 0 <= terminator <= 3 or eoi not in (0, 1) or not 1 <= address <= 30:
        raise ExecutionError(f"IEEE {terminator},{eoi},{address}: outside terminator 0-3, EOI 0-1, address 1-30")
    d.panel.ieee_terminator, d.panel.ieee_eoi, d.panel.ieee_address = terminator, eoi, address


def lock_set(d: LS372Device, state: int, code: int | None = None) -> None:
    d.panel.lock = (state, d.panel.lock[1] if code is None else code)


def weblog_set(d: LS372Device, user: str, password: str) -> None:
    d.panel.weblog = (user, password)


def weblog_q(d: LS372Device) -> str:
    user, password = d.panel.weblog
    return f"{user:<{PAD}},{password:<{PAD}}"


# -- alarms and relays -------------------------------------------------------------------------
def alarm_q(d: LS372Device, ch: str) -> str:
    a = d.alarms[ch]
    values = ",".join(_fmt_value(v) for v in (a.high, a.low, a.deadband))
    return f"{a.enabled},{a.source},{values},{a.latch},{a.audible},{a.visible}"


def alarm_set(d: LS372Device, ch: str, enabled: int, *rest: float) -> None:
    """``ALARM <ch>,<off/on>[,<source>,<high>,<low>,<deadband>,<latch>,<audible>,<visible>]``.

    Fields left off keep their values (the vendor's driver turns an alarm off with
    ``ALARM <ch>,0,,,,,,``); ``0`` means every measurement channel, as for FILTER.
    """
    names = ("source", "high", "low", "deadband", "latch", "audible", "visible")
    checks = {"source": (0, 4), "latch": (0, 1), "audible": (0, 1), "visible": (0, 1)}
    values = dict(zip(names, rest, strict=False))
    for name, (lo, hi) in checks.items():
        if name in values and (values[name] != int(values[name]) or not lo <= values[name] <= hi):
            raise ExecutionError(f"ALARM {name} {values[name]:g} outside {lo}-{hi}")
    targets = [str(i) for i in range(1, 17)] if ch == "0" else [ch]
    for target in targets:
        a = d.alarms[target]
        a.enabled = enabled
        for name, v in values.items():
            setattr(a, name, int(v) if name in checks else v)


def relay_q(d: LS372Device, n: int) -> str:
    r = d.relays[n]
    return f"{r.mode},{_fmt_channel(r.channel)},{r.alarm_type}"  # manual p.175: n,nn,n


def relay_set(d: LS372Device, n: int, mode: int, channel: str | None = None, alarm_type: int | None = None) -> None:
    """``RELAY <n>,<mode>[,<channel alarm>,<alarm type>]`` (manual p.175); the vendor's driver
    turns a relay on with ``RELAY 1,1,,``, so the last two fields may be left off."""
    r = d.relays[n]
    r.mode = mode
    if channel is not None:
        r.channel = channel
    if alarm_type is not None:
        r.alarm_type = alarm_type


def relayst_q(d: LS372Device, n: int) -> str:
    # on only in mode 1: no alarm goes off and no zone is followed in the emulator
    return "1" if d.relays[n].mode == 1 else "0"


# -- analog outputs and control zones -----------------------------------------------------------
def analog_q(d: LS372Device, out: int) -> str:
    a = d.analog[out]
    ch = a.input if a.input in ("A", "0") else f"{int(a.input):02d}"
    return f"{a.polarity},{a.mode},{ch},{a.source},{_fmt_value(a.high)},{_fmt_value(a.low)},{a.manual:+08.3f}"


def analog_set(
    d: LS372Device,
    out: int,
    polarity: int,
    mode: int,
    inp: str,
    source: int,
    high: float,
    low: float,
    manual: float,
) -> None:
    """``ANALOG <out>,<polarity>,<mode>,<input>,<source>,<high>,<low>,<manual value>``."""
    a = d.analog[out]
    a.polarity, a.mode, a.input, a.source, a.high, a.low, a.manual = polarity, mode, inp, source, high, low, manual


def zone_q(d: LS372Device, out: int, zone: int) -> str:
    z = d.zones[(out, zone)]
    return (
        f"{fmt_372(z.upper)},{z.p:+08.1f},{z.i:+08.1f},{z.d:+07.1f},{z.mout:+07.2f},"
        f"{z.range},{z.rate:+07.3f},{z.relay1},{z.relay2}"
    )


def zone_set(
    d: LS372Device,
    out: int,
    zone: int,
    upper: float,
    p: float,
    i: float,
    dd: float,
    mout: float,
    rng: int,
    rate: float,
    relay1: int,
    relay2: int,
) -> None:
    """``ZONE`` (manual p.178): the range is 0-8 on the sample heater and 0-1 on the warm-up heater."""
    if out == 1 and rng > 1:
        raise ExecutionError(f"zone range {rng} outside 0-1 on the warm-up heater")
    z = d.zones[(out, zone)]
    z.upper, z.p, z.i, z.d, z.mout, z.range, z.rate, z.relay1, z.relay2 = (
        upper,
        p,
        i,
        dd,
        mout,
        rng,
        rate,
        relay1,
        relay2,
    )


COMMANDS: tuple[Command, ...] = (
    # input curve: the same setting as INSET's curve field
    Command("INCRV?", lambda d, ch: f"{d.channels[ch].curve:02d}", (CHANNEL,)),
    Command("INCRV", incrv_set, (CHANNEL, Int(0, 59))),
    # display, interface, keypad, beeper, web login
    Command("DISPLAY?", lambda d: "{},{},{}".format(*d.panel.display), counts=(0,)),
    Command("DISPLAY", display_set, (Int(0, 2), Int(0, 2), Int(0, 3)), counts=(1, 2, 3)),
    Command("IEEE?", lambda d: f"{d.panel.ieee_address:02d}", counts=(0,)),
    Command("IEEE", ieee_set, (Int(0, 30), Int(0, 30), Int(1, 30)), counts=(1, 3)),
    Command("MODE?", lambda d: str(d.panel.mode), counts=(0,)),
    Command("MODE", lambda d, m: setattr(d.panel, "mode", m), (Int(0, 2),)),
    Command("DOUT?", lambda d: f"{d.panel.dout:02d}", counts=(0,)),
    Command("DOUT", lambda d, bits: setattr(d.panel, "dout", bits), (Int(0, 31),)),
    Command("INTSEL?", lambda d: str(d.panel.intsel), counts=(0,)),
    Command("INTSEL", lambda d, i: setattr(d.panel, "intsel", i), (Int(0, 2),)),
    Command("MONITOR?", lambda d: str(d.panel.monitor), counts=(0,)),
    Command("MONITOR", lambda d, src: setattr(d.panel, "monitor", src), (Int(0, 7),)),
    Command("LOCK?", lambda d: "{},{:03d}".format(*d.panel.lock), counts=(0,)),
    Command("LOCK", lock_set, (FLAG, Int(0, 999)), counts=(1, 2)),
    Command("BEEP?", lambda d: str(d.panel.beep), counts=(0,)),
    Command("BEEP", lambda d, on: setattr(d.panel, "beep", on), (FLAG,)),
    Command("WEBLOG?", weblog_q, counts=(0,)),
    Command("WEBLOG", weblog_set, (Text(PAD), Text(PAD))),
    # alarms and relays
    Command("ALARM?", alarm_q, (CHANNEL,)),
    Command(
        "ALARM",
        alarm_set,
        (CHANNEL_OR_ZERO, FLAG, FLOAT, FLOAT, FLOAT, Float(0), FLOAT, FLOAT, FLOAT),
        counts=range(2, 10),
    ),
    Command("RELAY?", relay_q, (RELAY_NUMBER,)),
    Command("RELAY", relay_set, (RELAY_NUMBER, Int(0, 4), CHANNEL_OR_ZERO, Int(0, 2)), counts=(2, 3, 4)),
    Command("RELAYST?", relayst_q, (RELAY_NUMBER,)),
    # analog outputs and the zone table
    Command("ANALOG?", analog_q, (ANALOG_OUT,)),
    Command(
        "ANALOG",
        analog_set,
        (ANALOG_OUT, FLAG, Int(0, 6), CHANNEL_OR_ZERO, Int(0, 4), FLOAT, FLOAT, Float(-100, 100)),
    ),
    Command("ZONE?", zone_q, (OUT01, Int(1, 10))),
    Command(
        "ZONE",
        zone_set,
        (OUT01, Int(1, 10), Float(0), Float(0, 1000), Float(0, 10000), Float(0, 2500), PERCENT, Int(0, 8))
        + (Float(0, 100), FLAG, FLAG),
    ),
)
