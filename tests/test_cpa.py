"""The Cryomech CPA: our emulator answers socs' byte exchange as the recorded panel does, and our
driver decodes it (and socs' recorded answer) the way socs does; faults give typed errors.

socs' code is not imported: its exchange is written out here, citing simonsobs/socs
socs/agents/cryomech_cpa/drivers.py (commit 24a4adeb) line by line.
"""

from __future__ import annotations

import socket
import struct

import pytest

from drivers.cpa import CryomechCPA, decode_block, model_name
from drivers.errors import BadReply, ConnectionLost, InstrumentTimeout
from firmware_host.cpa_server import CpaEmulator

# socs drivers.py:63-69 buildRegistersQuery, and :81-91 power (on 0x0001, off 0x00FF).
SOCS_QUERY = bytes([0x09, 0x99, 0x00, 0x00, 0x00, 0x06, 0x01, 0x04, 0x00, 0x01, 0x00, 0x35])
SOCS_POWER = {
    "on": bytes([0x09, 0x99, 0, 0, 0, 6, 1, 6, 0, 1, 0x00, 0x01]),
    "off": bytes([0x09, 0x99, 0, 0, 0, 6, 1, 6, 0, 1, 0x00, 0xFF]),
}
# socs drivers.py:114-133: byte positions of each key in the raw answer.
SOCS_KEYLOC = {
    "Operating_State": [9, 10],
    "Compressor_State": [11, 12],
    "Warning_State": [15, 16, 13, 14],
    "Alarm_State": [19, 20, 17, 18],
    "Coolant_In_Temp": [23, 24, 21, 22],
    "Coolant_Out_Temp": [27, 28, 25, 26],
    "Oil_Temp": [31, 32, 29, 30],
    "Helium_Temp": [35, 36, 33, 34],
    "Low_Pressure": [39, 40, 37, 38],
    "Low_Pressure_Average": [43, 44, 41, 42],
    "High_Pressure": [47, 48, 45, 46],
    "High_Pressure_Average": [51, 52, 49, 50],
    "Delta_Pressure_Average": [55, 56, 53, 54],
    "Motor_Current": [59, 60, 57, 58],
    "Hours_of_Operation": [63, 64, 61, 62],
    "Pressure_Unit": [65, 66],
    "Temperature_Unit": [67, 68],
    "Serial_Number": [69, 70],
    "Model": [71, 72],
    "Software_Revision": [73, 74],
}
# socs' recorded answer of a real panel to SOCS_QUERY
# (tests/integration/test_cryomech_cpa_agent_integration.py:17), copied as test data.
SOCS_FIXTURE = (
    b"\t\x99\x00\x00\x00m\x01\x04j\x00\x00\x00\x00\x00\x00\x80\x00\x00\x00\x80\x00A\x06B\x83\xfcjB\x82k\x85B"
    b"\x84\xe6fB\x85.\xb8C[\t\x0cC[\xf1\x82CZ6\xeeC[\xd8\x00\xbetwG>`\xd6\x00F%\x00\x00\x00\x00)<\x04\x18\x02"
    b"\x9a\x04u" + b"\x00" * 38
)


def socs_parse(raw: bytes) -> tuple[dict, int, str, str]:
    """socs drivers.py:146-187 breakdownReplyData: (data, serial, model, software revision)."""
    data: dict = {}
    serial = model = software = None
    for key, locs in SOCS_KEYLOC.items():
        b = bytes([raw[i] for i in locs])
        if key in ("Operating_State", "Compressor_State", "Pressure_Unit", "Temperature_Unit", "Serial_Number"):
            v = struct.unpack(">H", b)[0]
            if key == "Serial_Number":
                serial = v
            else:
                data[key] = v
        elif key in ("Warning_State", "Alarm_State"):
            data[key] = int(struct.unpack(">f", b)[0])
        elif key == "Model":
            model = f"{raw[locs[0]]}_{raw[locs[1]]}"
        elif key == "Software_Revision":
            software = f"{raw[locs[0]]}.{raw[locs[1]]}"
        else:
            data[key] = struct.unpack(">f", b)[0]
    return data, serial, model, software


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def exchange(addr, query: bytes) -> bytes:
    with socket.create_connection(addr, timeout=2) as s:
        s.sendall(query)
        return s.recv(1024)  # socs reads one recv(1024) (drivers.py:56)


