"""First boot (and every boot): apply what the user wrote onto the SD card's FAT partition.

The FAT ``bootfs`` partition is the only one a lab can edit from any laptop. It may hold:

* ``kelvinpi.toml``: the appliance config. Validated; an invalid file leaves the last good
  config in place and its errors are written to ``<data>/config-error.txt`` (the front panel
  shows them). A valid one is copied to ``<data>/kelvinpi.toml``.
* ``hostname``, ``authorized_keys`` (for user ``kelvinpi``), ``timezone``, ``wifi.conf``
  (``ssid=``, ``psk=``, ``country=``).
* secrets: any ``*.secret``, ``*-secret``, ``*.pem``, ``*token*`` file -> ``<data>/secrets/`` with
  mode 0600, then deleted from the FAT (a card handed around must not leak them).
* Raspberry Pi Imager's cloud-init subset: ``user-data`` (hostname, timezone,
  users[].ssh_authorized_keys, for user ``kelvinpi`` whatever the name there) and ``network-config``
  (the first of wifis.<iface>.access-points; Imager writes the derived 64-hex-digit key as password).

Nothing here sets a password: root stays locked, SSH is key-only. Every input is treated as
hostile: size limits, no path components, no symlinks, strict character sets. The YAML files are
read with bounded structure too (``_BoundedLoader``: no aliases, at most ``MAX_NODES`` values
``MAX_DEPTH`` deep): a few hundred bytes of nested aliases expand to billions of values, and on a
Pi 3 that ended first boot in a MemoryError before the SSH key was installed, leaving a card
nobody could log in to. Nothing read from the card is formatted whole (``_short``).

Each piece (``authorized_keys`` first, then secrets, config, hostname, ...) is applied on its own:
whatever goes wrong in one, even a MemoryError, is named in ``firstboot-report.json`` and the rest
still applies; ``main`` installs the SSH keys (and writes a first report) before any other file
on the card is read, let alone kelvinpi.toml validated, and always leaves a report. A leading
byte-order mark (Notepad's "UTF-8 with BOM") is dropped from every file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE = 256 * 1024  # bytes: refused before it is read, let alone parsed
MAX_NODES = 10_000  # YAML values in one file; Imager's user-data has about 40
MAX_DEPTH = 32  # YAML nesting; Imager's goes 5 deep
HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
KEY_RE = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)"
    r"@openssh\.com) [A-Za-z0-9+/=]{20,}( [^\n\r]{0,200})?$"
)
TZ_RE = re.compile(r"^[A-Za-z]+(?:[/_+-][A-Za-z0-9_+-]+){0,3}$")
PSK_HEX_RE = re.compile(r"^[0-9A-Fa-f]{64}$")
SECRET_RE = re.compile(r"(\.secret$|-secret$|\.pem$|token)", re.I)


def _short(value: object, limit: int = 30) -> str:
    """A value read from the card, for a message: a scalar's repr cut to ``limit``, else only its type.

    Never ``str()``/``repr()`` of a list or mapping from the card: that formats all of it, and a
    structure that shares its parts (YAML aliases) can be billions of values long.
    """
    if isinstance(value, str):
        return repr(value[:limit])
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)[:limit]
    return f"a {type(value).__name__}"


def _why(exc: BaseException) -> str:
    """An exception for the report: its type and the start of its message (never raises)."""
    try:
        text = str(exc)[:200]
    except Exception:  # noqa: BLE001 - a message that cannot be formatted (MemoryError again) is left out
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Result:
    """What was applied, what was refused (and why): logged and shown on the front panel."""

    applied: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    hostname: str | None = None
    authorized_keys: list[str] = field(default_factory=list)
    wifi: dict | None = None
    timezone: str | None = None
    config_ok: bool | None = None


def _read(path: Path, result: Result) -> str | None:
    """Read a small regular file from the FAT as text (a leading byte-order mark dropped); refuse
    symlinks, devices and huge files."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        result.refused.append(f"{path.name}: not a regular file")
        return None
    if st.st_size > MAX_FILE:
        result.refused.append(f"{path.name}: {st.st_size} bytes is over the {MAX_FILE} byte limit")
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_FILE + 1)  # bounded even if the file grew after the lstat
    except OSError as exc:
        result.refused.append(f"{path.name}: cannot be read: {exc.strerror}")
        return None
    if len(raw) > MAX_FILE:
        result.refused.append(f"{path.name}: over the {MAX_FILE} byte limit")
        return None
    try:
        # Notepad's "UTF-8 with BOM" starts the file with U+FEFF: not part of a key, hostname or config
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        result.refused.append(f"{path.name}: not UTF-8 text")
        return None


