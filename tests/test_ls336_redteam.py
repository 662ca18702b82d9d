"""The red-team faults on the Model 336/350 (issue 24), each as a test that failed before its fix."""

from __future__ import annotations

import re
import socket
import time

import pytest
import serial

from appliance import config
from appliance.health import InstrumentHealth
from appliance.ls336_acquisition import Ls336Acquisition
from appliance.naming import ocs_names
from appliance.store import Store
from drivers import DriverError, InstrumentError
from drivers.ls336 import Model336
from drivers.ls372 import Model372
from firmware_host.emulator import Emulator

from .conftest import wait_for

# ocs Feed.verify_data_field_string: letters, digits and _ only; a letter first, or underscores then a letter.
OCS_FIELD = re.compile(r"^_*[A-Za-z][A-Za-z0-9_]{0,254}$")


def test_ocs_names_of_digit_led_input_names_are_valid_for_ocs():
    for model in ("336", "350"):
        for ch, name in (("A", "50K Plate"), ("B", "4K Plate"), ("C", "Still"), ("D", "_1K"), ("D2", "")):
            t, v = ocs_names(model, ch, name)
            assert OCS_FIELD.match(t) and OCS_FIELD.match(v), (model, ch, name, t, v)
    assert ocs_names("336", "A", "50K Plate") == ("Input_50K_Plate_T", "Input_50K_Plate_V")
    assert ocs_names("336", "C", "Still Plate") == ("Still_Plate_T", "Still_Plate_V")  # socs' name, kept


# -- 2: empty fields and unquoted text between commas (split_args, shared with the 372) ----------
@pytest.mark.parametrize("model", ["336", "350", "372"])
def test_empty_fields_and_unquoted_spaces_are_kept(model):
    emu = Emulator.ls372(seed=7) if model == "372" else Emulator.ls336(seed=7, model=model)
    disp = emu.device.dispatcher()
    assert disp.handle_line("*ESR?") == "128"
    # socs' Curve._set_header sends the name unquoted and the serial empty (Lakeshore336.py, _set_header)
    assert disp.handle_line("CRVHDR 21,USER CURVE,,3,+375.000,1;CRVHDR? 21") == "USER CURVE,,3,+375.000,1"
    assert disp.handle_line("*ESR?") == "0"
    # an empty field is a field: SETP 1,,5 is three arguments, refused, the setpoint unchanged
    before = disp.handle_line("SETP? 1")
    assert disp.handle_line("SETP 1,,5;*ESR?") == "16"
    assert disp.handle_line("SETP? 1") == before
    # socs' space-separated arguments still work where there is no comma
    assert disp.handle_line('CRVHDR 24,"My Curve","",3,300,1;CRVHDR? 24') == "My Curve,,3,+300.000,1"


def test_the_336s_own_blank_header_can_be_written_back():
    disp = Emulator.ls336(seed=7).device.dispatcher()
    disp.handle_line("*ESR?")
    header = disp.handle_line("CRVHDR? 22")
    assert header is not None and ",," in header  # the blank serial
    assert disp.handle_line(f"CRVHDR 23,{header};*ESR?") == "0"
    assert disp.handle_line("CRVHDR? 23") == header


# -- 4: the emulated USB port opens again after its client closed it --------------------------
@pytest.mark.parametrize("model", ["336", "372"])
def test_pty_reopens_after_the_client_closed_it(tmp_path, model):
    emu = Emulator.ls372(seed=3) if model == "372" else Emulator.ls336(seed=3)
    link = emu.listen_pty(str(tmp_path / "port"))
    try:
        for _ in range(3):  # open, ask, close: as a real USB serial device, again and again
            with serial.Serial(link, 57600, bytesize=7, parity="O", stopbits=1, timeout=1) as port:
                port.write(b"*IDN?\r\n")
                assert port.readline().startswith(b"LSCI,MODEL" + model.encode())
    finally:
        emu.stop()


@pytest.mark.parametrize("model", ["336", "372"])
def test_two_garbled_replies_in_a_row_over_the_pty_then_polling_resumes(tmp_path, model):
    """Red team 336 item 4: the second garbled reply fell on the reconnect's *IDN?; the reopen after it
    failed with EINVAL for good. Now the driver's close-and-reopen works however often it is needed."""
    emu = Emulator.ls372(seed=3) if model == "372" else Emulator.ls336(seed=3)
    link = emu.listen_pty(str(tmp_path / "port"))
    m = (Model372 if model == "372" else Model336).serial(link, timeout=0.5)
    m.pacing = type(m.pacing)(0, 0, 0)
    try:
        m.connect()
        emu.control("garbage 2")
        with pytest.raises(DriverError):
            m.identify()  # the first garbled reply
        m.close()
        with pytest.raises(DriverError):
            m.connect()  # the second: the reconnect's *IDN?
        m.close()
        assert m.connect().model == "MODEL" + model  # the port opens a third time, and answers
    finally:
        m.close()
        emu.stop()