@pytest.fixture
def cpa():
    emu = CpaEmulator()
    emu.listen_tcp("127.0.0.1", 0)
    yield emu
    emu.stop()


def test_socs_exchange_reads_what_the_emulator_holds(cpa):
    raw = exchange(cpa.address, SOCS_QUERY)
    assert len(raw) == len(SOCS_FIXTURE) and raw[:9] == SOCS_FIXTURE[:9]  # same frame as the real panel's
    data, serial, model, software = socs_parse(raw)
    s = cpa.device.state
    assert data["Operating_State"] == 3 and data["Compressor_State"] == 1
    assert data["Warning_State"] == 0 and data["Alarm_State"] == 0
    assert data["Coolant_In_Temp"] == f32(s.coolant_in) and data["Helium_Temp"] == f32(s.helium)
    assert data["High_Pressure"] == f32(s.high) and data["Low_Pressure"] == f32(s.low)
    assert (serial, model, software) == (10556, "4_24", "2.154")  # as the recorded panel
    cpa.control("trip pressure")
    data, *_ = socs_parse(exchange(cpa.address, SOCS_QUERY))
    assert data["Alarm_State"] == -1024 and data["Compressor_State"] == 0 and data["Operating_State"] == 7


def test_our_driver_decodes_socs_recorded_answer_as_socs_does():
    data, serial, model, _ = socs_parse(SOCS_FIXTURE)
    regs = [int.from_bytes(SOCS_FIXTURE[9 + 2 * i : 11 + 2 * i], "big") for i in range(53)]
    r = decode_block(regs, 0.0)
    ocs = {q: v for q, v in zip(SOCS_KEYLOC, r.values.values(), strict=False)}
    for key, v in data.items():
        assert ocs[key] == v, key
    assert r.warnings == () and r.alarms == () and r.state_name == "idling" and not r.running
    assert model_name(regs[31]) == "CPA1114" and serial == regs[30] == 10556


def test_socs_power_bytes_start_and_stop_and_are_echoed(cpa):
    assert exchange(cpa.address, SOCS_POWER["off"]) == SOCS_POWER["off"]  # socs drivers.py:96 reads the echo
    assert not cpa.device.state.running and cpa.device.state.operating_state == 0
    assert exchange(cpa.address, SOCS_POWER["on"]) == SOCS_POWER["on"]
    assert cpa.device.state.running


def test_driver_reads_identity_state_and_power(cpa):
    d = CryomechCPA.tcp(*cpa.address, timeout=1.0)
    ident = d.connect()
    assert (ident.model, ident.serial, ident.firmware) == ("CPA1114", "10556", "2.154")
    r = d.read()
    assert r.running and r.state_name == "running" and r.values["cpahp"] == 308.0
    assert (r.pressure_unit, r.temperature_unit) == ("psi", "F")
    d.power(False)
    assert not d.read().running
    with pytest.raises(ValueError, match="'yes'"):
        d.power("yes")  # type: ignore[arg-type]
    d.close()


def test_water_trip_warns_then_trips_and_the_ledger_says_when(cpa):
    d = CryomechCPA.tcp(*cpa.address, timeout=1.0)
    d.connect()
    assert cpa.control("trip water") == "ok"
    cpa.control("advance 100")  # coolant out 113 F: past the warning, short of the alarm
    r = d.read()
    assert r.running and r.warnings == ("COOLANT_OUT_HIGH",) and r.alarms == ()
    assert not cpa.ledger.trips
    cpa.control("advance 600")
    r = d.read()
    assert not r.running and r.state_name == "error" and r.alarms == ("COOLANT_OUT_HIGH",)
    (trip,) = cpa.ledger.trips
    assert trip["cause"] == "water" and 100 < trip["sim_t"] < 700
    cpa.control("water on")
    d.power(True)
    assert d.read().alarms == () and d.read().running
    d.close()


