"""Wire interfaces: a TCP listener (372's port 7777) and a serial pty, with fault injection.

Each connection is a thread that frames lines and hands them to the device's
dispatcher. Faults act here, on the bytes, never inside the device model.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import select
import socket
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from .ledger import Ledger
from .protocol import Dispatcher

log = logging.getLogger("firmware_host")


@dataclass
class Faults:
    """Fault switches shared by all links of one emulated instrument."""

    mute: bool = False
    delay: float = 0.0  # seconds before each reply
    delay_only: str | None = None  # delay only replies to lines naming this mnemonic (e.g. "SETP?")
    garbage: int = 0  # the next N replies are replaced with garbage bytes
    garbage_only: str | None = None  # only replies to lines naming this mnemonic (e.g. "RDGR?")
    partial: int = 0  # the next N replies are cut in half with no terminator
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.mute, self.delay, self.garbage, self.partial = False, 0.0, 0, 0
            self.delay_only = self.garbage_only = None

    def delay_for(self, line: str) -> float:
        """Seconds to hold the reply to ``line``."""
        with self.lock:
            if self.delay_only is not None and self.delay_only not in line.upper():
                return 0.0
            return self.delay

    def shape(self, reply: bytes, line: str = "") -> bytes | None:
        """Apply the active faults to one outgoing reply (terminator included) to ``line``."""
        with self.lock:
            if self.mute:
                return None
            if self.garbage and (self.garbage_only is None or self.garbage_only in line.upper()):
                self.garbage -= 1
                n = self.rng.randint(3, 12)
                junk = bytes(self.rng.choice(b"\x00\xff#@!?~\x1b\x7f%&") for _ in range(n))
                return junk + b"\r\n"
            if self.partial:
                self.partial -= 1
                return reply[: max(1, (len(reply) - 2) // 2)]
        return reply


def odd_parity_8n1_view(data: bytes) -> bytes:
    """What an 8N1 reader sees of 7O1 bytes: the parity bit lands in bit 7."""
    out = bytearray()
    for b in data:
        b &= 0x7F
        ones = bin(b).count("1")
        out.append(b | (0x80 if ones % 2 == 0 else 0))
    return bytes(out)


class LineSession:
    """Frames incoming bytes into lines and answers through the dispatcher."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        lock: threading.RLock,
        faults: Faults,
        send: Callable[[bytes], bool],
        ledger: Ledger | None = None,
    ) -> None:
        self.dispatcher, self.lock, self.faults, self.send = dispatcher, lock, faults, send
        self.ledger = ledger
        self.buf = bytearray()
        self._overflowed = False  # inside a line longer than the input buffer: dropped up to its end

    def feed(self, data: bytes) -> None:
        arrived = getattr(self.dispatcher, "arrived", None)
        if arrived is not None:  # a dispatcher that paces by when a message came (the 370's)
            arrived(time.monotonic())
        self.buf.extend(data)
        cr_ends = getattr(self.dispatcher, "cr_ends_line", False)
        while True:
            idx = self.buf.find(b"\n")
            if cr_ends:  # CR, LF or CR LF: the CR of a CR LF ends the line, the LF is then an empty one
                cr = self.buf.find(b"\r")
                idx = cr if cr >= 0 and (idx < 0 or cr < idx) else idx
            if idx < 0:
                if len(self.buf) > 4096 or self._overflowed:
                    # the real input buffer is finite: the junk is dropped, and so is the rest of that
                    # line as it comes, up to its end (its tail is not a message of its own)
                    self.buf.clear()
                    self._overflowed = True
                return
            line = bytes(self.buf[:idx]).rstrip(b"\r")
            del self.buf[: idx + 1]
            if self._overflowed or len(line) > 4096:
                self._overflowed = False  # the overlong line's end (or one that came whole): dropped
                continue
            text = line.decode("ascii", errors="replace")
            if self.ledger is not None and text.strip():
                self.ledger.hear(text)
            with self.lock:
                reply = self.dispatcher.handle_line(text)
            if reply is None:
                continue
            whole = reply.encode("ascii", errors="replace") + b"\r\n"
            out = self.faults.shape(whole, text)
            if out is None:
                if self.ledger is not None:
                    self.ledger.note(text, reply, delivered=False, late=False)
                continue
            delay = self.faults.delay_for(text)
            late = delay > 0
            if late:
                time.sleep(delay)
            sent = self.send(out)  # False when the link is gone or the client reads another framing
            if self.ledger is not None:
                self.ledger.note(text, reply, delivered=sent and out == whole, late=late)


