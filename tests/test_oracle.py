"""Independent oracle: Lake Shore's own ``lakeshore`` package against our emulators.

If the vendor's driver reads back what our driver set (and the reverse), the
emulator speaks the real dialect, not one tailored to our driver. Every call
into the oracle has an outer timeout: it can spin forever if a socket closes.
"""

from types import SimpleNamespace

import lakeshore
import lakeshore.generic_instrument as generic
import pytest

from drivers.ls240 import Model240 as Our240
from drivers.ls372 import PID
from drivers.ls372 import Model372 as Our372
from drivers.transport import TcpTransport

from .conftest import run_with_timeout as within


@pytest.fixture
def fake_usb(monkeypatch):
    """The documented way around the package's VID/PID-only port scan (shared/lakeshore.md 4a)."""
    ports = []
    monkeypatch.setattr(generic, "comports", lambda: ports)

    def add(device: str, pid: int, serial_number: str):
        ports.append(SimpleNamespace(device=device, vid=0x1FB9, pid=pid, serial_number=serial_number))

    return add


def test_oracle_372_tcp(emu372):
    host, port = emu372.tcp.address
    ours = Our372(TcpTransport(host, port), timeout=2)
    ours.connect()
    ours.set_input_name(3, "Cold Plate X")
    ours.set_scan(3, False)
    oracle = within(lambda: lakeshore.Model372(baud_rate=None, ip_address=host, tcp_port=port, timeout=2))
    try:
        assert within(lambda: oracle.get_sensor_name(3)) == "Cold Plate X"
        assert within(lambda: oracle.get_scanner_status()) == {"input_channel": 3, "status": False}
        k = within(lambda: oracle.get_kelvin_reading("A"))
        ohms = within(lambda: oracle.get_resistance_reading("A"))
        ours_a = ours.read("A")
        assert k == pytest.approx(ours_a.kelvin, rel=0.01) and ohms == pytest.approx(ours_a.sensor, rel=0.01)
        within(lambda: oracle.set_heater_pid(0, 25, 40, 5))
        assert ours.pid(0) == PID(25, 40, 5)
        within(lambda: oracle.set_sensor_name(5, "Oracle MXC"))
        assert ours.input_name(5) == "Oracle MXC"
        hdr = within(lambda: oracle.get_curve_header(22))
        assert hdr.curve_name == "RX-102A-CAL" and hdr.temperature_limit == 40.0
        assert within(lambda: oracle.get_filter(1)) == {"state": True, "settle_time": 10, "window": 2}
        status = within(lambda: oracle.get_reading_status(4))
        assert status.resistance_over is True  # nothing wired to input 4
        # A bad command surfaces as the vendor's "Command Error" through *ESR?, as on the real bridge.
        with pytest.raises(Exception, match="Command Error|Invalid"):
            within(lambda: oracle.command("BOGUS 1"))
    finally:
        within(lambda: oracle.disconnect_tcp())
        ours.close()


def test_oracle_372_serial_pty(emu372_pty, fake_usb):
    fake_usb(emu372_pty.pty.link, 0x0305, "LSA23JD")
    oracle = within(lambda: lakeshore.Model372(57600, com_port=emu372_pty.pty.link, timeout=1))
    try:
        assert oracle.serial_number == "LSA23JD"
        assert within(lambda: oracle.get_sensor_name(5)) == "MXC"
        assert 0.005 < within(lambda: oracle.get_kelvin_reading("A")) < 0.05
    finally:
        within(lambda: oracle.disconnect_usb())


def test_oracle_240_serial_pty(emu240, fake_usb):
    fake_usb(emu240.pty.link, 0x0205, "LSA24AZ")
    oracle = within(lambda: lakeshore.Model240(com_port=emu240.pty.link, timeout=1))
    try:
        assert oracle.serial_number == "LSA24AZ"
        within(lambda: oracle.set_sensor_name(1, "FiftyK"))
        k = within(lambda: oracle.get_kelvin_reading(1))
        v = within(lambda: oracle.get_sensor_reading(1))
        assert 40 < k < 45 and 0.9 < v < 1.2
        assert within(lambda: oracle.get_sensor_name(1)) == "FiftyK"
        assert within(lambda: oracle.get_modname()).startswith("Kelvinpi")
        hdr = within(lambda: oracle.get_curve_header(2))
        assert hdr.curve_name == "DT-600"
    finally:
        within(lambda: oracle.disconnect_usb())
    # and our driver sees what the oracle wrote
    ours = Our240.serial(emu240.pty.link)
    ours.connect()
    assert ours.input_name(1) == "FiftyK"
    ours.close()
