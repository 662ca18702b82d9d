"""Reply parsers on arbitrary bytes and on generated valid replies: a typed error or the right value."""

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import BadReply
from drivers.base import Identity
from drivers.curve_commands import CurveHeader
from drivers.ls240 import InputType as InputType240
from drivers.ls240 import Model240
from drivers.ls372 import PID, HeaterSetup, InputSetup, InputType, Model372, ScanState
from drivers.parse import parse_float, parse_int
from drivers.testing import TranscriptTransport
from firmware_host.protocol import fmt_240, fmt_372


@given(st.binary(max_size=40))
def test_parse_float_total(raw):
    try:
        v = parse_float(raw)
    except BadReply as exc:
        assert exc.raw == raw.strip(b" ")
    else:
        assert math.isfinite(v)
        assert v == float(raw)


def test_parse_float_refuses_out_of_range():
    """``1E999`` is shaped like a number but overflows to inf: a BadReply, never an infinite reading."""
    for raw in (b"1E999", b"-1E999", b"+999.999E+999"):
        with pytest.raises(BadReply, match="out of range"):
            parse_float(raw, "KRDG? 1")
    assert parse_float(b"+1.0E+99") == 1e99


@given(st.binary(max_size=20))
def test_parse_int_total(raw):
    try:
        v = parse_int(raw)
    except BadReply:
        return
    assert v == int(raw)


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-12))
def test_372_format_round_trip(x):
    s = fmt_372(x)
    assert re.fullmatch(FLOAT_GRAMMARS["372 reading"], s.encode())  # the emulator speaks the 372's grammar
    assert parse_float(s) == pytest.approx(x, rel=1e-3, abs=1e-15)


@given(st.floats(min_value=-9999, max_value=9999, allow_nan=False))
def test_240_format_round_trip(x):
    assert re.fullmatch(FLOAT_GRAMMARS["240 reading"], fmt_240(x).encode())
    assert abs(parse_float(fmt_240(x)) - x) <= 1e-5 * max(1, abs(x))


@given(st.binary(max_size=60))
def test_identity_total(raw):
    try:
        ident = Identity.parse(raw)
    except BadReply:
        return
    assert raw.count(b",") == 3 and ident.manufacturer


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_372_read_total(raw):
    m = Model372(TranscriptTransport([("KRDG? 1;RDGR? 1;RDGST? 1", raw)]))
    try:
        r = m.read(1)
    except BadReply:
        return
    parts = raw.split(b";")
    assert r.raw_kelvin == float(parts[0]) and r.raw_sensor == float(parts[1]) and r.status == int(parts[2])
    if r.kelvin is not None:
        assert r.status & 0xF0 == 0 and r.kelvin > 0


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_240_read_total(raw):
    m = Model240(TranscriptTransport([("KRDG? 2;SRDG? 2;RDGST? 2", raw)]))
    try:
        r = m.read(2)
    except BadReply:
        return
    assert r.status == int(raw.split(b";")[2])


@given(st.lists(st.sampled_from(["+001.000E+00", "07", "garbage", "", "1,2", "LSCI"]), min_size=1, max_size=5))
def test_scan_reply_total(fields):
    raw = ",".join(fields).encode()
    m = Model372(TranscriptTransport([("SCAN?", raw)]))
    try:
        s = m.scan()
    except BadReply:
        return
    assert s.channel in {str(i) for i in range(1, 17)} | {"A"}


# -- valid replies, generated from each reply grammar ------------------------------------------
# Random bytes almost never form a reply, so the tests above rarely reach their positive
# assertions. These strategies generate the replies the instruments really send (one regex per
# reply grammar, [0-9] rather than \d so no non-ASCII digit sneaks in), check that the parser
# accepts them and returns exactly float()/int() of the text, and check that a valid reply with
# one poison byte inserted is refused with BadReply, never turned into a number.
FLOAT_GRAMMARS = {
    "372 reading": rb"[+-][0-9]{3}\.[0-9]{3}E[+-][0-9]{2}",  # +293.873E+00
    "engineering": rb"[+-][0-9]+\.[0-9]{4}E[+-][0-9]{2}",  # +00.0005E+00 (HTR?)
    "240 reading": rb"[+-][0-9]{1,6}(\.[0-9]{1,5})?",  # +293.873, +0.52042
    "setting": rb"[+-]?[0-9]{1,5}\.[0-9]{0,3}",  # +120.000, +0000.00, 10.
    "bare fraction": rb"[+-]?\.[0-9]{1,6}",  # .1135
    "curve file": rb"[+-]?[0-9]\.[0-9]{5}e[+-][0-9]{2}",  # 9.05392e-02
}
INT_GRAMMARS = {
    "status": rb"[0-9]{3}",  # 007
    "signed": rb"[+-]?[0-9]{1,6}",  # +0, -12
}

