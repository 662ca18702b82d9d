"""socs' Lakeshore 336 driver and agent, byte for byte, against the emulated 336 (firmware_host/FIDELITY.md).

socs is not imported: its exchange is written out here from simonsobs/socs at 24a4adeb,
``socs/Lakeshore/Lakeshore336.py`` and ``socs/agents/lakeshore336/agent.py``, and every reply is
parsed the way socs parses it (its key tables copied below, lines 12-93). socs sends ``<msg>\\r\\n``
over TCP port 7777 and reads one ``recv`` after 61 ms (``LS336.msg``, lines 143-185).
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from firmware_host.emulator import Emulator

from .test_fidelity import _ask_tcp

# socs Lakeshore336.py lines 12-93: the tables its parsers index with the raw reply fields
sensor_key = {"0", "1", "2", "3", "4", "5"}
units_key = {"1", "2", "3"}
tempco_key = {"1", "2"}
format_key = {"1", "2", "3", "4"}
output_modes_key = {"0", "1", "2", "3", "4", "5"}
channel_key = {"0": "none", "1": "A", "2": "B", "3": "C", "4": "D", "5": "D2", "6": "D3", "7": "D4", "8": "D5"}
heater_display_key = {"1", "2"}
max_current_key = {"0": "User", "1": 0.707, "2": 1.0, "3": 1.141, "4": 2.0}
heater_range_key = {"0": "off", "1": "low", "2": "medium", "3": "high"}


def connect_sequence(inputs: list[str]) -> list[bytes]:
    """``LS336.__init__`` (lines 108-137): ``*IDN?``, ``KRDG? 0``; ``Channel.__init__`` per input (296-305):
    ``INTYPE?``, ``INCRV?``, ``INNAME?``, ``TLIMIT?``; ``Heater.__init__`` for 1, 2 (912-923): ``OUTMODE?``,
    ``HTRSET?``, ``RANGE?``, ``SETP?``."""
    seq = [b"*IDN?", b"KRDG? 0"]
    for inp in inputs:
        seq += [f"{q} {inp}".encode() for q in ("INTYPE?", "INCRV?", "INNAME?", "TLIMIT?")]
    for out in ("1", "2"):
        seq += [f"{q} {out}".encode() for q in ("OUTMODE?", "HTRSET?", "RANGE?", "SETP?")]
    return seq


@pytest.fixture(params=[False, True], ids=["4 inputs", "3062 scanner"])
def emu(request):
    e = Emulator.ls336(seed=21, scanner=request.param)
    e.listen_tcp("127.0.0.1", 0)
    yield e
    e.stop()


def test_socs_336_connect_and_acquisition(emu):
    with socket.create_connection(emu.tcp.address, timeout=2) as s:
        temps = _ask_tcp(s, b"KRDG? 0").decode()
        # socs line 226: np.array(np.char.split(resp, sep=',').item()).astype(float); 4 or 8 decide the inputs
        n = len(np.array(np.char.split(temps, sep=",").item()).astype(float))
        assert n == (8 if emu.device.inputs[4:] else 4)
        inputs = ["A", "B", "C", "D", "D2", "D3", "D4", "D5"][:n]
        replies = {q: _ask_tcp(s, q).decode("ascii") for q in connect_sequence(inputs)}
        assert replies[b"*IDN?"].startswith("LSCI,MODEL336,")
        for inp in inputs:
            t = replies[f"INTYPE? {inp}".encode()].split(",")  # lines 317-323
            assert t[0] in sensor_key and t[4] in units_key
            int(t[1]), int(t[2]), int(t[3])
            int(replies[f"INCRV? {inp}".encode()].strip())  # line 415
            assert replies[f"INNAME? {inp}".encode()].strip()  # line 394
            float(replies[f"TLIMIT? {inp}".encode()])  # line 430
        for out in ("1", "2"):
            mode = replies[f"OUTMODE? {out}".encode()].split(",")  # lines 934-939
            assert mode[0] in output_modes_key and mode[1] in channel_key and len(mode) == 3
            htr = replies[f"HTRSET? {out}".encode()].split(",")  # lines 1069-1074
            int(htr[0]), float(htr[2].strip("E+"))
            assert htr[1] in max_current_key and htr[3] in heater_display_key
            assert replies[f"RANGE? {out}".encode()] in heater_range_key  # line 1233: the bare digit
            float(replies[f"SETP? {out}".encode()])  # line 1255
        # the agent's acquisition loop (agent.py lines 213-249): KRDG? 0, SRDG? 0, then per heater
        # HTR? (get_heater_percent), RANGE?, HTRSET? (get_max_current), SETP?
        for _ in range(2):
            k = np.array(np.char.split(_ask_tcp(s, b"KRDG? 0").decode(), sep=",").item()).astype(float)
            v = np.array(np.char.split(_ask_tcp(s, b"SRDG? 0").decode(), sep=",").item()).astype(float)
            assert len(k) == len(v) == n and k[1] == pytest.approx(emu.device.reading("B").kelvin, rel=1e-3)
            for out in (b"1", b"2"):
                float(_ask_tcp(s, b"HTR? " + out))
                assert _ask_tcp(s, b"RANGE? " + out).decode() in heater_range_key
                assert _ask_tcp(s, b"HTRSET? " + out).decode().split(",")[1] in max_current_key
                float(_ask_tcp(s, b"SETP? " + out))
        assert _ask_tcp(s, b"*ESR?") == b"128"  # only the power-on bit: socs sent nothing the 336 refused


def test_socs_336_setters_and_curve_header(emu):
    """socs' setters as it writes them (no quotes, no ``*ESR?``) and ``Curve.get_header`` (line 460)."""
    with socket.create_connection(emu.tcp.address, timeout=2) as s:
        for line in (
            b"RANGE 2,1",  # set_heater_range: heater_range_lock['low'] (line 1249)
            b"SETP 2,4.2",  # set_setpoint (line 1267)
            b"OUTMODE 2,1,2,0",  # _set_output_mode: mode, input, powerup (line 966)
            b"PID 2,40.0,20.0,0",  # set_pid (line 1311)
            b"INNAME D,Pump",  # set_input_name, unquoted (line 409)
            b"MOUT 2,5.0",  # set_manual_out (line 1220)
        ):
            s.sendall(line + b"\r\n")
        assert _ask_tcp(s, b"*ESR?") == b"128"
        o = emu.device.outputs[2]
        assert (o.range, o.setp, o.mode, o.input, o.p, o.mout) == (1, 4.2, 1, 2, 40.0, 5.0)
        assert emu.device.ins["D"].name == "Pump"
        for curve in (b"1", b"8", b"21"):
            h = _ask_tcp(s, b"CRVHDR? " + curve).decode().split(",")  # lines 460-475
            assert h[2] in format_key and h[4] in tempco_key
            float(h[3])