def _hostname(value: str, source: str, result: Result) -> None:
    name = value.strip().lower()
    if HOSTNAME_RE.match(name):
        result.hostname = name
        result.applied.append(f"hostname {name} (from {source})")
    else:
        result.refused.append(f"{source}: {value.strip()[:40]!r} is not a valid hostname")


def _keys(lines: list[str], source: str, result: Result) -> None:
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if KEY_RE.match(line):
            if line not in result.authorized_keys:
                result.authorized_keys.append(line)
        else:
            result.refused.append(f"{source}: not an SSH public key line: {line[:30]!r}")
    if result.authorized_keys:
        result.applied.append(f"{len(result.authorized_keys)} SSH key(s) (from {source})")


def _timezone(value: str, source: str, result: Result) -> None:
    tz = value.strip()
    if TZ_RE.match(tz) and ".." not in tz:
        result.timezone = tz
        result.applied.append(f"timezone {tz}" + ("" if source == "timezone" else f" (from {source})"))
    else:
        result.refused.append(f"{source}: {tz[:40]!r} is not a zone name like Europe/Zurich")


def _wifi(ssid: str, psk: str, country: str, source: str, result: Result) -> None:
    if not (1 <= len(ssid.encode()) <= 32) or any(c in ssid for c in '"\n\r\\'):
        result.refused.append(f"{source}: Wi-Fi SSID must be 1-32 bytes without quotes or backslashes")
        return
    # Imager writes the derived key (64 hex digits, PBKDF2 of passphrase and SSID), not the passphrase
    if not (PSK_HEX_RE.match(psk) or (8 <= len(psk) <= 63 and not any(c in psk for c in '"\n\r\\'))):
        result.refused.append(
            f"{source}: Wi-Fi passphrase must be 8-63 characters without quotes or backslashes"
            " (or the 64 hex digit key)"
        )
        return
    if country and not re.match(r"^[A-Z]{2}$", country):
        result.refused.append(f"{source}: Wi-Fi country must be two capital letters, e.g. CH")
        return
    result.wifi = {"ssid": ssid, "psk": psk, "country": country or "00"}
    result.applied.append(f"Wi-Fi {ssid!r} (from {source})")


