"""The appliance's one TOML file, validated with pydantic; every error names key path and line.

``load(path)`` is exactly what ``kelvinpi run`` and ``kelvinpi check-config`` do:
parse with tomllib, validate with pydantic (all errors, not only the first),
run the cross-checks a schema cannot express, and map each error back to the
line of the file where the user has to look.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic import Strict as StrictMode

from .models import MODEL_NAMES, REGISTRY, TRANSPORTS, ModelSpec

NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # the whole name (re.fullmatch: "$" let a final newline in)

# Every table is strict about types (Strict below): a port written as "8080" or a flag as "yes" is
# an error, not silently converted. A file path is the one exception, as TOML has no path type:
# a path key takes a string (a bare Path in strict mode would refuse every string).
ConfigPath = Annotated[Path, StrictMode(False)]


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
    """Every table refuses unknown keys (a typo is an error, not a silently ignored setting) and
    takes values as written: no string is turned into a number or a flag (a number where a float is
    wanted is fine). A path key is typed ``ConfigPath`` so that it takes a string. No number is nan
    or infinite (TOML can write both): ``threshold = nan`` was an alarm that never fired, and
    ``hysteresis = inf`` one that never cleared."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


LETTERED_INPUTS = ("A", "B", "C", "D", "D1", "D2", "D3", "D4", "D5")  # "A" on a 372; all of them on a 336/350


class ChannelConfig(Strict):
    """One input of an instrument. With none listed, every enabled input of the instrument is read."""

    number: int | str = Field(
        description='the input: 1-16 or "A" (the control input) on a 372, 1-8 on a 240, "A"-"D" ("D2"-"D5" with'
        " the 3062 option) on a 336 or 350"
    )
    name: str | None = Field(
        None,
        description="overrides the instrument's own input name (INNAME?) in field names; 1-40 characters without '::'",
    )
    enabled: bool = Field(True, description="false skips this input (it is neither read nor stored)")
    keep: list[Literal["kelvin", "sensor"]] = Field(
        ["kelvin", "sensor"],
        description="which series to store:"
        ' "kelvin" (<name>_t) and/or "sensor" (<name>_r: ohms on a'
        " 372, sensor units on a 240)",
    )

    @field_validator("number", mode="before")
    @classmethod
    def _number_type(cls, v: object) -> object:
        # before the union is tried, so a wrong type is one error, not one per member of the union
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError(f'must be an integer 1-16 or the string "A", got {describe_value(v)}')
        return v

    @field_validator("number")
    @classmethod
    def _number(cls, v: int | str) -> int | str:
        if isinstance(v, str):
            if v.upper() in LETTERED_INPUTS:
                return "D" if v.upper() == "D1" else v.upper()
            raise ValueError("channel number must be an integer, 'A', or a 336/350 input 'A'-'D', 'D1'-'D5'")
        if not 1 <= v <= 16:
            raise ValueError(f"channel number must be 1-16 (or 'A'), got {v}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "::" in v or len(v) > 40):
            raise ValueError("channel name must be 1-40 characters without '::'")
        return v


class ShareConfig(Strict):
    """[instrument.share]: the instrument's own line protocol served on a TCP port of the Pi, so existing
    drivers (Lake Shore's ``lakeshore``, QCoDeS, socs) use it through the appliance while the log goes on.
    Every client's command is carried out by the instrument's poller, between its own exchanges."""

    enabled: bool = Field(False, description="serve the instrument's protocol on port (off unless set)")
    bind: str = Field("0.0.0.0", description="the address to listen on (0.0.0.0: the lab network)")
    port: int = Field(7777, ge=0, le=65535, description="the TCP port clients connect to (0: any free port)")
    policy: Literal["read", "allow", "full"] = Field(
        "read",
        description='"read": queries only (a setting gets silence and the command-error bit, as an unknown '
        'command does); "allow": settings named in allow_commands from addresses in allow_clients; "full": '
        "every setting. Every setting that passes is audited and forces a configuration snapshot",
    )
    allow_commands: list[str] = Field(
        [], description='"allow": the setting mnemonics clients may send, e.g. ["SCAN", "SETP"]'
    )
    allow_clients: list[str] = Field(
        [],
        description='"allow": the client addresses or networks allowed to change settings, e.g. ["10.0.0.5", "10.0.1.0/24"]',
    )
    max_clients: int = Field(4, ge=1, le=32, description="clients at once; the next is refused and logged")
    idle_timeout: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="seconds a silent client keeps its connection and its place (of max_clients); then it is "
        "cut off, as a client that went away without closing must not hold a place for long",
    )
    max_wait: float = Field(
        1.5,
        gt=0,
        le=60,
        description="seconds a client's line may wait for its answer (behind other clients, the poller's "
        "cycle, a control request); a line not answered by then is dropped unanswered: its client has "
        "given up (pyvisa's and Lake Shore's drivers wait 2 s), and a late answer would be read as the "
        "answer to its next question",
    )
    max_queued: int = Field(
        16, ge=1, le=1000, description="lines a client may have waiting; further lines are dropped and counted"
    )

    @field_validator("allow_commands")
    @classmethod
    def _mnemonics(cls, v: list[str]) -> list[str]:
        for m in v:
            if not re.fullmatch(r"\*?[A-Za-z][A-Za-z0-9]{0,15}", m):
                raise ValueError(f"allow_commands: {m!r} is not a setting mnemonic such as SCAN or *CLS (no '?')")
        return [m.upper() for m in v]

    @field_validator("allow_clients")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for a in v:
            try:
                ipaddress.ip_network(a, strict=False)
            except ValueError:
                raise ValueError(
                    f"allow_clients: {a!r} is not an IP address or network (10.0.0.5, 10.0.1.0/24)"
                ) from None
        return v

    @model_validator(mode="after")
    def _allow_lists(self) -> ShareConfig:
        if self.enabled and self.policy == "allow" and not (self.allow_commands and self.allow_clients):
            raise ValueError('policy "allow" needs allow_commands and allow_clients (both non-empty)')
        return self


if TYPE_CHECKING:
    ModelName = str
else:  # the choices are the model registry's (appliance.models.REGISTRY): a new model is one line there
    ModelName = Literal[MODEL_NAMES]


