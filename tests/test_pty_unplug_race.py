"""An unplug racing the pty's reader: a closed master's number, taken by a socket, is never read.

CI once saw the 240's pty thread die with ENOTCONN during ``unplug``: the loop had read the master's
number, the unplug closed it, a socket got the same number, and select called it readable (a fresh
TCP socket polls as hung up). The thread died and the 240 never came back. Here the interleaving is
forced: select is wrapped so the unplug and the socket happen exactly in that window.
"""

from __future__ import annotations

import contextlib
import os
import select as real_select
import socket
import threading
import time
import tty
import types

from firmware_host import wire
from firmware_host.emulator import Emulator
from tests.conftest import wait_for


def test_a_socket_given_the_closed_masters_number_is_not_read_and_the_port_comes_back(tmp_path, monkeypatch):
    emu = Emulator.ls240(time_scale=50.0, seed=3)
    link = emu.listen_pty(str(tmp_path / "ls240"))
    pty = emu.pty
    errors: list[BaseException] = []
    taken: list[socket.socket] = []
    forced = threading.Event()

    def select_in_the_window(r, w, x, timeout=None):
        if threading.current_thread() is pty.thread and not forced.is_set() and r and r[0] == pty.master:
            forced.set()
            fd = r[0]
            pty.unplug(0.3)  # closes fd
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            taken.append(s)
            os.dup2(s.fileno(), fd)  # fd's number is now a fresh TCP socket's (it polls as hung up)
        return real_select.select(r, w, x, timeout)

    # only the wire module's name is replaced: every other thread's select is the real one
    monkeypatch.setattr(wire, "select", types.SimpleNamespace(select=select_in_the_window))
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        wait_for(forced.is_set, 5, what="the reader's select reached")
        time.sleep(0.5)  # the loop runs on in the window; the replug comes at 0.3 s
        assert pty.thread.is_alive(), errors
        assert not errors, errors
        # the port came back as a new pty, and a client still gets answers
        wait_for(lambda: os.path.islink(link), 5, what="the port replugged")
        monkeypatch.undo()
        import serial

        with serial.Serial(link, 115200, timeout=2) as port:
            port.write(b"*IDN?\n")
            assert b"LSA24AZ" in port.readline()
    finally:
        threading.excepthook = hook
        for s in taken:
            s.close()
        pty.stop()  # closes fd's number too (the master it last had)


def test_a_client_that_never_reads_costs_its_replies_not_the_devices_lock(tmp_path):
    """Replies are written under the device's lock (the unplug race above): a pty client that asks and never
    reads must not hold that lock, shared with the TCP port and with unplug, once its buffer is full."""
    emu = Emulator.ls240(time_scale=50.0, seed=3)
    link = emu.listen_pty(str(tmp_path / "ls240"))
    host, port = emu.listen_tcp("127.0.0.1", 0)
    fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    stop = threading.Event()
    asked = [0]

    def ask_and_never_read() -> None:
        while not stop.is_set():
            try:
                os.write(fd, b"*IDN?\n")
            except OSError:
                return
            asked[0] += 1

    asker = threading.Thread(target=ask_and_never_read, daemon=True)
    asker.start()
    try:
        # the replies fill the pty (some KiB) within a second at this rate; then the TCP client asks
        # (~100 replies fill a pty's 4 KiB; before the fix the writes then stopped near 800 questions)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: asked[0] > 3000, 8)
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"*IDN?\n")
            assert b"LSA24AZ" in s.recv(100)
        unplugged = threading.Thread(target=lambda: emu.pty.unplug(0.1), daemon=True)
        unplugged.start()
        unplugged.join(5)
        assert not unplugged.is_alive(), "unplug blocked on the device's lock"
    finally:
        stop.set()
        os.close(fd)
        emu.tcp.stop()
        emu.pty.stop()