def _cloud_yaml(text: str) -> object:
    """Parse one of Imager's cloud-init files (YAML, so PyYAML: a declared dependency).

    Raises ValueError with the complaint; even an install that lacks PyYAML only refuses the file
    (the hostname, keys and Wi-Fi from the plain files are still applied).
    """
    try:
        import yaml
    except ImportError:
        raise ValueError("cannot be read: PyYAML is not installed (a dependency of kelvinpi)") from None
    if len(text.encode()) > MAX_FILE:
        raise ValueError(f"over the {MAX_FILE} byte limit")
    loader = _bounded_loader(yaml)(text)
    try:
        return loader.get_single_data()
    except _Unbounded as exc:
        raise ValueError(f"refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()


class _Unbounded(Exception):
    """A YAML file whose structure is over a limit (aliases, too many values, too deep)."""


def _bounded_loader(yaml):  # type: ignore[no-untyped-def]
    """PyYAML's SafeLoader that refuses aliases and counts values and depth while composing.

    Aliases are refused outright: Raspberry Pi Imager writes none, and they are what makes a
    390-byte file into 9^9 values (a "billion laughs"). The limits are checked before each node
    is built, so nothing over them is ever held in memory; the composer recurses per level, so
    the depth limit also keeps a ``[[[[...`` file from a RecursionError.
    """

    class BoundedLoader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.nodes = 0
            self.depth = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            event = self.peek_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                raise _Unbounded(
                    f"line {line}: YAML aliases (*{str(event.anchor)[:30]}) are not accepted (Imager writes none)"
                )
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise _Unbounded(f"line {line}: more than {MAX_NODES} YAML values")
            if self.depth >= MAX_DEPTH:
                raise _Unbounded(f"line {line}: nested more than {MAX_DEPTH} deep")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return BoundedLoader


def _user_data(doc: object, result: Result) -> None:
    """Imager's ``user-data``: ``hostname`` and ``users[].ssh_authorized_keys``; each part that is the
    wrong shape is refused by itself, so a bad ``users`` does not cost the hostname (or the reverse)."""
    if not isinstance(doc, dict):
        result.refused.append(f"user-data: not valid cloud-init: not a mapping (got {type(doc).__name__})")
        return
    hostname = doc.get("hostname")
    if hostname is not None:
        if not isinstance(hostname, str):
            result.refused.append(f"user-data: hostname must be a string (got {type(hostname).__name__})")
        elif result.hostname is None:
            _hostname(hostname, "user-data", result)
    users = doc.get("users")
    if users is None:
        users = []
    elif not isinstance(users, list):
        result.refused.append(f"user-data: users must be a list (got {type(users).__name__})")
        users = []
    keys: list[str] = []
    for i, user in enumerate(users):
        if user == "default":  # cloud-init's "the distribution's default user": nothing to apply
            continue
        if not isinstance(user, dict):
            result.refused.append(f"user-data: users[{i}] must be a mapping (got {type(user).__name__})")
            continue
        user_keys = user.get("ssh_authorized_keys")
        if user_keys is None:
            pass
        elif not isinstance(user_keys, list):
            result.refused.append(f"user-data: users[{i}].ssh_authorized_keys must be a list of keys")
        else:
            for key in user_keys:
                if isinstance(key, str):
                    keys.append(key)
                else:
                    result.refused.append(f"user-data: users[{i}].ssh_authorized_keys: not a key: {_short(key)}")
        if user.get("passwd") or user.get("plain_text_passwd") or user.get("hashed_passwd"):
            result.refused.append("user-data: passwords are ignored (SSH keys only)")
    timezone = doc.get("timezone")
    if timezone is not None and result.timezone is None:
        if isinstance(timezone, str):
            _timezone(timezone, "user-data", result)
        else:
            result.refused.append(f"user-data: timezone must be a string (got {_short(timezone)})")
    if doc.get("chpasswd"):
        result.refused.append("user-data: passwords are ignored (SSH keys only)")
    if keys:
        _keys(keys, "user-data", result)


def _network_config(doc: object, result: Result) -> None:
    """Imager's ``network-config`` (netplan v2): the first ``wifis.<iface>.access-points`` entry."""
    if doc is None:
        return
    network = doc.get("network", doc) if isinstance(doc, dict) else None
    if not isinstance(network, dict):
        result.refused.append("network-config: not valid: not a mapping")
        return
    wifis = network.get("wifis")
    if wifis is None:
        return
    if not isinstance(wifis, dict):
        result.refused.append("network-config: not valid: wifis must be a mapping of interfaces")
        return
    for iface, conf in wifis.items():
        if iface == "renderer" and isinstance(conf, str):
            continue  # netplan's renderer key, put among the interfaces by some generators
        aps = conf.get("access-points") if isinstance(conf, dict) else None
        if not isinstance(aps, dict) or not aps:
            result.refused.append(f"network-config: not valid: wifis.{iface}.access-points must be a mapping of SSIDs")
            return
        ssid, ap = next(iter(aps.items()))
        if isinstance(ssid, (int, float)) and not isinstance(ssid, bool):
            ssid = str(ssid)  # an all-digit SSID written unquoted
        if not isinstance(ssid, str):
            result.refused.append(f"network-config: not valid: wifis.{iface}.access-points: SSID {_short(ssid)}")
            return
        password = ap.get("password", "") if isinstance(ap, dict) else None
        if not isinstance(password, str):
            result.refused.append(
                f"network-config: not valid: wifis.{iface}.access-points: the password of"
                f" {ssid[:32]!r} must be a string (quote it)"
            )
            return
        country = conf.get("regulatory-domain", "") or ""
        if not isinstance(country, str):
            result.refused.append(f"network-config: regulatory-domain must be a string (got {_short(country)})")
            return
        _wifi(ssid, password, country, "network-config", result)
        return


def _secrets(boot: Path, secrets: Path, result: Result) -> None:
    """Move every secret off the FAT into ``secrets`` (0600), whatever else happens."""
    removed = False
    for p in sorted(boot.iterdir()) if boot.is_dir() else []:
        if SECRET_RE.search(p.name) and p.name not in ("kelvinpi.toml",):
            text = _read(p, result)
            if text is not None:
                if not re.match(r"^[A-Za-z0-9._-]{1,64}$", p.name):
                    result.refused.append(f"{p.name[:40]!r}: secret file names are letters, digits, . _ -")
                else:
                    target = secrets / p.name
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        f.write(text)
                        f.flush()
                        os.fsync(f.fileno())  # on the data partition for good before it leaves the FAT
                    os.chmod(target, 0o600)
                    result.applied.append(f"secret {p.name} -> {target}")
            try:
                p.unlink()  # even a refused secret leaves the FAT
                removed = True
            except OSError as exc:
                result.refused.append(f"{p.name}: could not remove from the FAT: {exc}")
    if removed:
        # vfat keeps the deletion in the page cache for up to 30 s: a power cut in that window
        # would leave the secret on the card. Write it out now.
        os.sync()


def _config(boot: Path, data: Path, validate, result: Result) -> None:  # type: ignore[no-untyped-def]
    """kelvinpi.toml: a valid one replaces the running config, an invalid one leaves it (and says why)."""
    text = _read(boot / "kelvinpi.toml", result)
    if text is None:
        return
    try:
        if validate is not None:
            validate(text, "kelvinpi.toml")
    except Exception as exc:  # the validator's message names key and line
        result.config_ok = False
        (data / "config-error.txt").write_text(f"{exc}\n", encoding="utf-8")
        result.refused.append("kelvinpi.toml: invalid, keeping the last good config")
    else:
        result.config_ok = True
        tmp = data / "kelvinpi.toml.new"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, data / "kelvinpi.toml")
        (data / "config-error.txt").unlink(missing_ok=True)
        result.applied.append("kelvinpi.toml")