class InstrumentConfig(Strict):
    """One Lake Shore instrument: how to reach it and what to read. Its poller is the one owner of the link."""

    model: ModelName = Field(description="; ".join(f'"{name}": {s.title}' for name, s in REGISTRY.items()))
    name: str = Field(
        description="data node name, e.g. the serial LSA23JD: fields are <name>::<channel>_t/_r;"
        " 1-64 letters, digits, '_', '.', '-'"
    )
    description: str = Field(
        "",
        description='shown on the front panel and announced to sisock (default: "Lake Shore <model> <name>", a gauge controller "Pfeiffer <model> <name>")',
    )
    transport: Literal["tcp", "serial", "visa", "folder"] = Field(
        description='"tcp" (the 372\'s Ethernet port, needs host),'
        ' "serial" (USB, needs device or serial_number),'
        ' "visa" (needs resource) or "folder" (bluefors-logs: needs log_dir and timezone)'
    )
    host: str | None = Field(None, description="tcp: the instrument's IP address or host name")
    port: int = Field(
        7777,
        ge=1,
        le=65535,
        description="tcp: the instrument's TCP port; unset, the model's own (7777 for a Lake Shore, 8000 for a tpg366, 502 for a cpa)",
    )
    device: str | None = Field(
        None,
        description="serial: the device path; default /dev/lakeshore/<model>-<serial_number> (the image's udev link)",
    )
    serial_number: str | None = Field(
        None,
        description="serial: the USB serial number, matched through the udev"
        " link so cables may move; also the expected *IDN? serial",
    )
    resource: str | None = Field(
        None,
        description="visa: a pyvisa resource string, e.g. TCPIP::192.168.1.50::7777::SOCKET or ASRL/dev/ttyUSB0::INSTR",
    )
    expect_serial: str | None = Field(
        None, description="refuse an instrument whose *IDN? serial differs (default: serial_number)"
    )
    timeout: float = Field(2.0, gt=0, le=60, description="seconds to wait for one reply")
    interval: float = Field(1.0, gt=0, le=3600, description="seconds between poll cycles")
    read_control_input: bool = Field(True, description="372: also read the control input A every cycle")
    read_heater: bool = Field(
        False,
        description="also record the heater output (%): the 372's sample heater, a 336's or 350's heaters 1 and 2",
    )
    log_dir: ConfigPath | None = Field(
        None,
        description="bluefors-logs: the folder holding the YY-MM-DD day folders (where the share is mounted)",
        examples=["/mnt/bluefors"],
    )
    cifs_share: str | None = Field(
        None,
        description="bluefors-logs: the Bluefors PC's Windows share, //HOST/NAME (for the mount: docs/operations.md)",
        examples=["//bluefors-pc/logs"],
    )
    credentials_file: ConfigPath | None = Field(
        None,
        description="bluefors-logs: a 0600 CIFS credentials file (username=, password=) for the share",
        examples=["/data/secrets/bluefors-share"],
    )
    timezone: str | None = Field(
        None,
        description="bluefors-logs: the Bluefors PC's IANA time zone (its logs' times are local, zoneless)",
        examples=["Europe/Helsinki"],
    )
    enabled: bool = Field(True, description="false keeps the section but does not poll the instrument")
    channel: list[ChannelConfig] = Field(
        [], description="the inputs to read ([[instrument.channel]]); none listed: every enabled input"
    )
    share: ShareConfig = Field(
        ShareConfig(), description="[instrument.share]: the instrument's protocol served to other clients (off)"
    )

    @field_validator("name")
    @classmethod
    def _node_name(cls, v: str) -> str:
        if not re.fullmatch(NAME_RE, v):
            raise ValueError(
                "data node name must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit (no spaces, no '::')"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _model_port(cls, data: Any) -> Any:
        """The model's own TCP port (its ``ModelSpec.port``: 7777 for a Lake Shore, 8000 for a TPG 366, 502
        for a CPA's Modbus) unless the file gives one."""
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, str) and "port" not in data:
            spec = REGISTRY.get(model)
            if spec is not None:
                return {**data, "port": spec.port}
        return data

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo

            try:
                ZoneInfo(v)
            except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
                raise ValueError(f"unknown time zone {v!r} (an IANA name such as 'Europe/Helsinki'): {exc}") from None
        return v

    def serial_device(self) -> str:
        """The device path: explicit, or the stable udev link named after the USB serial number."""
        if self.device:
            return self.device
        return f"/dev/lakeshore/{self.model}-{self.serial_number}"


class PollingConfig(Strict):
    """Reconnecting to an instrument that stopped answering, for every instrument."""

    backoff_initial: float = Field(1.0, gt=0, le=60, description="seconds before the first reconnect attempt")
    backoff_max: float = Field(
        60.0, gt=0, le=3600, description="the wait doubles after each failed attempt, up to this many seconds"
    )


class StoreConfig(Strict):
    """The SQLite store on the SD card's data partition: retention, size cap and commit batching."""

    path: ConfigPath = Field(
        Path("/data/kelvinpi/kelvinpi.db"), description="the store file (on the Pi: the data partition)"
    )
    raw_retention_days: float = Field(
        90.0, gt=0, description="days raw samples are kept; rollups (10 s .. 1 h) are kept far longer"
    )
    rollup_retention_days: float = Field(3650.0, gt=0, description="days rollups are kept")
    max_size_mb: float = Field(
        4096.0, gt=1, description="size cap in MiB: the oldest raw data goes first, so the card never fills"
    )
    commit_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="seconds between commits: a power cut costs at"
        " most this many seconds of readings; longer means less card wear",
    )
    queue_size: int = Field(
        200_000,
        ge=100,
        description="readings that may wait for the writer; beyond it new"
        " ones are dropped and counted (polling never blocks on the store)",
    )


class WebConfig(Strict):
    """The front panel, JSON API, Grafana datasource and /metrics."""

    bind: str = Field("0.0.0.0", description="the address to listen on (0.0.0.0: the lab network)")
    port: int = Field(8080, ge=0, le=65535, description="the HTTP port (0: any free port)")
    threads: int = Field(
        8,
        ge=1,
        le=64,
        description="worker threads answering complete requests (slow clients "
        "never hold one: the server reads every request whole before handing it over)",
    )
    stale_after: float = Field(30.0, gt=0, description="seconds after which a reading shows as stale")
    request_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="seconds a client has to send a whole request "
        "(request line, headers and body) once it has begun, or its first one once "
        "connected; then the connection is closed (slowloris)",
    )
    idle_timeout: float = Field(60.0, ge=1, le=3600, description="seconds an idle keep-alive connection stays open")
    max_connections: int = Field(
        200, ge=8, le=4000, description="open connections in all; past it new ones wait in the listen backlog"
    )
    max_connections_per_client: int = Field(
        64,
        ge=1,
        le=4000,
        description="open connections from one address (a "
        "Grafana server or a NAT gateway speaks for many viewers); past "
        "it a new one is refused with 503",
    )
    trusted_proxies: list[str] = Field(
        [],
        description="addresses or networks (e.g. 10.0.0.5, 10.1.0.0/16) of reverse "
        "proxies whose X-Forwarded-For names the client; from anyone else the header "
        "is ignored and the socket's peer is the client (control audit trail)",
    )

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

    enabled: bool = Field(False, description="allow POST /api/v1/control/<node>/setpoint (needs token_file)")
    token_file: ConfigPath | None = Field(
        None, description='a 0600 file holding the token clients send as "Authorization: Bearer <token>"'
    )
    max_setpoint_kelvin: float = Field(1.0, gt=0, le=400, description="highest setpoint the API may set")
    ack_pin_file: ConfigPath | None = Field(
        None,
        description="a 0600 file holding 4 to 12 digits: the PIN the panel's touch PIN pad sends to "
        "acknowledge an alarm (it can do nothing else; wrong PINs are rate-limited; works with control off)",
    )

    @model_validator(mode="after")
    def _token(self) -> ControlConfig:
        if self.enabled and not self.token_file:
            raise ValueError("control.enabled needs token_file (a 0600 file holding the token)")
        return self


