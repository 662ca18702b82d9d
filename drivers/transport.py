"""Byte transports: TCP socket, pyserial, pyvisa. They move lines; they know no commands.

Every transport offers the same small interface so an instrument model can be
handed any of them. Replies are framed by CR LF (LF alone is accepted too): the
TCP transport keeps a buffer so a reply split over several segments, or two
replies merged in one segment, are framed correctly.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import termios
import time
from typing import Any, Protocol, TypedDict

from .errors import ConnectionLost, InstrumentTimeout

log = logging.getLogger(__name__)

MAX_LINE = 4096


class Transport(Protocol):
    """What an instrument model needs from a link."""

    description: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def read_line(self, timeout: float) -> bytes: ...

    def flush_input(self) -> None: ...

    def abandon(self) -> None:
        """An exchange timed out: drop what can be dropped at once (TCP: the connection)."""

    def reset(self, quiet: float) -> None:
        """Before the next exchange after a timeout: afterwards no byte sent earlier is read."""


def _take_line(buf: bytearray) -> bytes | None:
    idx = buf.find(b"\n")
    if idx < 0:
        return None
    line = bytes(buf[:idx])
    del buf[: idx + 1]
    return line[:-1] if line.endswith(b"\r") else line


class TcpTransport:
    """A TCP socket (the 372's port 7777), with line framing over arbitrary segments."""

    open_discards_input = True  # open() is a new connection: nothing sent on the old one can arrive

    def __init__(self, host: str, port: int = 7777, connect_timeout: float = 3.0) -> None:
        self.host, self.port, self.connect_timeout = host, port, connect_timeout
        self.description = f"tcp://{host}:{port}"
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def open(self) -> None:
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError:
            raise InstrumentTimeout(f"{self.description}: connect timed out") from None
        except OSError as exc:
            raise ConnectionLost(f"{self.description}: cannot connect: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._sock = sock
        self._buf.clear()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionLost(f"{self.description}: not connected")
        return self._sock

    def write(self, data: bytes) -> None:
        sock = self._require()
        try:
            sock.settimeout(self.connect_timeout)
            sock.sendall(data)
        except TimeoutError:
            self.close()
            raise InstrumentTimeout(f"{self.description}: send timed out") from None
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"{self.description}: send failed: {exc}") from None

    def read_line(self, timeout: float) -> bytes:
        sock = self._require()
        deadline = time.monotonic() + timeout
        while True:
            line = _take_line(self._buf)
            if line is not None:
                return line
            if len(self._buf) > MAX_LINE:
                junk = bytes(self._buf[:64])
                self._buf.clear()
                raise ConnectionLost(f"{self.description}: no line end in {MAX_LINE} bytes ({junk!r}...)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                partial = bytes(self._buf)
                raise InstrumentTimeout(
                    f"{self.description}: no reply within {timeout:.2f} s"
                    + (f" (partial {partial!r})" if partial else "")
                )
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                self.close()
                raise ConnectionLost(f"{self.description}: receive failed: {exc}") from None
            if not chunk:
                self.close()
                raise ConnectionLost(f"{self.description}: instrument closed the connection")
            self._buf.extend(chunk)

    def abandon(self) -> None:
        # A late reply goes to a closed socket: the instrument only answers on the connection the
        # query came on, so a new one can never carry it.
        self.close()

    def reset(self, quiet: float) -> None:
        self.open()

    def flush_input(self) -> None:
        sock = self._require()
        self._buf.clear()
        sock.setblocking(False)
        try:
            while True:
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    break
                except OSError as exc:
                    self.close()
                    raise ConnectionLost(f"{self.description}: connection reset: {exc}") from None
                if not chunk:
                    self.close()
                    raise ConnectionLost(f"{self.description}: instrument closed the connection")
        finally:
            if self._sock is not None:
                self._sock.setblocking(True)


class SerialFraming(TypedDict):
    """A model's serial framing, given to ``SerialTransport`` and ``visa_serial_settings`` as ``**framing``."""

    baudrate: int
    bytesize: int
    parity: str
    stopbits: int


class SerialTransport:
    """A serial port through pyserial (USB virtual COM port, or a pty in tests)."""

    def __init__(
        self,
        device: str,
        baudrate: int,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        self.device = device
        self.settings = dict(baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits)
        self.description = f"serial://{device}"
        self.framing = f"{baudrate} {bytesize}{parity}{stopbits}"
        self._port = None
        self._buf = bytearray()

    def open(self) -> None:
        import serial

        if self._port is not None and self._port.is_open:
            # Keep a healthy port: reopening a USB serial port discards nothing that a flush
            # does not, and (on Linux ptys) a second 7O1 open of the same tty fails with EINVAL.
            # Any I/O error closes the port, so a vanished device is reopened from scratch.
            self._buf.clear()
            return
        try:
            self._port = serial.Serial(
                self.device,
                timeout=0.05,
                write_timeout=2.0,
                rtscts=False,
                xonxoff=False,
                exclusive=True,
                **self.settings,
            )
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            raise ConnectionLost(f"{self.description}: cannot open: {exc}") from None
        self._buf.clear()

    def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):  # closing a vanished device may itself fail
                self._port.close()
            self._port = None

    def _require(self):
        if self._port is None:
            raise ConnectionLost(f"{self.description}: not open")
        return self._port

    def write(self, data: bytes) -> None:
        import serial

        port = self._require()
        try:
            port.write(data)
            port.flush()
        except serial.SerialTimeoutException:
            self.close()
            raise InstrumentTimeout(f"{self.description}: write timed out") from None
        except (serial.SerialException, OSError, termios.error) as exc:
            self.close()
            raise ConnectionLost(f"{self.description}: write failed (unplugged?): {exc}") from None

    def read_line(self, timeout: float) -> bytes:
        import serial

        port = self._require()
        deadline = time.monotonic() + timeout
        while True:
            line = _take_line(self._buf)
            if line is not None:
                return line
            if len(self._buf) > MAX_LINE:
                self._buf.clear()
                raise ConnectionLost(f"{self.description}: no line end in {MAX_LINE} bytes")
            if time.monotonic() >= deadline:
                partial = bytes(self._buf)
                hint = ""
                if any(b & 0x80 for b in partial):
                    hint = f"; bytes with bit 7 set: is the port framing right ({self.framing})?"
                raise InstrumentTimeout(
                    f"{self.description}: no reply within {timeout:.2f} s"
                    + (f" (partial {partial!r}{hint})" if partial else "")
                )
            try:
                chunk = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, termios.error) as exc:
                self.close()
                raise ConnectionLost(f"{self.description}: read failed (unplugged?): {exc}") from None
            self._buf.extend(chunk)

    def abandon(self) -> None:
        pass  # the port stays: there is no other connection to move to

    def reset(self, quiet: float) -> None:
        """Wait until the line has been silent for ``quiet`` seconds (at most 4 x ``quiet``), then flush.

        A serial line has no second connection: a late reply is told apart only by time. The
        instrument answers within its timeout or not at all (unless a fault holds it longer).
        """
        import serial

        port = self._require()
        self._buf.clear()
        end = time.monotonic() + 4 * quiet
        last = time.monotonic()
        try:
            while time.monotonic() - last < quiet and time.monotonic() < end:
                chunk = port.read(max(1, port.in_waiting))
                if chunk:
                    last = time.monotonic()
        except (serial.SerialException, OSError, termios.error) as exc:
            self.close()
            raise ConnectionLost(f"{self.description}: read failed (unplugged?): {exc}") from None
        self.flush_input()

    def flush_input(self) -> None:
        import serial

        port = self._require()
        self._buf.clear()
        try:
            port.reset_input_buffer()
            while port.in_waiting:
                port.read(port.in_waiting)
        except (serial.SerialException, OSError, termios.error) as exc:
            self.close()
            raise ConnectionLost(f"{self.description}: flush failed: {exc}") from None


def visa_serial_settings(baudrate: int, bytesize: int, parity: str, stopbits: int) -> dict:
    """pyvisa keyword arguments for an ``ASRL`` resource: the instrument's framing, no flow control.

    pyvisa's defaults are 9600 8N1, and ``data_bits=7`` alone leaves parity off (7N1), which a
    372 (7O1) garbles: every setting is given explicitly.
    """
    from pyvisa import constants

    parities = {"N": constants.Parity.none, "O": constants.Parity.odd, "E": constants.Parity.even}
    stops = {1: constants.StopBits.one, 2: constants.StopBits.two}
    return dict(
        baud_rate=baudrate,
        data_bits=bytesize,
        parity=parities[parity],
        stop_bits=stops[stopbits],
        flow_control=constants.ControlFlow.none,
    )


def _asrl_device(resource: str) -> str:
    """``ASRL/dev/ttyUSB0::INSTR`` -> ``/dev/ttyUSB0`` (the board part of the resource name)."""
    return resource[4:].split("::")[0]


def _is_pty(path: str) -> bool:
    """True for a Unix98 pseudo-terminal slave (char major 136-143), following symlinks."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return 136 <= os.major(st.st_rdev) <= 143


class VisaTransport:
    """Any VISA resource through pyvisa (``TCPIP::host::7777::SOCKET``, ``ASRL/dev/ttyUSB0::INSTR``, GPIB)."""

    def __init__(self, resource: str, backend: str = "@py", serial_settings: dict | None = None) -> None:
        self.resource_name = resource
        self.backend = backend
        self.serial_settings = serial_settings or {}
        self.description = f"visa://{resource}"
        self._on_pty = False
        self._rm: Any = None  # pyvisa's ResourceManager, imported only when a VISA link opens
        self._res: Any = None

    def open(self) -> None:
        import pyvisa

        self.close()
        name = self.resource_name
        self._on_pty = name.upper().startswith("ASRL") and _is_pty(_asrl_device(name))
        try:
            self._rm = pyvisa.ResourceManager(self.backend)
            self._res = self._rm.open_resource(
                self.resource_name, read_termination="\n", write_termination="", open_timeout=3000
            )
            if self.resource_name.upper().startswith("ASRL"):
                self._apply_serial_settings(self._res)
        except Exception as exc:  # pyvisa raises many types: VisaIOError, ValueError, OSError
            self.close()
            raise ConnectionLost(f"{self.description}: cannot open: {exc}") from None

    def _apply_serial_settings(self, res: Any) -> None:  # a pyvisa SerialInstrument
        """Set the framing one attribute at a time, then check pyvisa reports each as asked.

        A pseudo-terminal (the emulators' serial ports) always stays CS8 without PARENB and
        keeps only PARODD, and Linux answers EINVAL to a change that alters nothing it can
        store (``data_bits=7`` on a pty). Only on a pty is that EINVAL expected and passed
        over; a real USB serial port that refuses a setting is an error.
        """
        for name in ("baud_rate", "data_bits", "parity", "stop_bits", "flow_control"):
            if name not in self.serial_settings or getattr(res, name) == self.serial_settings[name]:
                continue  # set only what differs: each set reconfigures the whole port
            self._set(res, name, self.serial_settings[name])
        for name, want in self.serial_settings.items():
            if getattr(res, name) != want:
                raise ConnectionLost(f"{self.description}: {name} is {getattr(res, name)!r}, asked {want!r}")

    def _set(self, res: Any, name: str, value: object) -> None:
        """Set one resource attribute; on a pty, pass over the EINVAL explained above.

        pyserial stores the new value before it reconfigures the port, so the setting (a
        timeout, say) still takes effect in pyserial's own reads and writes.
        """
        try:
            setattr(res, name, value)
        except termios.error as exc:
            if not (self._on_pty and exc.args and exc.args[0] == errno.EINVAL):
                raise

    def close(self) -> None:
        try:
            if self._res is not None:
                self._res.close()
        except Exception:
            pass
        try:
            if self._rm is not None:
                self._rm.close()
        except Exception:
            pass
        self._res = None
        self._rm = None

    def _require(self):
        if self._res is None:
            raise ConnectionLost(f"{self.description}: not open")
        return self._res

    def write(self, data: bytes) -> None:
        res = self._require()
        try:
            res.write_raw(data)
        except Exception as exc:
            self.close()
            raise ConnectionLost(f"{self.description}: write failed: {exc}") from None

    def read_line(self, timeout: float) -> bytes:
        import pyvisa

        res = self._require()
        try:
            self._set(res, "timeout", max(1, int(timeout * 1000)))
            raw = res.read_raw()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise InstrumentTimeout(f"{self.description}: no reply within {timeout:.2f} s") from None
            self.close()
            raise ConnectionLost(f"{self.description}: read failed: {exc}") from None
        except Exception as exc:
            self.close()
            raise ConnectionLost(f"{self.description}: read failed: {exc}") from None
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw

    def _is_socket(self) -> bool:
        return self.resource_name.upper().startswith("TCPIP") and self.resource_name.upper().endswith("SOCKET")

    def abandon(self) -> None:
        if self._is_socket():
            self.close()

    def reset(self, quiet: float) -> None:
        """A socket resource: a new connection. Any other: drain until ``quiet`` seconds of silence."""
        import pyvisa

        if self._is_socket() or self._res is None:
            self.open()
            return
        res = self._require()
        end = time.monotonic() + 4 * quiet
        try:
            self._set(res, "timeout", max(1, int(quiet * 1000)))
            while time.monotonic() < end:
                res.read_raw()
        except pyvisa.errors.VisaIOError:
            pass
        except Exception as exc:
            self.close()
            raise ConnectionLost(f"{self.description}: reset failed: {exc}") from None
        self.flush_input()

    def flush_input(self) -> None:
        import pyvisa

        res = self._require()
        old = res.timeout
        try:
            self._set(res, "timeout", 50)
            while True:
                res.read_raw()
        except pyvisa.errors.VisaIOError:
            pass
        except Exception as exc:
            self.close()
            raise ConnectionLost(f"{self.description}: flush failed: {exc}") from None
        finally:
            if self._res is not None:
                with contextlib.suppress(Exception):
                    self._set(res, "timeout", old)