def _wifi_conf(text: str, result: Result) -> None:
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    _wifi(kv.get("ssid", "").strip(), kv.get("psk", "").strip(), kv.get("country", "").strip(), "wifi.conf", result)


def _each(name: str, step: Callable[[], None], result: Result) -> None:
    """Run one piece of first boot; whatever it raises (a MemoryError too) is reported, not raised,
    so one bad file on the card costs only itself."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - the rest of the card still applies
        result.refused.append(f"{name}: not applied: {_why(exc)}")


def apply(  # type: ignore[no-untyped-def]
    boot: Path, data: Path, validate=None, result: Result | None = None, identity: Path | None = None
) -> Result:
    """Read ``boot`` (the FAT mount), write what is valid under ``data``; return a report.

    ``validate(text, source)`` checks a kelvinpi.toml and raises with a message (the appliance's
    own ``config.parse``); the OS-level settings (hostname, keys, Wi-Fi) are returned for the
    caller to apply to the system. ``result``, if given, is filled in place (so a caller keeps
    what was accepted even if this is cut short). The SSH keys come first; each piece is applied
    on its own (``_each``); plain files win over Imager's cloud-init files. With ``identity``, the
    keys of ``authorized_keys`` are installed there, and a first report written, before anything
    else is read: validating a large kelvinpi.toml takes a while, and a power cut or a stop during
    it must not leave the card without its key.
    """
    result = result if result is not None else Result()
    data.mkdir(parents=True, exist_ok=True)
    secrets = data / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    os.chmod(secrets, 0o700)

    def plain(name: str, use: Callable[[str], None]) -> Callable[[], None]:
        def step() -> None:
            if (t := _read(boot / name, result)) is not None:
                use(t)

        return step

    def cloud(name: str, use: Callable[[object, Result], None]) -> Callable[[], None]:
        def step() -> None:
            if name == "network-config" and result.wifi is not None:
                return  # wifi.conf wins
            if (t := _read(boot / name, result)) is not None:
                try:
                    doc = _cloud_yaml(t)
                except ValueError as exc:
                    result.refused.append(f"{name}: {exc}")
                    return
                use(doc, result)

        return step

    _each(
        "authorized_keys", plain("authorized_keys", lambda t: _keys(t.splitlines(), "authorized_keys", result)), result
    )
    if identity is not None:
        _each("authorized_keys (installing)", lambda: write_keys(result, identity), result)
        _each("firstboot-report.json", lambda: write_report(data, result), result)
    _each("secrets", lambda: _secrets(boot, secrets, result), result)  # then off the FAT, whatever else happens
    _each("kelvinpi.toml", lambda: _config(boot, data, validate, result), result)
    _each("hostname", plain("hostname", lambda t: _hostname(t, "hostname", result)), result)
    _each("timezone", plain("timezone", lambda t: _timezone(t, "timezone", result)), result)
    _each("wifi.conf", plain("wifi.conf", lambda t: _wifi_conf(t, result)), result)
    # Raspberry Pi Imager's cloud-init subset
    _each("user-data", cloud("user-data", _user_data), result)
    _each("network-config", cloud("network-config", _network_config), result)
    write_report(data, result)
    return result


def _durable(path: Path, text: str, mode: int) -> None:
    """``text`` into ``path`` whole (a temporary file renamed over it), on the disk before this returns:
    a power cut right after leaves the old file or the new one, never none or half of one."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_report(data: Path, result: Result) -> None:
    """``<data>/firstboot-report.json``: what was applied and what was refused, and why."""
    report = {"applied": result.applied, "refused": result.refused}
    _durable(data / "firstboot-report.json", json.dumps(report, indent=1), 0o644)