def test_faults_give_typed_errors_and_the_ledger_counts_only_whole_answers(cpa):
    d = CryomechCPA.tcp(*cpa.address, timeout=0.3)
    d.connect()
    cpa.control("garble 1")
    with pytest.raises(BadReply, match="not minus a sum of bits"):
        d.read()
    d.connect()
    cpa.control("mute on")
    with pytest.raises(InstrumentTimeout, match="no complete answer"):
        d.read()
    cpa.control("clear")
    d.connect()
    cpa.control("drop")
    with pytest.raises(ConnectionLost):
        d.read()
    d.close()
    assert cpa.ledger.faulted == 2 and cpa.ledger.counts()["cpatempwi"] == 3  # the three connects


def test_short_or_impossible_blocks_are_bad_replies():
    with pytest.raises(BadReply, match="10 registers"):
        decode_block([0] * 10, 0.0)
    regs = [int.from_bytes(SOCS_FIXTURE[9 + 2 * i : 11 + 2 * i], "big") for i in range(53)]
    regs[28] = 9  # pressure units 9 (register 29): no panel's
    with pytest.raises(BadReply, match="units 9/"):
        decode_block(regs, 0.0)


@pytest.mark.parametrize("state, run", [(1, 0), (4, 1), (3, 2)])
def test_an_undocumented_state_is_kept_and_flagged_not_refused(state, run):
    """Cryomech's SampleCode (CPA_2xxx_ModbusTCP.py:349-370) shows "Unknown State" and tests
    0 < running: a reading in a state no document names is a reading, flagged UNKNOWN_STATE."""
    regs = [int.from_bytes(SOCS_FIXTURE[9 + 2 * i : 11 + 2 * i], "big") for i in range(53)]
    regs[0], regs[1] = state, run
    r = decode_block(regs, 0.0)
    from appliance.cpa_acquisition import UNKNOWN_STATE, status_of

    assert r.unknown_state == (state not in (0, 2, 3, 5, 6, 7, 8, 9, 15))
    assert r.running == (run > 0) and r.state_name.startswith("unknown state") == r.unknown_state
    assert bool(status_of(r) & UNKNOWN_STATE) == r.unknown_state
    assert CryomechCPA.STATUS_BITS[UNKNOWN_STATE] == "UNKNOWN_STATE"


def test_the_compressor_setting_read_back_delivers_no_reading(cpa):
    """GET and PUT of settings/compressor read register 2 alone: the emulator's ledger of delivered
    block readings (what the store must hold) does not move, and the poller's last reading stays."""
    from appliance.settings import SETTINGS

    setting = SETTINGS["cpa"]["compressor"]
    d = CryomechCPA.tcp(*cpa.address, timeout=1.0)
    d.connect()
    before, last = cpa.ledger.counts(), d.last
    assert setting.read(d, "") == {"running": 1}
    setting.write(d, "", {"running": 0})
    assert setting.read(d, "") == {"running": 0}
    assert cpa.ledger.counts() == before and d.last is last
    d.close()


@pytest.mark.parametrize(
    "line, message",
    [
        ("trip fire", "trip takes water or pressure, not 'fire'"),
        ("mute maybe", "mute takes on or off, not 'maybe'"),
        ("slow -1", "slow takes 0..3600 seconds"),
        ("advance x", "could not convert"),
        ("explode", "unknown command 'explode'"),
    ],
)
def test_bad_control_words_are_refused_by_name(line, message):
    emu = CpaEmulator()
    assert message in emu.control(line)
    assert emu.device.state.running  # nothing changed


CPA_SECTION = '[[instrument]]\nmodel = "cpa"\nname = "ptc1"\ntransport = "{transport}"\nhost = "10.0.0.9"\n'


def test_config_a_cpa_defaults_to_modbus_port_502_and_keeps_a_given_port():
    from appliance import config

    assert config.parse(CPA_SECTION.format(transport="tcp")).instrument[0].port == 502
    assert config.parse(CPA_SECTION.format(transport="tcp") + "port = 1502\n").instrument[0].port == 1502


