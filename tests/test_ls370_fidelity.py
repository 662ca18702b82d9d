"""The emulated 370 against the third-party clients that know a 370 (firmware_host/FIDELITY.md, "Model 370").

socs' ``socs/Lakeshore/Lakeshore370.py`` (simonsobs/socs at 24a4adeb) is not imported: its byte
exchange is written out here, with the line each message comes from, over the serial framing it
opens (``serial.Serial(port, 9600, SEVENBITS, PARITY_ODD, STOPBITS_ONE, timeout)``, l.196),
``message + "\\r\\n"`` per message (l.230) and a reply read only when the message holds ``?``
(l.234-235); each reply is parsed the way socs parses it. InstrumentKit's ``Lakeshore370``
(instruments/lakeshore/lakeshore370.py, 0.6.0) does not install on this Python (its pinned
``ruamel.yaml ~= 0.15`` does not build), so its two messages are written out the same way.
"""

from __future__ import annotations

import time

import pytest
import serial

from firmware_host.emulator import Emulator

# socs' lookup tables (Lakeshore370.py l.11-173), as far as the replies below go through them
AUTORANGE_KEY = {"0": "off", "1": "on"}
MODE_KEY = {"0": "voltage", "1": "current"}
TEMPCO_KEY = {"1": "negative", "2": "positive"}
CSSHUNT_KEY = {"0": "on", "1": "off"}
UNITS_KEY = {"1": "kelvin", "2": "ohms"}
HEATER_RANGE_KEY = {"0": "Off", "1": 31.6e-6, "2": 100e-6, "3": 316e-6, "4": 1e-3, "5": 3.16e-3, "6": 10e-3}
HEATER_RANGE_KEY.update({"7": 31.6e-3, "8": 100e-3})
HEATER_RANGE_LOCK = {v: k for k, v in HEATER_RANGE_KEY.items()}
OUTPUT_MODES = {"1": "Closed Loop", "2": "Zone", "3": "Open Loop", "4": "Off"}
HEATER_DISPLAY_KEY = {"1": "current", "2": "power"}
STATUS = {128: "T.UNDER", 64: "T.OVER", 32: "R.UNDER", 16: "R.OVER", 8: "VDIF OVL", 4: "VMIX OVL"}
STATUS.update({2: "VCM OVL", 1: "CS OVL"})


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emu = Emulator.ls370(seed=7)
    emu.listen_pty(str(tmp_path_factory.mktemp("ls370") / "ls370"))
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def com(emulator):
    """socs' port (one for the module: Linux refuses a second 7O1 open of a pty)."""
    port = serial.Serial(emulator.pty.link, 9600, serial.SEVENBITS, serial.PARITY_ODD, serial.STOPBITS_ONE, 2)
    yield port
    port.close()


@pytest.fixture
def socs(emulator, com):
    """socs' ``LS370.msg`` on a 370 just powered on; the pacing rule off (socs sleeps 100 ms after
    every message, l.252, which the slow test below keeps)."""
    emulator.device.power_on()
    emulator.device.strict_pacing = False

    def msg(message: str, pause: float = 0.0) -> str:
        com.write(f"{message}\r\n".encode())
        resp = str(com.read_until(), "utf-8").strip() if "?" in message else ""
        time.sleep(pause)
        return resp

    return msg


def socs_connect(msg) -> dict:
    """``LS370.__init__`` (l.189-209): *IDN?, SCAN?, then per channel 1-16 ``Channel.__init__``
    (INSET?, RDGRNG?), then ``Heater.__init__`` (CMODE?, CPOL?, CSET?, HTRRNG?, CSET?)."""
    out: dict = {"id": msg("*IDN?"), "autoscan": bool(int(msg("SCAN?").split(",")[1])), "channels": {}}
    for i in range(1, 17):
        r = msg(f"INSET? {i}").split(",")  # _get_input_channel_parameter, l.395-422
        inset = (bool(int(r[0])), int(r[1]), int(r[2]), int(r[3]), TEMPCO_KEY[r[4]])
        g = msg(f"RDGRNG? {i}").split(",")  # _get_input_setup, l.424-474
        mode = MODE_KEY[g[0]]
        excitation = int(g[1])
        assert 1 <= excitation <= (22 if mode == "current" else 12)  # current_/voltage_excitation_key
        rdgrng = (mode, excitation, int(g[2]), AUTORANGE_KEY[g[3]], CSSHUNT_KEY[g[4]])
        assert 1 <= int(g[2]) <= 22  # range_key
        out["channels"][i] = (inset, rdgrng)
    heater = {"mode": OUTPUT_MODES[msg("CMODE?")], "polarity": msg("CPOL?")}  # _get_output_mode, l.1402
    c = msg("CSET?").split(",")
    heater.update(input=c[0], filter=c[1], units=UNITS_KEY[c[2]], delay=c[3])
    heater["range"] = HEATER_RANGE_KEY[msg("HTRRNG?").strip()]  # get_heater_range, l.1707
    c = msg("CSET?").split(",")  # get_heater_setup, l.1443
    heater.update(display=HEATER_DISPLAY_KEY[c[4]], rng_limit=HEATER_RANGE_KEY[c[5]], resistance=float(c[6]))
    out["heater"] = heater
    return out