def write_keys(result: Result, identity: Path, user: str = "kelvinpi") -> None:
    """The accepted SSH keys into ``identity/authorized_keys/<user>`` (what sshd reads), on the disk."""
    identity.mkdir(parents=True, exist_ok=True)
    os.chmod(identity, 0o755)  # sshd reads authorized_keys/<user> below it as that user
    if result.authorized_keys:
        keys = identity / "authorized_keys"
        keys.mkdir(exist_ok=True)
        os.chmod(keys, 0o755)
        # public keys; sshd needs them owned by root or the user, not writable by others
        _durable(keys / user, "\n".join(result.authorized_keys) + "\n", 0o644)


def write_system(result: Result, identity: Path, user: str = "kelvinpi") -> None:
    """Write the accepted OS settings under ``identity`` (``/data/identity`` on the Pi), the SSH keys first.

    The root filesystem is read-only; the image points the system at these files:
    sshd's ``AuthorizedKeysFile /data/identity/authorized_keys/%u``, ``/etc/wpa_supplicant/
    wpa_supplicant-wlan0.conf`` -> ``/data/identity/wpa_supplicant-wlan0.conf``, and
    kelvinpi-apply-system sets the hostname from ``/data/identity/hostname`` at boot.
    """
    write_keys(result, identity, user)  # again: user-data may have added some
    if result.hostname:
        (identity / "hostname").write_text(result.hostname + "\n")
    if result.wifi:
        w = result.wifi
        psk = w["psk"] if PSK_HEX_RE.match(w["psk"]) else f'"{w["psk"]}"'  # a raw key is written unquoted
        conf = identity / "wpa_supplicant-wlan0.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                f"ctrl_interface=DIR=/run/wpa_supplicant\ncountry={w['country']}\n"
                f'network={{\n\tssid="{w["ssid"]}"\n\tpsk={psk}\n}}\n'
            )
    if result.timezone:
        (identity / "timezone").write_text(result.timezone + "\n")


def _validate(text: str, source: str) -> None:
    from .config import parse  # imported here: a broken install refuses the config, not the SSH key

    parse(text, source)


def main() -> int:
    """``python -m appliance.firstboot BOOT DATA``: run on the Pi by kelvinpi-firstboot.service.

    Nothing escapes without a report: whatever stops ``apply`` or ``write_system`` is added to the
    refusals, the accepted SSH keys are written in any case, and the report is written last.
    """
    import sys

    boot, data = Path(sys.argv[1]), Path(sys.argv[2])
    result = Result()
    try:
        apply(boot, data, validate=_validate, result=result, identity=data / "identity")
    except Exception as exc:  # noqa: BLE001 - e.g. the data partition cannot be written
        result.refused.append(f"first boot stopped early: {_why(exc)}")
    try:
        write_system(result, data / "identity")
    except Exception as exc:  # noqa: BLE001
        result.refused.append(f"identity: not written: {_why(exc)}")
    try:
        write_report(data, result)
    except Exception as exc:  # noqa: BLE001 - the journal still gets every line below
        result.refused.append(f"firstboot-report.json: not written: {_why(exc)}")
    for line in result.applied:
        print(f"<6>firstboot: applied {line}")
    for line in result.refused:
        print(f"<4>firstboot: refused {line}")
    shutil.disk_usage(data)  # the data partition is mounted (fails loudly otherwise)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