@pytest.mark.parametrize(
    "extra, transport, message",
    [
        ("", "serial", "a CPA compressor is read over Modbus TCP: use transport 'tcp'"),
        (
            '[[instrument.channel]]\nnumber = 1\nname = "x"\n',
            "tcp",
            "Cryomech CPA compressor .Modbus TCP. has no inputs to list",
        ),
        (
            '[[alarm]]\nkind = "above"\nname = "w"\nfield = "ptc1::cpatempwx"\nthreshold = 1.0\n',
            "tcp",
            "cpatempwx",
        ),
    ],
)
def test_config_refuses_what_a_cpa_cannot_do_by_name(extra, transport, message):
    from appliance import config

    with pytest.raises(config.ConfigError, match=message):
        config.parse(CPA_SECTION.format(transport=transport) + extra)


def test_probe_reports_a_cpa_read_only(cpa):
    from appliance.probe import open_instrument, probe

    running = cpa.device.state.running
    report = probe(open_instrument("cpa", cpa.address[0], cpa.address[1], timeout=1.0))
    text = report.text()
    assert "identity: Cryomech,CPA1114,10556,2.154" in text and "state: running" in text
    assert "cpatempwi" in text and not report.problems
    assert cpa.device.state.running == running  # nothing written
    with pytest.raises(ValueError, match="--host"):
        open_instrument("cpa", None)


@pytest.mark.slow  # waits out a held answer (0.3 s)
def test_slow_answers_time_out_and_are_counted_late_not_delivered(cpa):
    import time

    d = CryomechCPA.tcp(*cpa.address, timeout=0.1)
    d.connect()
    delivered = cpa.ledger.counts()["cpatempwi"]
    cpa.control("slow 0.3")
    with pytest.raises(InstrumentTimeout):
        d.read()
    deadline = time.monotonic() + 5
    while not cpa.ledger.late and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cpa.ledger.late.get("cpatempwi") == 1 and cpa.ledger.counts()["cpatempwi"] == delivered
    cpa.control("slow 0")
    d.connect()
    assert d.read().running
    d.close()


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = s.recv(n - len(buf))
        if not part:
            break
        buf += part
    return buf


def test_pipelined_requests_in_one_segment_are_answered_in_order(cpa):
    """Modbus Messaging on TCP/IP Implementation Guide 4.2: a client may send a request before the
    answer to the one before; pymodbus' own server left the second in its buffer, unanswered."""
    q1, q2 = b"\x00\x01" + SOCS_QUERY[2:], b"\x00\x02" + SOCS_QUERY[2:]
    with socket.create_connection(cpa.address, timeout=2) as s:
        s.sendall(q1 + q2)
        raw = _recv_exactly(s, 2 * len(SOCS_FIXTURE))
    assert [raw[0:2], raw[len(SOCS_FIXTURE) : len(SOCS_FIXTURE) + 2]] == [b"\x00\x01", b"\x00\x02"]
    assert socs_parse(raw[: len(SOCS_FIXTURE)])[0] == socs_parse(raw[len(SOCS_FIXTURE) :])[0]


@pytest.mark.parametrize("unit", [0, 2, 0xFF])
def test_another_unit_id_is_answered_as_the_panel_echoing_the_id(cpa, unit, caplog):
    """UNVERIFIED what a panel does (FIDELITY.md); the emulator answers as unit 1, no traceback."""
    raw = exchange(cpa.address, SOCS_QUERY[:6] + bytes([unit]) + SOCS_QUERY[7:])
    assert len(raw) == len(SOCS_FIXTURE) and raw[6] == unit and raw[7] == 4
    assert socs_parse(raw)[0]["Operating_State"] == 3
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("count", [0, 126])
def test_a_read_of_0_or_126_registers_is_exception_3(cpa, count):
    """Modbus Application Protocol V1.1b3 6.4: quantity 1..125, else exception code 03."""
    raw = exchange(cpa.address, SOCS_QUERY[:10] + count.to_bytes(2, "big"))
    assert raw == SOCS_QUERY[:4] + b"\x00\x03\x01\x84\x03"