class UpdateConfig(Strict):
    """In-place updates (docs/update.md): a signed RAUC bundle into the other slot, one try boot, and the
    health gate that commits it or rolls it back. Every outside command is an argv list."""

    rauc: list[str] = Field(["rauc"], min_length=1, description="the RAUC command (argv): info, install, status")
    keyring: ConfigPath = Field(
        Path("/etc/rauc/keyring.pem"), description="the CA certificate(s) a bundle's signature must chain to"
    )
    compatible: str = Field(
        "kelvinpi-rpi-arm64",
        min_length=1,
        description="the RAUC compatible a bundle must name (board and architecture)",
    )
    # the image's request-reboot: the service's user may not reboot (no polkit); a root unit it asks does,
    # passing the firmware's one-shot "0 tryboot" through /run/systemd/reboot-param
    reboot_try: list[str] = Field(
        ["/usr/lib/kelvinpi/request-reboot", "try"],
        min_length=1,
        description="reboot once into the new slot (argv; the image's helper passes the firmware's 0 tryboot)",
    )
    reboot: list[str] = Field(
        ["/usr/lib/kelvinpi/request-reboot", "normal"], min_length=1, description="an ordinary reboot (argv)"
    )
    commit_deadline_s: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="seconds a try boot has to become healthy before it is marked bad and the old slot boots",
    )
    device_tree: ConfigPath = Field(
        Path("/proc/device-tree"), description="where the firmware says which slot booted and whether it is a try"
    )
    state_dir: ConfigPath = Field(
        Path("/data/kelvinpi/update"), description="the pending-update marker and uploaded bundles (data partition)"
    )
    max_upload_mb: float = Field(
        1024.0, gt=0, le=16384, description="largest bundle POST /api/v1/update accepts (MiB; larger: 413)"
    )


class UplinkModel(Strict):
    """What every [[uplink]] model has: its ``kind`` (each narrows it to its own Literal)."""

    kind: str


class SisockUplink(UplinkModel):
    """Appear as a sisock DataNodeServer on a crossbar router (Grafana reads through sisock's glue)."""

    kind: Literal["sisock"] = Field(description='"sisock"')
    url: str = Field(pattern=r"^wss?://", description="the crossbar router's WebSocket URL (ws:// or wss://)")
    realm: str = Field("test_realm", description="the WAMP realm")
    base_uri: str = Field("org.simonsobservatory", description="prefix of the sisock procedure URIs")
    authid: str = Field("server", description="the WAMP-CRA authentication id")
    secret_file: ConfigPath = Field(description="a 0600 file holding the WAMP-CRA secret")
    ca_file: ConfigPath | None = Field(
        None, description="wss://: the CA certificate (PEM) to verify the router against (default: the system's CAs)"
    )


class OcsUplink(UplinkModel):
    """Publish every reading as OCS feeds (<address_root>.<name>.feeds.temperatures), as the socs agent does."""

    kind: Literal["ocs"] = Field(description='"ocs"')
    url: str = Field(pattern=r"^wss?://", description="the crossbar router's WebSocket URL (ws:// or wss://)")
    realm: str = Field("test_realm", description="the WAMP realm")
    address_root: str = Field("observatory", description="the OCS address root of the agents")
    authid: str | None = Field(None, description="the WAMP-CRA authentication id (none: anonymous)")
    secret_file: ConfigPath | None = Field(None, description="a 0600 file holding the WAMP-CRA secret")
    ca_file: ConfigPath | None = Field(
        None, description="wss://: the CA certificate (PEM) to verify the router against (default: the system's CAs)"
    )
    batch: int = Field(500, ge=1, le=10000, description="samples per publication during a backfill")
    rejoin_delay: float = Field(
        5.0,
        ge=0,
        le=300,
        description="seconds to wait after (re)joining before publishing,"
        " so subscribers that reconnect after a router restart get the backfill",
    )


class InfluxUplink(UplinkModel):
    """Write every reading to InfluxDB (1.x: database; 2.x: bucket + org + token_file), in OCS's layout."""

    kind: Literal["influxdb"] = Field(description='"influxdb"')
    url: str = Field(pattern=r"^https?://", description="the InfluxDB base URL (http:// or https://)")
    database: str | None = Field(None, description="InfluxDB 1.x: the database (give this or bucket)")
    bucket: str | None = Field(None, description="InfluxDB 2.x: the bucket (needs org and token_file)")
    org: str | None = Field(None, description="InfluxDB 2.x: the organisation")
    username: str | None = Field(None, description="InfluxDB 1.x: the user (needs password_file)")
    password_file: ConfigPath | None = Field(None, description="InfluxDB 1.x: a 0600 file holding the user's password")
    token_file: ConfigPath | None = Field(None, description="InfluxDB 2.x: a 0600 file holding the API token")
    address_root: str = Field("observatory", description="measurement names are <address_root>.<name>")
    batch: int = Field(5000, ge=1, le=100000, description="samples per HTTP write")

    @model_validator(mode="after")
    def _version(self) -> InfluxUplink:
        if bool(self.database) == bool(self.bucket):
            raise ValueError("give database (InfluxDB 1.x) or bucket + org (2.x), not both or neither")
        if self.bucket and not (self.org and self.token_file):
            raise ValueError("InfluxDB 2.x needs org and token_file")
        if self.username and not self.password_file:
            raise ValueError("username needs password_file")
        return self