def test_socs_connect_sequence(emulator, socs):
    got = socs_connect(socs)
    assert got["id"].startswith("LSCI,MODEL370,")
    assert got["channels"][5] == ((True, 10, 3, 2, "negative"), ("voltage", 3, 10, "on", "on"))
    assert got["heater"] == {
        "mode": "Off",
        "polarity": "0",
        "input": "05",
        "filter": "0",
        "units": "kelvin",
        "delay": "001",
        "range": "Off",
        "display": "current",
        "rng_limit": 0.1,
        "resistance": 120.0,
    }
    assert socs("*ESR?") == "128"  # nothing refused: only the power-on bit


def test_socs_acquisition_loop(emulator, socs):
    """The agent's loop (agents/lakeshore370/agent.py l.218-272): SCAN? for the active channel, its
    pause and dwell (INSET?), then ``get_temp`` in kelvin and ohms (SCAN?-free: chan given,
    RDGK?/RDGR?), and ``Channel.get_reading_status`` (RDGST?, l.907: bits summed down to 0)."""
    active = int(socs("SCAN?").split(",")[0])
    pause = int(socs(f"INSET? {active}").split(",")[2])
    dwell = int(socs(f"INSET? {active}").split(",")[1])
    assert (active, pause, dwell) == (1, 3, 10)
    kelvin, ohms = float(socs(f"RDGK? {active}")), float(socs(f"RDGR? {active}"))
    assert kelvin == pytest.approx(3.05, rel=0.01) and 1000 < ohms < 2000
    error_sum = int(socs(f"RDGST? {active}"))
    for key in STATUS:
        if key <= error_sum:
            error_sum -= key
    assert error_sum == 0


def test_socs_heater_setters(emulator, socs):
    """``Heater.set_heater_range`` (HTRRNG n, then HTRRNG?), ``set_pid``, ``set_setpoint``, and
    ``set_mode``, which resends CSET with the *word* socs keeps for the units (``kelvin``, from
    ``units_key``, l.1416 and l.1437): that CSET is refused (ESR 16; a real 370's answer is
    UNVERIFIED), while its CMODE takes."""
    socs(f"HTRRNG {HEATER_RANGE_LOCK[1e-3]}")
    assert HEATER_RANGE_KEY[socs("HTRRNG?")] == 1e-3
    socs("PID 20,100,0")
    assert tuple(float(x) for x in socs("PID?").split(",")) == (20.0, 100.0, 0.0)
    socs("SETP 0.015")
    assert float(socs("SETP?")) == 0.015
    assert socs("*ESR?") == "128"
    # set_mode("closed loop"): _get_output_mode, then CMODE, CPOL, CSET <input>,<filter>,<units word>,...
    c = socs("CSET?").split(",")
    socs("CMODE 1")
    socs("CPOL 0")
    socs(f"CSET {c[0]},{c[1]},{UNITS_KEY[c[2]]},{c[3]},{c[4]},{HEATER_RANGE_LOCK[0.1]},{float(c[6])}")
    assert OUTPUT_MODES[socs("CMODE?")] == "Closed Loop"
    assert int(socs("*ESR?")) & 16


def test_instrumentkit_lakeshore370(emulator, socs):
    """InstrumentKit 0.6.0 ``Lakeshore370``: ``IEEE 3,0`` on construction (no terminator, EOI: a GPIB
    setting; the serial port keeps CR LF), then ``channel[i].resistance`` is ``RDGR? i+1`` as a float."""
    socs("IEEE 3,0")
    assert socs("IEEE?") == "3,0,12"
    for i in range(16):
        assert float(socs(f"RDGR? {i + 1}")) >= 0
    assert socs("*ESR?") == "128"


@pytest.mark.slow
def test_socs_connect_with_the_pacing_rule(emulator, socs):
    """The whole connect sequence with socs' own 100 ms after each message (l.252) and the
    emulator's 50 ms rule on: nothing is dropped."""
    time.sleep(0.1)  # socs' pause after the previous test's last message
    emulator.device.strict_pacing = True
    drops = emulator.device.paced_drops
    got = socs_connect(lambda m: socs(m, 0.1))
    assert len(got["channels"]) == 16 and emulator.device.paced_drops == drops
