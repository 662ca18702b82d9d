"""Shared fixtures: real emulators on real loopback sockets and real ptys."""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from firmware_host.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def emu372():
    emu = Emulator.ls372(seed=1, time_scale=1.0)
    emu.listen_tcp("127.0.0.1", 0)
    yield emu
    emu.stop()


@pytest.fixture
def emu372_pty(tmp_path):
    emu = Emulator.ls372(seed=2)
    emu.listen_tcp("127.0.0.1", 0)
    emu.listen_pty(str(tmp_path / "ls372"))
    yield emu
    emu.stop()


@pytest.fixture
def emu240(tmp_path):
    emu = Emulator.ls240(channels=2, seed=3)
    emu.listen_pty(str(tmp_path / "ls240"))
    yield emu
    emu.stop()


@pytest.fixture
def emu240_8p(tmp_path):
    emu = Emulator.ls240(channels=8, seed=4, serial="LSA24BB")
    emu.listen_pty(str(tmp_path / "ls240-8"))
    yield emu
    emu.stop()


def run_with_timeout(fn, timeout: float = 10.0):
    """Outer timeout for calls into code that may hang (the official lakeshore driver can)."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"call did not return within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")