class TcpInterface:
    """TCP server; at most ``max_clients`` at once, further connections are refused (reset)."""

    session_class: Callable[..., LineSession] = LineSession  # how bytes become exchanges (Pfeiffer: ENQ)

    def __init__(
        self,
        host: str,
        port: int,
        make_dispatcher: Callable[[], Dispatcher],
        lock: threading.RLock,
        faults: Faults,
        max_clients: int = 2,
        ledger: Ledger | None = None,
    ) -> None:
        self.ledger = ledger
        self.make_dispatcher, self.lock, self.faults, self.max_clients = make_dispatcher, lock, faults, max_clients
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.address = self.sock.getsockname()
        self.clients: set[socket.socket] = set()
        self.clients_lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept_loop, name="tcp-accept", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.2)
                if not r:
                    continue
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self.clients_lock:
                full = len(self.clients) >= self.max_clients
                if not full:
                    self.clients.add(conn)
            if full:
                log.info("refusing third connection from %s", peer)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), name=f"tcp-{peer[1]}", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        def send(data: bytes) -> bool:
            try:
                conn.sendall(data)
                return True
            except OSError:
                return False

        session = self.session_class(self.make_dispatcher(), self.lock, self.faults, send, self.ledger)
        try:
            while not self._stop.is_set():
                try:
                    r, _, _ = select.select([conn], [], [], 0.2)
                except (OSError, ValueError):
                    break
                if not r:
                    continue
                try:
                    data = conn.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                session.feed(data)
        finally:
            with self.clients_lock:
                self.clients.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def drop_all(self) -> None:
        """Close every client connection (as a network drop or reboot does)."""
        with self.clients_lock:
            clients = list(self.clients)
        for c in clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
        self.drop_all()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.thread.join(timeout=2)


