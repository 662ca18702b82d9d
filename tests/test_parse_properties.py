"""Reply parsers on arbitrary bytes: a typed error or a correct value, nothing else."""
import math

from hypothesis import given, settings, strategies as st

from drivers import BadReply
from drivers.base import Identity
from drivers.ls240 import Model240
from drivers.ls372 import Model372
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
    import pytest

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
    assert len(s) == 12 and s[0] in "+-"
    assert parse_float(s) == __import__("pytest").approx(x, rel=1e-3, abs=1e-15)


@given(st.floats(min_value=-9999, max_value=9999, allow_nan=False))
def test_240_format_round_trip(x):
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
