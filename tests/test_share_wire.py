"""The emulator's line framing (firmware_host/wire.py), as the share's (issue 26): an overlong line is
dropped up to its end, and its tail is never carried out as a message of its own. Real TCP on loopback."""

from __future__ import annotations

import socket

from firmware_host.emulator import Emulator


def test_the_emulator_drops_an_overlong_line_to_its_end():
    emu = Emulator.ls372(seed=5)
    emu.listen_tcp("127.0.0.1", 0)
    try:
        with socket.create_connection(emu.tcp.address, timeout=3) as c:
            f = c.makefile("rb")
            c.sendall(b"*ESR?\n")
            f.readline()  # the power-on bit, read and cleared
            c.sendall(b"X" * 5000)  # past the input buffer, no line end yet
            c.sendall(b";*ESR?;SCAN?\n")  # the overlong line's tail: not a message
            c.sendall(b"*IDN?\n")
            assert f.readline().startswith(b"LSCI,MODEL372,")  # the first answer is the next line's
            assert not [h for h in emu.ledger.heard if "SCAN?" in h], emu.ledger.heard
            # and one that comes whole is dropped too
            c.sendall(b"Y" * 5000 + b";SCAN?\n*IDN?\n")
            assert f.readline().startswith(b"LSCI,MODEL372,")
            assert not [h for h in emu.ledger.heard if "SCAN?" in h]
    finally:
        emu.stop()