class PtyInterface:
    """A serial port as a pty, reachable through a symlink; it can vanish like an unplugged cable.

    ``framing`` is the instrument's serial framing. A pty carries bytes, not
    bits, so we read the client's termios: if a 7O1 instrument is opened as
    8N1, its replies arrive with the parity bit in bit 7, as on the real link.
    """

    session_class: Callable[..., LineSession] = LineSession  # how bytes become exchanges (Pfeiffer: ENQ)

    def __init__(
        self,
        link: str,
        make_dispatcher: Callable[[], Dispatcher],
        lock: threading.RLock,
        faults: Faults,
        framing: str = "8N1",
        ledger: Ledger | None = None,
    ) -> None:
        self.ledger = ledger
        self.link = os.path.abspath(link)
        self.make_dispatcher, self.lock, self.faults, self.framing = make_dispatcher, lock, faults, framing
        self._stop = threading.Event()
        self._plugged = threading.Event()
        self.master = -1
        self._base_attrs: list = []
        self._client_gone = True  # no client has the port open
        self.thread = threading.Thread(target=self._loop, name=f"pty-{os.path.basename(link)}", daemon=True)
        self._plug()

    def _plug(self) -> None:
        master, slave = os.openpty()
        # non-blocking: a reply is written under the device's lock, and a client that never reads must
        # cost that one reply (as a UART overrun does), never a lock every interface of the device shares
        os.set_blocking(master, False)
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~(termios.ECHO | termios.ICANON)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        name = os.ttyname(slave)
        # The emulator does not hold the slave open: a client's close must be seen (the master then
        # reads EIO), so that the port can be given back its power-on settings for the next open. A
        # Linux pty keeps a closed client's termios (CS8 forced, PARODD kept), and pyserial's next
        # 7O1 open of it then fails with EINVAL: a real USB serial device opens again and again.
        os.close(slave)
        self.master, self._base_attrs, self._client_gone = master, attrs, True
        tmp = f"{self.link}.tmp{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(name, tmp)
        os.replace(tmp, self.link)
        self._session = self.session_class(self.make_dispatcher(), self.lock, self.faults, self._send, self.ledger)
        self._plugged.set()

    def _keep_reopenable(self) -> None:
        """Give the port back its output flags while a client has it open, so its close leaves it openable.

        A Linux pty left with pyserial's 7O1 settings (oflag 0 with CS8|PARODD, lflag 0, 57600) refuses
        the next open's tcsetattr with EINVAL; with the power-on oflag (ONLCR without OPOST: no output
        processing either way, so the client sees no difference) the next open works. This is done as
        soon as the client writes, because a client may reopen faster than the close is seen.
        """
        with contextlib.suppress(OSError, termios.error):
            attrs = termios.tcgetattr(self.master)
            if attrs[1] != self._base_attrs[1]:
                attrs[1] = self._base_attrs[1]
                termios.tcsetattr(self.master, termios.TCSANOW, attrs)

    def _client_closed(self) -> None:
        """No client has the port open: put back its power-on settings (once per close)."""
        if self._client_gone:
            return
        self._client_gone = True
        # termios calls on a Linux pty master act on its slave (tty_mode_ioctl's real_tty)
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(self.master, termios.TCSANOW, self._base_attrs)

    def _unplug(self) -> None:
        self._plugged.clear()
        try:
            if os.path.islink(self.link):
                os.unlink(self.link)
        except OSError:
            pass
        if self.master >= 0:
            with contextlib.suppress(OSError):
                os.close(self.master)
        self.master = -1

    def start(self) -> None:
        self.thread.start()

    def _client_framing_ok(self) -> bool:
        if self.framing != "7O1":
            return True
        try:
            cflag = termios.tcgetattr(self.master)[2]  # the slave's termios, read through the master
        except termios.error:
            return True
        # Linux ptys force CS8 and clear PARENB whatever the client asks, but keep PARODD:
        # a client that asked for odd parity has it set, one opened as 8N1 has not.
        return bool(cflag & termios.PARODD)

    def _send(self, data: bytes) -> bool:
        """Write a reply; True only when the client got it as sent (right framing, link up)."""
        intact = True
        if self.framing == "7O1" and not self._client_framing_ok():
            data, intact = odd_parity_8n1_view(data), False
        # Under the lock: an unplug closes the master under it, and a closed descriptor's number is
        # soon another socket's, which must never receive this reply.
        with self.lock:
            fd = self.master
            if fd < 0:
                return False
            try:
                if os.write(fd, data) < len(data):
                    return False  # the client's buffer is full: the rest of the reply is lost
            except OSError:  # BlockingIOError included: nothing of it fitted
                return False
        return intact

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._plugged.wait(0.2):
                continue
            fd = self.master
            try:
                r, _, _ = select.select([fd], [], [], 0.2)
                if not r:
                    self._client_gone = False  # a master without a client reads EIO at once: one is there
                    continue
                # An unplug may have closed this master since it was read, and its number may now be
                # another socket's (reading that gave ENOTCONN and killed this thread, in CI): read only
                # the master still plugged, under the lock its close takes (non-blocking: never waits).
                with self.lock:
                    if fd != self.master:
                        continue
                    data = os.read(fd, 4096)
            except BlockingIOError:  # readable, then nothing to read (a replug reused the number)
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # no client has the port open (never yet, or it closed)
                    with self.lock:
                        if fd == self.master:
                            self._client_closed()
                    time.sleep(0.02)
                    continue
                if exc.errno == errno.EBADF:
                    time.sleep(0.05)
                    continue
                raise
            except ValueError:
                continue
            self._client_gone = False
            self._keep_reopenable()
            if self.framing == "7O1":
                data = bytes(b & 0x7F for b in data)
            self._session.feed(data)

    def unplug(self, seconds: float) -> None:
        """Vanish for ``seconds`` (the symlink and the pty both go), then come back as a new pty."""
        with self.lock:
            self._unplug()

        def replug() -> None:
            if not self._stop.wait(seconds):
                with self.lock:
                    self._plug()

        threading.Thread(target=replug, name="replug", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._unplug()
        self.thread.join(timeout=2)
