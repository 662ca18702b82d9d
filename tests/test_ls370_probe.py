"""`kelvinpi probe --model 370`: a read-only report of an emulated 370; it heard no setting."""

from __future__ import annotations

import copy

import pytest

from appliance.probe import open_instrument, probe
from drivers.base import Pacing
from drivers.ls370 import Model370
from drivers.transport import TcpTransport
from firmware_host.emulator import Emulator
from firmware_host.protocol import parse_message


def test_probe_370_reports_and_sends_only_queries():
    emu = Emulator.ls370(seed=13)
    emu.device.strict_pacing = False
    emu.listen_tcp("127.0.0.1", 0)
    try:
        before = copy.deepcopy(emu.device.channels), copy.deepcopy(emu.device.curves.slots)
        report = probe(Model370(TcpTransport(*emu.tcp.address), timeout=2, pacing=Pacing(0, 0, 0)))
        text = report.text()
        assert "identity: LSCI,MODEL370,370A1B" in text and not report.problems, text
        assert "   5 inset True,10,3,2,1  rdgrng 0,3,10,1,0" in text
        assert "sample heater: CMODE <ControlMode.OFF: 4>" in text and "   5 0.0115 K" in text
        assert (copy.deepcopy(emu.device.channels), copy.deepcopy(emu.device.curves.slots)) == before
        heard = [parse_message(p)[0] for line in emu.ledger.heard for p in line.split(";")]
        assert all(h.endswith("?") for h in heard if h), heard
    finally:
        emu.stop()


def test_probe_370_has_no_ethernet():
    with pytest.raises(ValueError, match="no Ethernet port"):
        open_instrument("370", host="127.0.0.1")
    assert open_instrument("370", device="/dev/ttyUSB0").transport.framing == "9600 7O1"
