"""The appliance's one TOML file, validated with pydantic; every error names key path and line.

``load(path)`` is exactly what ``kelvinpi run`` and ``kelvinpi check-config`` do:
parse with tomllib, validate with pydantic (all errors, not only the first),
run the cross-checks a schema cannot express, and map each error back to the
line of the file where the user has to look.
"""
from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ConfigError(Exception):
    """One or more problems in a config file; ``problems`` is a list of (line, path, message)."""

    def __init__(self, source: str, problems: list[tuple[int | None, str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for line, path, msg in self.problems:
            where = f"{self.source}:{line}" if line else self.source
            lines.append(f"{where}: {path}: {msg}" if path else f"{where}: {msg}")
        return "\n".join(lines)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelConfig(Strict):
    number: Union[int, str] = Field(description="372: 1-16 or 'A' (control input); 240: 1-8")
    name: str | None = Field(None, description="overrides the instrument's input name for field names")
    enabled: bool = True
    keep: list[Literal["kelvin", "sensor"]] = ["kelvin", "sensor"]

    @field_validator("number")
    @classmethod
    def _number(cls, v: int | str) -> int | str:
        if isinstance(v, str):
            if v.upper() == "A":
                return "A"
            raise ValueError("channel number must be an integer or 'A'")
        if not 1 <= v <= 16:
            raise ValueError(f"channel number must be 1-16 (or 'A'), got {v}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "::" in v or len(v) > 40):
            raise ValueError("channel name must be 1-40 characters without '::'")
        return v


class InstrumentConfig(Strict):
    model: Literal["372", "240"]
    name: str = Field(description="data node name, e.g. the serial LSA23JD")
    description: str = ""
    transport: Literal["tcp", "serial", "visa"]
    host: str | None = None
    port: int = Field(7777, ge=1, le=65535)
    device: str | None = None
    serial_number: str | None = None
    resource: str | None = None
    expect_serial: str | None = Field(None, description="refuse an instrument whose *IDN? serial differs")
    timeout: float = Field(2.0, gt=0, le=60)
    interval: float = Field(1.0, gt=0, le=3600, description="seconds between poll cycles")
    read_control_input: bool = True
    read_heater: bool = False
    enabled: bool = True
    channel: list[ChannelConfig] = []


    @field_validator("name")
    @classmethod
    def _node_name(cls, v: str) -> str:
        if not re.match(NAME_RE, v):
            raise ValueError("data node name must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                             "letter or digit (no spaces, no '::')")
        return v

    def serial_device(self) -> str:
        """The device path: explicit, or the stable udev link named after the USB serial number."""
        if self.device:
            return self.device
        return f"/dev/lakeshore/{self.model}-{self.serial_number}"


class PollingConfig(Strict):
    backoff_initial: float = Field(1.0, gt=0, le=60)
    backoff_max: float = Field(60.0, gt=0, le=3600)


class StoreConfig(Strict):
    path: Path = Path("/data/kelvinpi/kelvinpi.db")
    raw_retention_days: float = Field(90.0, gt=0)
    rollup_retention_days: float = Field(3650.0, gt=0)
    max_size_mb: float = Field(4096.0, gt=1)
    commit_interval: float = Field(1.0, gt=0, le=60)
    queue_size: int = Field(200_000, ge=100)


class WebConfig(Strict):
    bind: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    threads: int = Field(8, ge=1, le=64, description="worker threads answering complete requests (slow clients "
                         "never hold one: the server reads every request whole before handing it over)")
    stale_after: float = Field(30.0, gt=0, description="seconds after which a reading shows as stale")
    request_timeout: float = Field(10.0, gt=0, le=300, description="seconds a client has to send a whole request "
                                   "(request line, headers and body) once it has begun, or its first one once "
                                   "connected; then the connection is closed (slowloris)")
    idle_timeout: float = Field(60.0, ge=1, le=3600, description="seconds an idle keep-alive connection stays open")
    max_connections: int = Field(200, ge=8, le=4000, description="open connections in all; past it new ones wait in "
                                 "the listen backlog")
    max_connections_per_client: int = Field(64, ge=1, le=4000, description="open connections from one address (a "
                                            "Grafana server or a NAT gateway speaks for many viewers); past "
                                            "it a new one is refused with 503")
    trusted_proxies: list[str] = Field([], description="addresses or networks (e.g. 10.0.0.5, 10.1.0.0/16) of reverse "
                                       "proxies whose X-Forwarded-For names the client; from anyone else the header "
                                       "is ignored and the socket's peer is the client (control audit trail)")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies entry {entry!r} is not an IP address or network") from None
        return v


class ControlConfig(Strict):
    """Changing instrument state from the network: off unless enabled, and then token-protected."""

    enabled: bool = False
    token_file: Path | None = None
    max_setpoint_kelvin: float = Field(1.0, gt=0, le=400, description="highest setpoint the API may set")

    @model_validator(mode="after")
    def _token(self) -> "ControlConfig":
        if self.enabled and not self.token_file:
            raise ValueError("control.enabled needs token_file (a 0600 file holding the token)")
        return self


class SisockUplink(Strict):
    kind: Literal["sisock"]
    url: str = Field(pattern=r"^wss?://")
    realm: str = "test_realm"
    base_uri: str = "org.simonsobservatory"
    authid: str = "server"
    secret_file: Path
    ca_file: Path | None = None


class OcsUplink(Strict):
    kind: Literal["ocs"]
    url: str = Field(pattern=r"^wss?://")
    realm: str = "test_realm"
    address_root: str = "observatory"
    authid: str | None = None
    secret_file: Path | None = None
    ca_file: Path | None = None
    batch: int = Field(500, ge=1, le=10000)
    rejoin_delay: float = Field(5.0, ge=0, le=300, description="seconds to wait after (re)joining before publishing,"
                                " so subscribers that reconnect after a router restart get the backfill")


class InfluxUplink(Strict):
    kind: Literal["influxdb"]
    url: str = Field(pattern=r"^https?://")
    database: str | None = None
    bucket: str | None = None
    org: str | None = None
    username: str | None = None
    password_file: Path | None = None
    token_file: Path | None = None
    address_root: str = "observatory"
    batch: int = Field(5000, ge=1, le=100000)

    @model_validator(mode="after")
    def _version(self) -> "InfluxUplink":
        if bool(self.database) == bool(self.bucket):
            raise ValueError("give database (InfluxDB 1.x) or bucket + org (2.x), not both or neither")
        if self.bucket and not (self.org and self.token_file):
            raise ValueError("InfluxDB 2.x needs org and token_file")
        if self.username and not self.password_file:
            raise ValueError("username needs password_file")
        return self


Uplink = Annotated[Union[SisockUplink, OcsUplink, InfluxUplink], Field(discriminator="kind")]


class Config(Strict):
    instrument: list[InstrumentConfig] = Field(min_length=1)
    polling: PollingConfig = PollingConfig()
    store: StoreConfig = StoreConfig()
    web: WebConfig = WebConfig()
    control: ControlConfig = ControlConfig()
    uplink: list[Uplink] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"



# -- line mapping ---------------------------------------------------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"-]+)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"-]+)\s*=")


def line_map(text: str) -> dict[tuple, int]:
    """Map key paths such as ('instrument', 1, 'model') to 1-based line numbers."""
    lines: dict[tuple, int] = {}
    counters: dict[tuple, int] = {}
    current: tuple = ()
    for no, raw in enumerate(text.splitlines(), 1):
        m = _HEADER.match(raw)
        if m:
            parts = [p.strip('"') for p in m.group(2).split(".")]
            path: tuple = ()
            # Resolve each prefix against the most recent array element.
            for i, p in enumerate(parts):
                path = path + (p,)
                last = i == len(parts) - 1
                if last and m.group(1) == "[[":
                    idx = counters.get(path, -1) + 1
                    counters[path] = idx
                    # a new parent element resets its children's counters
                    for k in [k for k in counters if k[: len(path) + 1] == path + (idx,)]:
                        del counters[k]
                    path = path + (idx,)
                elif path in counters:
                    path = path + (counters[path],)
            current = path
            lines.setdefault(current, no)
            continue
        k = _KEY.match(raw)
        if k:
            key = tuple(p.strip('"') for p in k.group(1).split("."))
            lines.setdefault(current + key, no)
    return lines


def _locate(loc: tuple, lines: dict[tuple, int]) -> int | None:
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _clean_loc(loc: tuple) -> tuple:
    # Drop pydantic's union tags ('sisock', 'function-after[...]') that are not keys of the file.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("sisock", "ocs", "influxdb"))))


def _render_path(loc: tuple) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def cross_check(data: dict) -> list[tuple[tuple, str]]:
    """Rules between keys, checked on the raw data so they are reported with the schema errors."""
    problems: list[tuple[tuple, str]] = []
    instruments = data.get("instrument")
    if not isinstance(instruments, list):
        return problems
    names: dict[str, int] = {}
    for i, inst in enumerate(instruments):
        if not isinstance(inst, dict):
            continue
        loc = ("instrument", i)
        model, transport = inst.get("model"), inst.get("transport")
        if not isinstance(transport, str):
            transport = None  # a wrong type is the schema's to report
        if not isinstance(model, str):
            model = None
        name = inst.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append((loc + ("name",), f"data node name {name!r} already used by instrument[{names[name]}]"))
            names.setdefault(name, i)
        need = {"tcp": ("host",), "serial": ("device", "serial_number"), "visa": ("resource",)}.get(transport, ())
        if need and not any(inst.get(k) for k in need):
            problems.append((loc + ("transport",), f"transport {transport!r} needs {' or '.join(need)}"))
        if transport == "tcp" and model == "240":
            problems.append((loc + ("transport",), "the Model 240 has no Ethernet port: use transport 'serial'"))
        seen: set = set()
        channels = inst.get("channel", [])
        for j, ch in enumerate(channels if isinstance(channels, list) else []):
            if not isinstance(ch, dict):
                continue
            number = ch.get("number")
            key = str(number).upper()
            if key in seen:
                problems.append((loc + ("channel", j, "number"), f"channel {number} listed twice"))
            seen.add(key)
            if model == "240" and (key == "A" or (isinstance(number, int) and not 1 <= number <= 8)):
                problems.append((loc + ("channel", j, "number"), f"a Model 240 has inputs 1-8, not {number}"))
    return problems


def parse(text: str, source: str = "<config>") -> Config:
    """Validate config text; raise ConfigError listing every problem with its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(source, [(int(m.group(1)) if m else None, "", f"TOML syntax: {exc}")]) from None
    lines = line_map(text)
    problems = [(_locate(loc, lines), _render_path(loc), msg) for loc, msg in cross_check(data)]
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _clean_loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] not in ("missing", "model_type") and "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
            problems.append((_locate(loc, lines), _render_path(loc), msg))
    if problems:
        problems.sort(key=lambda p: (p[0] or 0, p[1]))
        raise ConfigError(source, problems)
    return cfg


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [(None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [(None, "", f"not UTF-8 text: {exc}")]) from None
    return parse(text, str(p))


def read_secret(path: Path, what: str) -> str:
    """Read a secret file, refusing one that others can read (it must be 0600 or stricter)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PermissionError(f"{what}: cannot read secret file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"{what}: secret file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )
    secret = Path(path).read_text(encoding="utf-8").strip()
    if not secret:
        raise PermissionError(f"{what}: secret file {path} is empty")
    return secret