floats = st.one_of(*(st.from_regex(g, fullmatch=True) for g in FLOAT_GRAMMARS.values()))
ints = st.one_of(*(st.from_regex(g, fullmatch=True) for g in INT_GRAMMARS.values()))
reading_372 = st.from_regex(FLOAT_GRAMMARS["372 reading"], fullmatch=True)
reading_240 = st.from_regex(FLOAT_GRAMMARS["240 reading"], fullmatch=True)
status = st.integers(0, 255).map(lambda s: b"%03d" % s)
flag01 = st.sampled_from([b"0", b"1"])
name = st.from_regex(rb"[A-Za-z0-9 ._-]{0,15}", fullmatch=True)  # a CRVHDR/INNAME text field
padding = st.sampled_from([b"", b" ", b"  "])  # the parsers strip spaces, the 372 pads some fields

# Bytes that no number grammar contains (``.``, ``+`` and ``e`` can make another valid number).
POISON = b"xX_#,;nN\x00\x7f\xff"
INT_POISON = POISON + b".eE"


@st.composite
def poisoned(draw, valid, poison=POISON):
    """A valid reply with one poison byte inserted anywhere: never a valid reply."""
    raw = draw(valid)
    at = draw(st.integers(0, len(raw)))
    bad = draw(st.sampled_from([bytes([b]) for b in poison]))
    return raw[:at] + bad + raw[at:]


@given(floats, padding, padding)
def test_parse_float_accepts_every_reply_grammar(raw, before, after):
    assert parse_float(before + raw + after, "KRDG? 1") == float(raw)
    assert parse_float((before + raw + after).decode("ascii")) == float(raw)


@given(poisoned(floats))
def test_parse_float_refuses_a_poisoned_reply(raw):
    with pytest.raises(BadReply, match="expected a number") as exc:
        parse_float(raw, "KRDG? 1")
    assert exc.value.raw == raw.strip(b" ") and exc.value.query == "KRDG? 1"


@given(st.from_regex(rb"[+-]?[0-9]\.[0-9]{1,4}E[+-]?", fullmatch=True))
def test_parse_float_refuses_an_exponent_without_digits(raw):
    with pytest.raises(BadReply, match="expected a number"):
        parse_float(raw)


@given(ints, padding, padding)
def test_parse_int_accepts_every_reply_grammar(raw, before, after):
    assert parse_int(before + raw + after, "RDGST? 1") == int(raw)


@given(
    st.one_of(
        poisoned(ints, INT_POISON),
        st.from_regex(rb"[+-]?[0-9]{7,9}", fullmatch=True),
        st.from_regex(rb"[+-]{2}[0-9]{1,3}", fullmatch=True),
    )
)
def test_parse_int_refuses_a_poisoned_reply(raw):
    with pytest.raises(BadReply, match="expected an integer") as exc:
        parse_int(raw, "RDGST? 1")
    assert exc.value.raw == raw.strip(b" ")


@given(reading_372, reading_372, st.integers(0, 255))
def test_372_read_decodes_every_valid_reply(k, r, s):
    m = Model372(TranscriptTransport([("KRDG? 3;RDGR? 3;RDGST? 3", b"%s;%s;%03d" % (k, r, s))]))
    got = m.read(3)
    assert (got.raw_kelvin, got.raw_sensor, got.status) == (float(k), float(r), s)
    assert got.sensor_valid == (s & 0x3F == 0)  # an overload bit: the ohms are not a measurement
    assert got.kelvin_valid == (s == 0 and float(k) > 0)  # any bit, or no curve (0 K): not a temperature


@given(reading_240, reading_240, st.integers(0, 255))
def test_240_read_decodes_every_valid_reply(k, v, s):
    m = Model240(TranscriptTransport([("KRDG? 2;SRDG? 2;RDGST? 2", b"%s;%s;%03d" % (k, v, s))]))
    got = m.read(2)
    assert (got.raw_kelvin, got.raw_sensor, got.status) == (float(k), float(v), s)
    assert got.sensor_valid == (s & (1 | 64 | 128) == 0)
    assert got.kelvin_valid == (s & (1 | 16 | 32 | 64 | 128) == 0 and float(k) > 0)


@st.composite
def reading_with_one_bad_field(draw, reading):
    fields = [draw(reading), draw(reading), draw(status)]
    i = draw(st.integers(0, 2))
    fields[i] = draw(poisoned(st.just(fields[i]), POISON.replace(b";", b"") if i < 2 else INT_POISON))
    return b";".join(fields)


@settings(max_examples=200)
@given(
    st.one_of(
        reading_with_one_bad_field(reading_372),
        st.integers(256, 999).map(lambda s: b"+001.000E+00;+001.000E+03;%d" % s),
    )
)
@pytest.mark.slow
def test_372_read_refuses_a_reply_with_one_bad_field(raw):
    m = Model372(TranscriptTransport([("KRDG? 1;RDGR? 1;RDGST? 1", raw)]))
    with pytest.raises(BadReply):
        m.read(1)