# -- 5: D1 is D everywhere --------------------------------------------------------------------
def _config(model: str, *numbers: str) -> str:
    chans = "".join(f'[[instrument.channel]]\nnumber = "{n}"\n' for n in numbers)
    return f'[[instrument]]\nmodel = "{model}"\nname = "X"\ntransport = "tcp"\nhost = "h"\n{chans}'


@pytest.mark.parametrize("model", ["336", "350"])
def test_d1_is_d_in_the_config(model):
    for spelling in ("D1", "d1"):
        cfg = config.parse(_config(model, "A", spelling))
        assert [c.number for c in cfg.instrument[0].channel] == ["A", "D"]
    with pytest.raises(config.ConfigError, match=r"channel D1 listed twice \(D1 is D\)"):
        config.parse(_config(model, "D", "D1"))


# -- 7: configured D2-D5 on a 336 without the 3062 ---------------------------------------------
def test_configured_inputs_the_336_lacks_are_named_in_an_event_and_the_health(tmp_path):
    emu = Emulator.ls336(seed=9)  # no 3062: inputs A-D only
    host, port = emu.listen_tcp("127.0.0.1", 0)
    chans = "".join(f'[[instrument.channel]]\nnumber = "{n}"\n' for n in ("A", "D2", "D4"))
    cfg = config.parse(
        f'[[instrument]]\nmodel = "336"\nname = "LSA336A"\ntransport = "tcp"\nhost = "{host}"\nport = {port}\n'
        f"timeout = 1.0\n{chans}"
    ).instrument[0]
    health = InstrumentHealth(cfg.name, cfg.model, cfg.transport)
    acq = Ls336Acquisition(cfg, health)
    store = Store(tmp_path / "k.db")
    acq.attach_store(store)
    try:
        acq.instrument.pacing = type(acq.instrument.pacing)(0, 0, 0)
        acq.instrument.connect()
        for _ in range(2):  # a reconnect plans again: one event, not one per connect
            found = acq.discover_inputs()
        assert list(found) == ["A"]
        (warning,) = health.warnings
        assert "D2, D4" in warning and "3062" in warning and health.as_dict()["warnings"] == [warning]
        events = store.events(kinds=("missing_inputs",))
        assert [e["detail"] for e in events] == [warning] and events[0]["node"] == "LSA336A"
    finally:
        acq.instrument.close()
        store.close()
        emu.stop()


# -- 8: the heater outputs in the ledger, as the inputs are ------------------------------------
def test_htr_replies_are_in_the_ledger_and_stamped_at_the_reply():
    emu = Emulator.ls336(seed=4)
    host, port = emu.listen_tcp("127.0.0.1", 0)
    m = Model336.tcp(host, port, timeout=1)
    m.pacing = type(m.pacing)(0, 0, 0)
    try:
        m.connect()
        before = time.time()
        (v1, t1), (v2, t2) = m.heater_output_at(1), m.heater_output_at(2)
        assert before <= t1 <= t2 <= time.time()
        wait_for(lambda: len(emu.ledger.snapshot()) == 2, 2, what="the ledger's note of both replies")
        led = emu.ledger.snapshot()
        assert list(led[("1", "heater")]) == [v1] and list(led[("2", "heater")]) == [v2]
        # the 372's bare HTR? (no output named) is not counted: no channel to file it under
        emu.ledger.note("HTR?", "+00.0000E+00", True, False)
        assert set(emu.ledger.snapshot()) == {("1", "heater"), ("2", "heater")}
    finally:
        m.close()
        emu.stop()


# -- minors ----------------------------------------------------------------------------------
def test_connect_clears_the_power_on_bit_so_a_refusal_reports_only_its_own():
    emu = Emulator.ls336(seed=4)
    host, port = emu.listen_tcp("127.0.0.1", 0)
    m = Model336.tcp(host, port, timeout=1)
    m.pacing = type(m.pacing)(0, 0, 0)
    try:
        m.connect()
        with pytest.raises(InstrumentError, match=r"execution error \(ESR=16\)"):
            m.command("SETP 9,1")  # no output 9
    finally:
        m.close()
        emu.stop()


def test_a_cr_alone_ends_a_message_and_leaves_nothing_for_the_next():
    emu = Emulator.ls336(seed=4)
    host, port = emu.listen_tcp("127.0.0.1", 0)
    try:
        with socket.create_connection((host, port), timeout=2) as s, s.makefile("rb") as f:
            s.sendall(b"KRDG? A\r")
            first = f.readline()
            s.sendall(b"KRDG? A;SRDG? A;RDGST? A\r\n")  # before the fix: "+1.08581;000", fields lost
            fields = f.readline().rstrip(b"\r\n").split(b";")
            s.sendall(b"*ESR?\n")
            assert f.readline() == b"128\r\n"  # nothing refused: the power-on bit only
        assert float(first) > 0 and len(fields) == 3 and float(fields[0]) > 0 and fields[2].isdigit()
    finally:
        emu.stop()