class RemoteWriteUplink(UplinkModel):
    """Prometheus remote write (Prometheus, VictoriaMetrics, Mimir, Thanos Receive, Grafana Cloud)."""

    kind: Literal["remote_write"] = Field(description='"remote_write"')
    url: str = Field(
        pattern=r"^https?://",
        description="the receiver's write endpoint, e.g."
        " http://prometheus:9090/api/v1/write or http://victoria:8428/api/v1/write",
    )
    username: str | None = Field(None, description="HTTP basic auth user (needs password_file)")
    password_file: ConfigPath | None = Field(None, description="0600 file holding the basic auth password")
    token_file: ConfigPath | None = Field(None, description="0600 file holding a bearer token (instead of basic auth)")
    ca_file: ConfigPath | None = Field(
        None,
        description="PEM CA bundle to verify an https receiver with, instead of"
        " the system's CAs (the certificate is always verified)",
    )
    labels: dict[str, str] = Field(
        {},
        description='extra labels on every series, e.g. {site = "lab2"};'
        " the appliance's own are __name__, node, field (and units)",
    )
    send_status: bool = Field(
        True,
        description="also send kelvinpi_reading_status{node,field}, the status"
        " bits of every reading (a flagged reading has a status sample but no value)",
    )
    batch: int = Field(2000, ge=1, le=50000, description="samples per write request at most")
    timeout: float = Field(30.0, gt=0, le=300, description="seconds to wait for the receiver's answer")
    live_during_backfill: bool = Field(
        True,
        description="while a backlog is sent, put the newest samples in"
        " each request too (live data keeps flowing); false: strictly oldest first,"
        " for a Prometheus without an out-of-order window (it refuses a sample older"
        " than one it has)",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", k) or k.startswith("__"):
                raise ValueError(
                    f"label name {k!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                )
            if k in ("node", "field", "units"):
                raise ValueError(f"label {k!r} is set by the appliance itself")
        return v

    @model_validator(mode="after")
    def _auth(self) -> RemoteWriteUplink:
        if self.username and not self.password_file:
            raise ValueError("username needs password_file")
        if self.password_file and not self.username:
            raise ValueError("password_file needs username")
        if self.token_file and self.username:
            raise ValueError("give basic auth (username + password_file) or token_file, not both")
        return self


# Every [[uplink]] model, once (``appliance.uplinks.UPLINKS`` pairs each with its runner, imported
# only when configured): the union, the tags and the docs' sections come from this tuple.
UPLINK_MODELS: tuple[type[UplinkModel], ...] = (SisockUplink, OcsUplink, InfluxUplink, RemoteWriteUplink)
if TYPE_CHECKING:
    Uplink = UplinkModel  # to the type checker, any one of them
else:
    Uplink = Annotated[Union[UPLINK_MODELS], Field(discriminator="kind")]  # noqa: UP007 (a union of the tuple's members)


# -- alarms and notifications --------------------------------------------------
Severity = Literal["info", "warning", "critical"]


class _AlarmBase(Strict):
    if TYPE_CHECKING:
        kind: str  # every alarm model narrows it to its own Literal (a pydantic field there, not here)

    name: str = Field(description="the alarm's name, shown on the panel, in notifications and metrics labels")
    severity: Severity = Field("warning", description="info, warning or critical")
    hold: float = Field(0.0, ge=0, le=86400, description="seconds the condition must hold before the alarm is raised")
    repeat: float = Field(
        1800.0,
        ge=0,
        le=7 * 86400,
        description="seconds between repeated notifications while active and unacknowledged (0: once)",
    )
    notify: list[str] | None = Field(None, description="names of [[notify]] targets; all of them when left out")

    @field_validator("name")
    @classmethod
    def _alarm_name(cls, v: str) -> str:
        if not re.fullmatch(NAME_RE, v):
            raise ValueError(
                "alarm name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        return v


class ThresholdAlarm(_AlarmBase):
    """A field above (or below) a threshold; cleared once back past it by ``hysteresis``."""

    kind: Literal["above", "below"] = Field(
        description="above: raised when the field exceeds threshold; below: when under it"
    )
    # The public key says "field" for the whole series name (node::field): in code that is a
    # SeriesKey's ``name``, and ``field`` is only its short part (appliance.naming).
    field: str = Field(description="the series, as node::field (e.g. LSA23JD::mxc_t)")
    threshold: float = Field(description="in the field's units (kelvin for _t fields)")
    hysteresis: float = Field(0.0, ge=0, description="the value must come back this far past the threshold to clear")


class RateAlarm(_AlarmBase):
    """A field changing faster than ``threshold`` K/min (field units per minute) over ``window`` seconds."""

    kind: Literal["rate"] = Field(description="rate of change of a field")
    field: str = Field(description="the series, as node::field")
    threshold: float = Field(gt=0, description="field units per minute (K/min for _t fields)")
    window: float = Field(300.0, gt=0, le=86400, description="seconds over which the rate is measured")
    direction: Literal["rising", "falling", "either"] = Field("rising", description="which way counts")


class NoDataAlarm(_AlarmBase):
    """No new reading of a field for ``seconds`` beyond when the next one was due (scanner-aware)."""

    kind: Literal["no_data"] = Field(description="no new reading of a field")
    field: str = Field(description="the series, as node::field")
    seconds: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="seconds past the expected next reading (a scanned 372 channel's revisit time,"
        " else the poll interval)",
    )


class DisconnectedAlarm(_AlarmBase):
    """An instrument that has stopped answering (its poller is reconnecting)."""

    kind: Literal["disconnected"] = Field(description="an instrument not answering")
    instrument: str = Field(description="the instrument's name (data node)")


class StoreAlarm(_AlarmBase):
    """The store not committing: readings wait in memory and a power cut would lose them."""

    kind: Literal["store_not_writing"] = Field(description="the store failing to commit what it holds")
    seconds: float = Field(60.0, gt=0, le=86400, description="seconds without a successful commit")


class BacklogAlarm(_AlarmBase):
    """An uplink falling behind: more samples than ``threshold`` not yet acknowledged."""

    kind: Literal["backlog"] = Field(description="an uplink's unacknowledged samples")
    uplink: int = Field(ge=0, description="the uplink's index: 0 for the first [[uplink]]")
    threshold: int = Field(ge=0, description="samples not yet acknowledged by the uplink")


# Every alarm kind's model, once: the [[alarm]] union is made of them (``appliance.alarms.CONDITIONS``
# maps each to the class that evaluates it).
ALARM_MODELS: tuple[type[_AlarmBase], ...] = (
    ThresholdAlarm,
    RateAlarm,
    NoDataAlarm,
    DisconnectedAlarm,
    StoreAlarm,
    BacklogAlarm,
)
if TYPE_CHECKING:
    AlarmRule = _AlarmBase  # to the type checker, any one of them
else:
    AlarmRule = Annotated[Union[ALARM_MODELS], Field(discriminator="kind")]  # noqa: UP007 (a union of the tuple's members)


class _NotifyBase(Strict):
    name: str = Field(description="the target's name, as rules' notify lists give it")
    timeout: float = Field(10.0, gt=0, le=120, description="seconds to wait for the server")
    backoff_initial: float = Field(5.0, gt=0, le=3600, description="seconds before the first retry after a failure")
    backoff_max: float = Field(300.0, gt=0, le=86400, description="longest wait between retries")


class WebhookNotify(_NotifyBase):
    """POST JSON: ``webhook`` a generic body, ``slack`` an incoming-webhook body, ``ntfy`` a ntfy message."""

    kind: Literal["webhook", "slack", "ntfy"] = Field(
        description="webhook: generic JSON; slack: incoming webhook; ntfy: a ntfy topic URL"
    )
    url_file: ConfigPath = Field(description="0600 file holding the URL (a webhook URL is a secret)")
    token_file: ConfigPath | None = Field(
        None, description="0600 file with a bearer token (ntfy access token), optional"
    )


class EmailNotify(_NotifyBase):
    """Email over SMTP with STARTTLS; the password from a 0600 secret file."""

    kind: Literal["email"] = Field(description="email over SMTP")
    host: str = Field(description="SMTP server")
    port: int = Field(587, ge=1, le=65535, description="SMTP port (587: submission with STARTTLS)")
    starttls: bool = Field(True, description="upgrade the connection with STARTTLS before logging in")
    ca_file: ConfigPath | None = Field(
        None, description="CA bundle to verify the server's certificate (system store if unset)"
    )
    username: str | None = Field(None, description="SMTP login; needs password_file")
    password_file: ConfigPath | None = Field(None, description="0600 file holding the SMTP password")
    sender: str = Field(description="From: address")
    to: list[str] = Field(min_length=1, description="recipients")

    @model_validator(mode="after")
    def _login(self) -> EmailNotify:
        if self.username and not self.password_file:
            raise ValueError("username needs password_file")
        return self


# Every [[notify]] model, once (``appliance.notify.SENDERS`` maps each kind to its sender).
NOTIFY_MODELS: tuple[type[_NotifyBase], ...] = (WebhookNotify, EmailNotify)
if TYPE_CHECKING:
    NotifyTarget = _NotifyBase  # to the type checker, any one of them
else:
    NotifyTarget = Annotated[Union[NOTIFY_MODELS], Field(discriminator="kind")]  # noqa: UP007 (a union of the tuple's members)


def kinds_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The ``kind`` values a union member accepts (its ``Literal``)."""
    return get_args(model.model_fields["kind"].annotation)


# pydantic's tags in error locations (uplink[0].sisock.url): every kind of every union, derived.
UNION_TAGS = {k for m in (*UPLINK_MODELS, *ALARM_MODELS, *NOTIFY_MODELS) for k in kinds_of(m)}
_UPLINK_KINDS = [k for m in UPLINK_MODELS for k in kinds_of(m)]


class Config(Strict):
    """The whole kelvinpi.toml."""

    instrument: list[InstrumentConfig] = Field(
        min_length=1, description="one [[instrument]] per Lake Shore instrument (at least one)"
    )
    polling: PollingConfig = Field(PollingConfig(), description="reconnect back-off")
    store: StoreConfig = Field(StoreConfig(), description="the SQLite store")
    web: WebConfig = Field(WebConfig(), description="the HTTP server")
    control: ControlConfig = Field(ControlConfig(), description="instrument control over HTTP")
    update: UpdateConfig = Field(UpdateConfig(), description="in-place updates (RAUC bundles, try boot, commit)")
    uplink: list[Uplink] = Field(
        [],
        description="zero or more [[uplink]] sections to the control room,"
        f" each of one kind: {', '.join(_UPLINK_KINDS[:-1])} or {_UPLINK_KINDS[-1]}",
    )
    alarm: list[AlarmRule] = Field([], description="alarm rules ([[alarm]]), evaluated every second")
    notify: list[NotifyTarget] = Field([], description="where alarm notifications go ([[notify]])")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="the lowest level logged (to journald on the Pi)"
    )


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
        km = _KEY.match(raw)
        if km:
            key = tuple(p.strip('"') for p in km.group(1).split("."))
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
    # Drop pydantic's union tags ('sisock', 'function-after[...]') that are not keys of the file:
    # a tag follows an array index (uplink[0].sisock.url), so a key named like one is kept.
    return tuple(
        p
        for i, p in enumerate(loc)
        if not (isinstance(p, str) and ("[" in p or (p in UNION_TAGS and i > 0 and isinstance(loc[i - 1], int))))
    )


def _render_path(loc: tuple) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def describe_value(v: object) -> str:
    """A value as the TOML file wrote it, with its type: 'the string "8080"', 'the integer 372'."""
    if isinstance(v, bool):
        return f"the boolean {'true' if v else 'false'}"
    if isinstance(v, str):
        return f"the string {json.dumps(v, ensure_ascii=False)}"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {v!r}"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (datetime.date, datetime.time)):
        return f"the date/time {v.isoformat()}"
    return repr(v)


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "an array",
}


def _toml_float(v: object) -> str:
    """nan and the infinities as a TOML file writes them."""
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return str(v)


def type_message(err: Any) -> str | None:
    """A type error in the file's own words, naming the type it got (pydantic says "Input should be
    a valid integer", and for model = 372 "Input should be '372' or '240'", as if it got that)."""
    kind, value = err["type"], err.get("input")
    if kind == "path_type":  # pydantic: "Input is not a valid path for <class 'pathlib.Path'>"
        return f"must be a path string (got {describe_value(value)})"
    if kind == "union_tag_invalid" and isinstance(value, dict):  # "Input tag '1' found using 'kind'" for kind = 1
        key = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
        tag = value.get(key)
        if key and key in value and not isinstance(tag, str):
            tags = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected_tags", "")))
            choices = ", ".join(f'"{t}"' for t in tags)
            return f"{key} must be one of the strings {choices} (got {describe_value(tag)})"
    if kind == "finite_number":
        return f"must be a finite number (got {_toml_float(value)})"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, got {describe_value(value)}"
    if kind == "literal_error" and not isinstance(value, str):
        allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        if not allowed:
            return None
        shown = "true" if value is True else "false" if value is False else str(value)
        if shown in allowed:
            return f'must be the string "{shown}" (got {describe_value(value)})'
        choices = ", ".join(f'"{a}"' for a in allowed)
        return f"must be one of the strings {choices} (got {describe_value(value)})"
    return None


def cross_check(data: dict) -> list[tuple[tuple, str]]:
    """Rules between keys, checked on the raw data so they are reported with the schema errors."""
    problems: list[tuple[tuple, str]] = []
    instruments = data.get("instrument")
    if not isinstance(instruments, list):
        return problems
    names: dict[str, int] = {}
    share_ports: dict[int, int] = {}
    web = data.get("web")
    web_port = web.get("port", 8080) if isinstance(web, dict) else 8080
    for i, inst in enumerate(instruments):
        if not isinstance(inst, dict):
            continue
        loc = ("instrument", i)
        share = inst.get("share")
        if isinstance(share, dict) and share.get("enabled") is True:
            from .share.dialect import DIALECTS  # here: the share's package imports this module

            if isinstance(inst.get("model"), str) and inst["model"] not in DIALECTS:
                problems.append(
                    (
                        loc + ("share", "enabled"),
                        f"model {inst['model']!r} has no share: [instrument.share] serves the protocol of "
                        f"{', '.join(DIALECTS)} (appliance/share/dialect.py)",
                    )
                )
            port = share.get("port", 7777)
            if isinstance(port, int) and not isinstance(port, bool) and port:
                if port in share_ports:
                    problems.append(
                        (loc + ("share", "port"), f"port {port} already shared by instrument[{share_ports[port]}]")
                    )
                elif port == web_port:
                    problems.append((loc + ("share", "port"), f"port {port} is the web server's (web.port)"))
                share_ports.setdefault(port, i)
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
        needs = {"tcp": ("host",), "serial": ("device", "serial_number"), "visa": ("resource",), "folder": ("log_dir",)}
        need = needs.get(transport, ()) if transport else ()
        if need and not any(inst.get(k) for k in need):
            problems.append((loc + ("transport",), f"transport {transport!r} needs {' or '.join(need)}"))
        spec = REGISTRY.get(model) if model else None
        refused = spec.refuses(transport) if spec and transport in TRANSPORTS else None
        if refused:
            problems.append((loc + ("transport",), refused))
        if spec and spec.fields and inst.get("channel"):
            fixed = ", ".join(spec.fields[:3])
            problems.append(
                (loc + ("channel",), f"a {spec.title} has no inputs to list: its fields are fixed ({fixed}, ...)")
            )
        problems.extend(_reads_refused(inst, loc, spec))
        if spec and spec.transports == ("folder",) and not inst.get("timezone"):
            problems.append((loc + ("timezone",), f"model {model!r} needs timezone (the Bluefors PC's)"))
        problems.extend(_folder_keys(inst, loc, model, spec))
        seen: set = set()
        channels = inst.get("channel", [])
        for j, ch in enumerate(channels if isinstance(channels, list) else []):
            if not isinstance(ch, dict):
                continue
            number = ch.get("number")
            key = str(number).upper()
            if key == "D1" and spec and "D" in spec.channels:
                key = "D"  # a 336/350's D1 is its D (336 manual p.130; the channel validator says so too)
            if key in seen:
                also = " (D1 is D)" if key == "D" else ""
                problems.append((loc + ("channel", j, "number"), f"channel {number} listed twice{also}"))
            seen.add(key)
            if spec and spec.channels and key not in spec.channels and isinstance(number, (int, str)):
                problems.append(
                    (
                        loc + ("channel", j, "number"),
                        f"a {spec.title} has {spec.channel_noun} {_span(spec.channels)}, not {number}",
                    )
                )
    return problems


FOLDER_KEYS = ("log_dir", "cifs_share", "credentials_file", "timezone")  # bluefors-logs' own keys
FOLDER_MIN_INTERVAL = 0.1  # seconds: each poll lists the share's folders; faster only loads the Bluefors PC


def _folder_keys(inst: dict, loc: tuple, model: str | None, spec: Any) -> list[tuple[tuple, str]]:
    """A log folder's keys only on a log folder, and a log folder without a network address: a key
    that does nothing where it is written is a mistake the user must hear about, not a silence.
    A relative ``log_dir`` resolves against the service's working directory, as every path of the
    config does (``make run``'s demo keeps its folder in the checkout's var/)."""
    out: list[tuple[tuple, str]] = []
    if spec is None:
        return out
    folder = spec.transports == ("folder",)
    if not folder:
        for k in FOLDER_KEYS:
            if inst.get(k) is not None:
                out.append((loc + (k,), f"{k} is a bluefors-logs key: model {model!r} does not read a log folder"))
        return out
    for k in ("host", "port", "device", "resource"):
        if inst.get(k) is not None:
            out.append((loc + (k,), f"{k} is not for bluefors-logs: it reads a folder (log_dir), not a device"))
    interval = inst.get("interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and 0 < interval < FOLDER_MIN_INTERVAL:
        out.append(
            (
                loc + ("interval",),
                f"interval {interval:g} s: bluefors-logs polls at most every {FOLDER_MIN_INTERVAL:g} s",
            )
        )
    return out


def _span(numbers: tuple[str, ...]) -> str:
    """``("1", ..., "8")`` -> "1-8"; ``("A", "1", ..., "16")`` -> "A, 1-16"."""
    digits = [int(n) for n in numbers if n.isdigit()]
    words = [n for n in numbers if not n.isdigit()]
    run = [f"{min(digits)}-{max(digits)}"] if digits and len(digits) == max(digits) - min(digits) + 1 else []
    return ", ".join(words + (run or [str(d) for d in digits]))


def channel_name_collisions(data: dict, lines: dict[tuple, int]) -> list[tuple[int | None, str, str]]:
    """Channel names of one instrument that would write into one series (same field stem:
    "4K plate" and "4k Plate"); the problem names both lines."""
    from .naming import slug

    problems: list[tuple[int | None, str, str]] = []
    instruments = data.get("instrument")
    for i, inst in enumerate(instruments if isinstance(instruments, list) else []):
        channels = inst.get("channel", []) if isinstance(inst, dict) else []
        first: dict[str, tuple[int, str]] = {}
        for j, ch in enumerate(channels if isinstance(channels, list) else []):
            name = ch.get("name") if isinstance(ch, dict) else None
            if not isinstance(name, str) or not name.strip():
                continue
            stem = slug(name)
            loc = ("instrument", i, "channel", j, "name")
            if stem in first:
                k, other = first[stem]
                other_line = _locate(("instrument", i, "channel", k, "name"), lines)
                problems.append(
                    (
                        _locate(loc, lines),
                        _render_path(loc),
                        f"channel name {name!r} and {other!r} (line {other_line}) both make the field "
                        f"names {stem}_t/{stem}_r: names must differ in more than case, spaces or "
                        f"punctuation",
                    )
                )
            else:
                first[stem] = (j, name)
    return problems


def _reads_refused(inst: dict, loc: tuple, spec: ModelSpec | None) -> list[tuple[tuple, str]]:
    """``read_control_input = true`` on a model with no control input to read apart from its inputs.

    The driver in the registry says what it has (``has_control_input``: the 372's input A): a 370
    has no input A, and the key would be silently ignored. (``read_heater`` on a 240 is still taken
    and ignored: the sample configs set it; left as it was.)
    """
    if spec is None:
        return []
    problems = []
    if inst.get("read_control_input") is True and not getattr(spec.driver_class(), "has_control_input", False):
        problems.append(
            (
                loc + ("read_control_input",),
                f"a {spec.title} has no control input to read apart from its {spec.channel_noun}: "
                "remove read_control_input",
            )
        )
    return problems


def configured_fields(inst: dict) -> set[str] | None:
    """The fields an instrument section will write, when the config alone decides them; None when
    a name comes from the instrument at run time (no [[instrument.channel]] list, an input without
    a name, or a 372's control input A read but not listed).

    Mirrors the poller: a listed, enabled input writes <slug(name)>_t and/or _r (its ``keep``);
    a 372 reads A when read_control_input, and writes sample_heater when read_heater.
    """
    from .naming import slug

    model, channels = inst.get("model"), inst.get("channel")
    spec = REGISTRY.get(model) if isinstance(model, str) else None
    if spec is not None and spec.fields:
        return set(spec.fields)
    if spec is not None and spec.channel_field:
        # a fixed field per channel whatever its name (a gauge's p<n>: the Bluefors and socs names); none listed: all
        channels = [] if channels is None else channels
        if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
            return None
        listed = [c.get("number") for c in channels if c.get("enabled", True) is not False]
        return {spec.channel_field.format(n=n) for n in (listed if channels else spec.channels)}
    if model not in ("372", "240", "370") or not isinstance(channels, list) or not channels:
        return None
    reads_a = model == "372" and inst.get("read_control_input", True) is not False
    fields: set[str] = set()
    listed_a = False
    for ch in channels:
        if not isinstance(ch, dict):
            return None
        number = ch.get("number")
        is_a = isinstance(number, str) and number.upper() == "A"
        listed_a = listed_a or is_a
        if ch.get("enabled", True) is False or (is_a and not reads_a):
            continue
        name, keep = ch.get("name"), ch.get("keep", ["kelvin", "sensor"])
        if not isinstance(name, str) or not name.strip() or not isinstance(keep, list):
            return None
        stem = slug(name)
        fields.update(f"{stem}_{s}" for k, s in (("kelvin", "t"), ("sensor", "r")) if k in keep)
    if reads_a and not listed_a:
        return None
    if model in ("372", "370") and inst.get("read_heater") is True:
        fields.add("sample_heater")
    return fields


RANKED_PROBLEMS = 10  # unknown names per file given suggestions ranked by likeness; the rest listed A-Z
RANKED_CHOICES = 500  # names ranked against each (the first in order); a longer list is listed A-Z
RANKED_CHARS = 64  # characters of each name compared (difflib's cost grows with the product of lengths)


class Suggestions:
    """Which names to suggest for an unknown one, with bounded work per file: ranking every name by
    likeness for every alarm naming an unknown one cost time quadratic in the file (a 44 KB
    kelvinpi.toml took 21 s of CPU, a 219 KB one about 9 minutes, on a first boot of a Pi)."""

    def __init__(self) -> None:
        self.left = RANKED_PROBLEMS

    def closest(self, word: str, choices: set[str] | list[str], limit: int = 8) -> str:
        """The choices, closest to ``word`` first (while the budget lasts), at most ``limit`` of them."""
        ordered = sorted(choices)
        if self.left > 0 and len(ordered) <= RANKED_CHOICES:
            self.left -= 1
            cut = {c[:RANKED_CHARS]: c for c in reversed(ordered)}
            near = difflib.get_close_matches(word[:RANKED_CHARS], list(cut), n=limit, cutoff=0.0)
            shown_names = [cut[c] for c in near]
        else:
            shown_names = ordered[:limit]
        shown = ", ".join(shown_names)
        return shown + (f", ... ({len(ordered)} in all)" if len(ordered) > limit else "")

    def among(self, name: str, instruments: set[str]) -> str:
        return f" (instruments: {self.closest(name, instruments)})" if instruments else ""


def _tables(data: dict, key: str) -> list:
    """The array of tables ``[[key]]`` of the raw config, or [] when it is missing or not an array (a wrong
    type is the schema's to report)."""
    value = data.get(key)
    return value if isinstance(value, list) else []


def _cross_check_alarms(data: dict, problems: list[tuple[tuple, str]]) -> None:
    """Alarm names unique; fields, instruments, uplinks and notify targets that exist."""
    suggest = Suggestions()
    sections = _tables(data, "instrument")
    known = {  # a name of the wrong type is pydantic's to report
        i["name"]: configured_fields(i) for i in sections if isinstance(i, dict) and isinstance(i.get("name"), str)
    }
    instruments = set(known)
    uplinks, targets = _tables(data, "uplink"), _tables(data, "notify")
    target_names: dict[str, int] = {}
    for j, t in enumerate(targets):
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            if t["name"] in target_names:
                problems.append(
                    (
                        ("notify", j, "name"),
                        f"notify target {t['name']!r} already used by notify[{target_names[t['name']]}]",
                    )
                )
            target_names.setdefault(t["name"], j)
    rules = _tables(data, "alarm")
    names: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        loc = ("alarm", i)
        name = rule.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append((loc + ("name",), f"alarm name {name!r} already used by alarm[{names[name]}]"))
            names.setdefault(name, i)
        fld = rule.get("field")
        if isinstance(fld, str):
            node, sep, rest = fld.partition("::")
            if not sep or not rest:
                problems.append((loc + ("field",), f"field {fld!r} must be node::field, e.g. LSA23JD::mxc_t"))
            elif node not in instruments:
                problems.append(
                    (
                        loc + ("field",),
                        f"field {fld!r}: no instrument named {node!r}{suggest.among(node, instruments)}",
                    )
                )
            elif (fields := known[node]) is not None and rest not in fields:
                has = (
                    f"{node} has {suggest.closest(rest, fields)}"
                    if fields
                    else f"{node} has no fields (no enabled input)"
                )
                problems.append((loc + ("field",), f"{fld} matches no series; {has}"))
        inst = rule.get("instrument")
        if isinstance(inst, str) and inst not in instruments:
            problems.append((loc + ("instrument",), f"no instrument named {inst!r}{suggest.among(inst, instruments)}"))
        up = rule.get("uplink")
        if isinstance(up, int) and not isinstance(up, bool) and up >= len(uplinks):
            problems.append((loc + ("uplink",), f"there is no uplink[{up}] ({len(uplinks)} configured)"))
        wanted = rule.get("notify")
        listed: set[str] = set()
        for n in wanted if isinstance(wanted, list) else []:
            if isinstance(n, str) and n not in target_names:
                problems.append((loc + ("notify",), f"no [[notify]] target named {n!r}"))
            elif isinstance(n, str) and n in listed:  # each notice would go there twice, never counted delivered
                problems.append((loc + ("notify",), f"notify target {n!r} listed twice"))
            if isinstance(n, str):
                listed.add(n)


MAX_NESTING = 100  # brackets deep: where a nesting too deep to read is reported (no config goes past 5)


def _first_line(exc: BaseException) -> str:
    return str(exc).split(";")[0].strip()


def _long_integer(text: str) -> tuple[int | None, int]:
    """The line of the longest run of digits in ``text`` (what Python refused to convert), and its length."""
    line, digits = None, 0
    for no, raw in enumerate(text.splitlines(), 1):
        for run in re.findall(r"\d[\d_]*", raw):
            n = len(run.replace("_", ""))
            if n > digits:
                line, digits = no, n
    return line, digits


def _too_deep(text: str) -> int | None:
    """The line where brackets (outside strings, roughly) first nest ``MAX_NESTING`` deep."""
    depth = 0
    for no, raw in enumerate(text.splitlines(), 1):
        for c in raw:
            if c in "[{":
                depth += 1
                if depth >= MAX_NESTING:
                    return no
            elif c in "]}":
                depth = max(0, depth - 1)
    return None


def parse(text: str, source: str = "<config>") -> Config:
    """Validate config text; raise ConfigError listing every problem with its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(source, [(int(m.group(1)) if m else None, "", f"TOML syntax: {exc}")]) from None
    except ValueError as exc:  # an integer longer than Python converts (4300 digits): no config needs one
        line, digits = _long_integer(text)
        raise ConfigError(
            source, [(line, "", f"an integer of {digits} digits: too long to read ({_first_line(exc)})")]
        ) from None
    except RecursionError:  # arrays or tables nested thousands deep: the reader runs out of stack
        raise ConfigError(
            source, [(_too_deep(text), "", f"arrays or inline tables nested more than {MAX_NESTING} deep")]
        ) from None
    lines = line_map(text)
    crossed = cross_check(data)
    _cross_check_alarms(data, crossed)
    problems = [(_locate(loc, lines), _render_path(loc), msg) for loc, msg in crossed]
    problems += channel_name_collisions(data, lines)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _clean_loc(err["loc"])
            msg = type_message(err) or err["msg"].removeprefix("Value error, ")
            if (
                err["type"] not in ("missing", "model_type")
                and "input" in err
                and not isinstance(err["input"], dict)
                and "got " not in msg
            ):
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


SECRET_LIMIT = 65536  # bytes: a secret (a URL, a token, a password) is a line, not a file's worth


def _read_regular(path: Path, what: str, kind: str, limit: int) -> tuple[os.stat_result, bytes]:
    """A regular file's status and its first ``limit`` + 1 bytes, refusing anything else without
    blocking: opened with O_NONBLOCK, so a FIFO (which would wait for a writer for ever) or a device
    is refused on its ``fstat``, never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise PermissionError(f"{what}: cannot read {kind} file {path}: {exc.strerror}") from None
    chunks: list[bytes] = []
    try:
        st = os.fstat(fd)
        size = 0
        while stat.S_ISREG(st.st_mode) and size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise PermissionError(f"{what}: cannot read {kind} file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise PermissionError(f"{what}: {kind} file {path} is not a regular file")
    return st, b"".join(chunks)


def read_secret(path: Path, what: str) -> str:
    """Read a secret file, refusing one that others can read (it must be 0600 or stricter), and
    anything that is not a regular file (a FIFO would hang `run` and check-config alike)."""
    st, data = _read_regular(path, what, "secret", SECRET_LIMIT)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"{what}: secret file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )
    if len(data) > SECRET_LIMIT:
        raise PermissionError(f"{what}: secret file {path} is larger than {SECRET_LIMIT // 1024} kB")
    try:
        secret = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PermissionError(f"{what}: secret file {path} is not UTF-8 text") from None
    if not secret:
        raise PermissionError(f"{what}: secret file {path} is empty")
    return secret


def check_ca_file(path: Path, what: str) -> None:
    """A CA bundle TLS can load (PEM certificates), or PermissionError saying why not."""
    import ssl

    _read_regular(path, what, "CA", 0)  # a regular file, readable: not a FIFO that would block the load
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise PermissionError(f"{what}: CA file {path} holds no certificate TLS can load ({reason})") from None


# -- the files a config names: what `kelvinpi run` reads at start-up, checked by check-config too ----
@dataclass(frozen=True)
class FileRef:
    """One file the config names: its key as a person finds it, where it is in the file, what it is."""

    key: str  # e.g. notify[pager].url_file: the label read_secret puts at the head of its message
    loc: tuple  # the key path in the file, for its line
    path: Path
    secret: bool  # a 0600 secret (read_secret) or a CA bundle (readable)
    disables: str  # what `kelvinpi run` starts without when the file cannot be used


@dataclass(frozen=True)
class FileProblem:
    """A named file `kelvinpi run` could not use; ``message`` starts with the key."""

    ref: FileRef
    message: str


def referenced_files(cfg: Config) -> list[FileRef]:
    """Every secret and CA file the config names, where `kelvinpi run` would read it."""
    refs: list[FileRef] = []

    def add(key: str, loc: tuple, path: Path | None, disables: str, secret: bool = True) -> None:
        if path is not None:
            refs.append(FileRef(key, loc, path, secret, disables))

    if cfg.control.enabled:  # control reads its token only when enabled
        add("control.token_file", ("control", "token_file"), cfg.control.token_file, "instrument control")
    add("control.ack_pin_file", ("control", "ack_pin_file"), cfg.control.ack_pin_file, "acknowledging with the PIN")
    for i, inst in enumerate(cfg.instrument):
        add(
            f"instrument[{i}].credentials_file",
            ("instrument", i, "credentials_file"),
            inst.credentials_file,
            f"the mount of instrument {inst.name}'s share",
        )
    for i, u in enumerate(cfg.uplink):
        what = f"uplink {i} ({u.kind})"
        for key in ("secret_file", "password_file", "token_file", "ca_file"):
            add(f"uplink[{i}].{key}", ("uplink", i, key), getattr(u, key, None), what, secret=key != "ca_file")
    for j, t in enumerate(cfg.notify):
        what = f"notify target {t.name!r}"
        for key in ("url_file", "token_file", "password_file", "ca_file"):
            add(f"notify[{t.name}].{key}", ("notify", j, key), getattr(t, key, None), what, secret=key != "ca_file")
    return refs


def check_file(ref: FileRef) -> str | None:
    """The problem `kelvinpi run` would meet with this file (read_secret's own message), or None."""
    if not ref.secret:
        try:
            if ref.key.startswith("notify["):  # a mail target's STARTTLS loads it at each attempt
                check_ca_file(ref.path, ref.key)
            else:
                _read_regular(ref.path, ref.key, "CA", 0)
        except PermissionError as exc:
            return str(exc)
        return None
    try:
        value = read_secret(ref.path, ref.key)
    except PermissionError as exc:
        return str(exc)
    if ref.key.startswith("notify[") and ref.key.endswith(".url_file"):
        from . import httpsend  # the parse the sender uses (imported here: httpsend is not config's)

        try:
            httpsend.parse_url(value)
        except httpsend.BadURL as exc:
            return f"{ref.key}: {exc}"  # as notify's HttpSender refuses it
    if ref.key == "control.ack_pin_file" and not re.fullmatch(r"[0-9]{4,12}", value):
        return f"{ref.key}: the file must hold 4 to 12 digits"  # as web.alarms.AckPin refuses it
    return None


def file_problems(cfg: Config) -> list[FileProblem]:
    """Each named file that is missing, unreadable, readable by others or empty."""
    out = []
    for ref in referenced_files(cfg):
        msg = check_file(ref)
        if msg is not None:
            out.append(FileProblem(ref, msg))
    return out


def file_error(path: str | Path, problems: list[FileProblem]) -> ConfigError:
    """The problems as check-config prints them: each with the line of its key in the file."""
    try:
        lines = line_map(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        lines = {}
    return ConfigError(str(path), [(_locate(p.ref.loc, lines), "", p.message) for p in problems])
