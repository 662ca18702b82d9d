"""Modbus TCP transport: pymodbus moves the frames, this module turns its failures into typed errors.

Kept apart from any device's register map (``drivers.cpa`` knows what the registers mean), as
``drivers.transport`` is kept apart from the Lake Shore command sets.
"""

from __future__ import annotations

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from .errors import BadReply, ConnectionLost, InstrumentError, InstrumentTimeout


class ModbusTcpLink:
    """One Modbus TCP connection to one device (unit ``device_id``), opened and closed by its owner.

    No retries inside pymodbus: the poller owns retrying (with backoff), and a retry hidden here
    would turn one missed reply into several times the timeout.
    """

    def __init__(self, host: str, port: int = 502, device_id: int = 1, timeout: float = 2.0) -> None:
        self.host, self.port, self.device_id, self.timeout = host, port, device_id, timeout
        self.description = f"modbus-tcp://{host}:{port}"
        self._client: ModbusTcpClient | None = None

    def open(self) -> None:
        self.close()
        client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout, retries=0)
        if not client.connect():
            client.close()
            raise ConnectionLost(f"{self.description}: connection refused or unreachable")
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _live(self) -> ModbusTcpClient:
        if self._client is None:
            raise ConnectionLost(f"{self.description}: not connected")
        return self._client

    def read_input_registers(self, address: int, count: int) -> list[int]:
        """``count`` input registers from ``address`` (function 4); a short answer is a ``BadReply``."""
        what = f"read input registers {address}..{address + count - 1}"
        try:
            rr = self._live().read_input_registers(address, count=count, device_id=self.device_id)
        except (ConnectionException, OSError) as exc:  # pymodbus lets a reset socket's OSError through
            self.close()
            raise ConnectionLost(f"{self.description}: {what}: {exc}") from exc
        except ModbusIOException as exc:
            self.close()  # a late answer must never be read as the next one: a fresh connection
            raise InstrumentTimeout(
                f"{self.description}: {what}: no complete answer within {self.timeout:g} s"
            ) from exc
        except ModbusException as exc:
            self.close()
            raise BadReply(f"{self.description}: {what}: {exc}", query=what) from exc
        if rr.isError():
            raise InstrumentError(f"{self.description}: {what}: Modbus exception {getattr(rr, 'exception_code', '?')}")
        regs = list(rr.registers)
        if len(regs) != count:
            self.close()
            raise BadReply(f"{self.description}: {what}: {len(regs)} registers, not {count}", query=what)
        return regs

    def write_register(self, address: int, value: int) -> None:
        """Write one holding register (function 6); the device echoes the request."""
        what = f"write holding register {address} = {value:#06x}"
        try:
            rr = self._live().write_register(address, value, device_id=self.device_id)
        except (ConnectionException, OSError) as exc:  # pymodbus lets a reset socket's OSError through
            self.close()
            raise ConnectionLost(f"{self.description}: {what}: {exc}") from exc
        except ModbusIOException as exc:
            self.close()
            raise InstrumentTimeout(f"{self.description}: {what}: no answer within {self.timeout:g} s") from exc
        except ModbusException as exc:
            self.close()
            raise BadReply(f"{self.description}: {what}: {exc}", query=what) from exc
        if rr.isError():
            raise InstrumentError(f"{self.description}: {what}: Modbus exception {getattr(rr, 'exception_code', '?')}")