@pytest.mark.slow
@settings(max_examples=200)
@given(reading_with_one_bad_field(reading_240))
def test_240_read_refuses_a_reply_with_one_bad_field(raw):
    m = Model240(TranscriptTransport([("KRDG? 1;SRDG? 1;RDGST? 1", raw)]))
    with pytest.raises(BadReply):
        m.read(1)


# Multi-field replies: (method, query, field strategies, what the fields must become).
# Each field strategy produces the bytes of one comma-separated field.
MULTI_FIELD = [
    (
        lambda m: m.input_setup(1),
        "INSET? 1",
        [flag01, ints, ints, ints, ints],
        lambda f: InputSetup(int(f[0]) == 1, *map(int, f[1:])),
    ),
    (lambda m: m.input_type("A"), "INTYPE? A", [ints] * 6, lambda f: InputType(*map(int, f))),
    (lambda m: m.pid(0), "PID? 0", [floats] * 3, lambda f: PID(*map(float, f))),
    (
        lambda m: m.heater_setup(0),
        "HTRSET? 0",
        [floats, ints, floats, ints],
        lambda f: HeaterSetup(float(f[0]), int(f[1]), float(f[2]), int(f[3])),
    ),
    (
        lambda m: m.curve_header(21),
        "CRVHDR? 21",
        [name, name, ints, floats, ints],
        lambda f: CurveHeader(f[0].decode().strip(), f[1].decode().strip(), int(f[2]), float(f[3]), int(f[4])),
    ),
    (lambda m: m.warmup(), "WARMUP?", [ints, floats], lambda f: (int(f[0]), float(f[1]))),
    (lambda m: m.curve_point(21, 1), "CRVPT? 21,1", [floats, floats], lambda f: (float(f[0]), float(f[1]))),
]
MULTI_FIELD_240 = [
    (lambda m: m.input_type(1), "INTYPE? 1", [ints] * 6, lambda f: InputType240(*map(int, f))),
    (lambda m: m.profibus_slot(1), "PROFISLOT? 1", [ints, ints], lambda f: (int(f[0]), int(f[1]))),
    (
        lambda m: m.curve_header(1),
        "CRVHDR? 1",
        [name, name, ints, floats, ints],
        lambda f: CurveHeader(f[0].decode().strip(), f[1].decode().strip(), int(f[2]), float(f[3]), int(f[4])),
    ),
]
CASES = [(Model372, *c) for c in MULTI_FIELD] + [(Model240, *c) for c in MULTI_FIELD_240]
IDS = [c[2] for c in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("model, call, query, field_strategies, expected", CASES, ids=IDS)
@settings(max_examples=60)
@given(data=st.data())
def test_multi_field_reply_round_trip(model, call, query, field_strategies, expected, data):
    f = [data.draw(s) for s in field_strategies]
    assert call(model(TranscriptTransport([(query, b",".join(f))]))) == expected(f)


@pytest.mark.slow
@pytest.mark.parametrize("model, call, query, field_strategies, expected", CASES, ids=IDS)
@settings(max_examples=60)
@given(data=st.data())
def test_multi_field_reply_mutated_is_refused(model, call, query, field_strategies, expected, data):
    f = [data.draw(s) for s in field_strategies]
    numeric = [i for i, s in enumerate(field_strategies) if s is not name]
    mutation = data.draw(st.sampled_from(["drop", "extra", "poison"]))
    if mutation == "drop":
        del f[data.draw(st.integers(0, len(f) - 1))]
    elif mutation == "extra":
        f.insert(data.draw(st.integers(0, len(f))), data.draw(ints))
    else:
        i = data.draw(st.sampled_from(numeric))
        poison = POISON if field_strategies[i] is floats else INT_POISON  # ``.`` and ``e`` suit a float
        f[i] = data.draw(poisoned(st.just(f[i]), poison.replace(b",", b"")))
    raw = b",".join(f)
    if query.startswith("CRVPT?") and mutation == "extra" and re.fullmatch(rb"[^,]*,[^,]*,[^,]*", raw):
        return  # CRVPT? may carry a third (curvature) field on the 372: still a valid reply
    with pytest.raises(BadReply) as exc:
        call(model(TranscriptTransport([(query, raw)])))
    assert exc.value.query == query


@given(st.sampled_from(["A"] + [f"{i:02d}" for i in range(1, 17)]), flag01)
def test_scan_reply_round_trip(channel, auto):
    m = Model372(TranscriptTransport([("SCAN?", b"%s,%s" % (channel.encode(), auto))]))
    assert m.scan() == ScanState(channel.lstrip("0"), auto == b"1")
