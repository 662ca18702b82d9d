"""Read-only driver tests against a real instrument, opt in (pymeasure's manner):

    KELVINPI_HW_372=<host or ASRL resource>   KELVINPI_HW_240=/dev/ttyUSB0

Without them this file is not collected (tests/conftest.py), so nothing is skipped or counted.
Only queries are sent: the instrument's settings are never changed.
"""

from __future__ import annotations

import os

import pytest

from appliance.probe import open_instrument, probe
from drivers.ls240 import Model240
from drivers.ls372 import MEASUREMENT_CHANNELS

HW_372 = os.environ.get("KELVINPI_HW_372")
HW_240 = os.environ.get("KELVINPI_HW_240")


def _372():
    if not HW_372:
        pytest.skip("KELVINPI_HW_372 not set")
    if HW_372.upper().startswith(("ASRL", "TCPIP", "GPIB")):
        return open_instrument("372", resource=HW_372)
    if HW_372.startswith("/dev/"):
        return open_instrument("372", device=HW_372)
    return open_instrument("372", host=HW_372)


def _240():
    if not HW_240:
        pytest.skip("KELVINPI_HW_240 not set")
    return open_instrument("240", device=HW_240)


def test_hw_372_identity_and_readings():
    m = _372()
    ident = m.connect()
    try:
        assert ident.manufacturer == "LSCI" and ident.model == "MODEL372"
        scan = m.scan()
        assert scan.channel in MEASUREMENT_CHANNELS
        for ch in ["A"] + MEASUREMENT_CHANNELS:
            m.input_setup(ch), m.input_type(ch), m.input_name(ch)
        r = m.read(scan.channel)
        assert 0 <= r.status <= 255
    finally:
        m.close()


def test_hw_372_probe_report():
    assert "identity: LSCI,MODEL372" in probe(_372()).text()


def test_hw_240_identity_and_readings():
    m = _240()
    ident = m.connect()
    try:
        assert isinstance(m, Model240) and ident.model.startswith("MODEL240")
        for n in range(1, m.channel_count + 1):
            t = m.input_type(n)
            if t.enabled:
                assert 0 <= m.read(n).status <= 255
    finally:
        m.close()


def test_hw_240_probe_report():
    assert "identity: LSCI,MODEL240" in probe(_240()).text()
