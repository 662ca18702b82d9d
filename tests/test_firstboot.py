"""First-boot handling of the FAT partition (a temp dir stands in for it): good, malformed, hostile."""

import json
import stat

import pytest

from appliance import config
from appliance.firstboot import apply, write_system

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0d3vKq1yZ4m8Xc0mW7hx2PjYw6G3n5Xh5FZt0Q3kqC lab@laptop"
GOOD_TOML = '[[instrument]]\nmodel = "372"\nname = "LSA23JD"\ntransport = "tcp"\nhost = "192.168.1.50"\n'


def validate(text, src):
    config.parse(text, src)


@pytest.fixture
def fat(tmp_path):
    d = tmp_path / "bootfs"
    d.mkdir()
    return d


def test_good_card(fat, tmp_path):
    (fat / "kelvinpi.toml").write_text(GOOD_TOML)
    (fat / "hostname").write_text("Fridge-1\n")
    (fat / "authorized_keys").write_text(f"# lab key\n{KEY}\n")
    (fat / "timezone").write_text("Europe/Zurich\n")
    (fat / "wifi.conf").write_text("ssid=LabNet\npsk=correct horse battery\ncountry=CH\n")
    (fat / "wamp-secret").write_text("s3cret&x\n")
    (fat / "router-cert.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    data = tmp_path / "data"
    r = apply(fat, data, validate)
    assert r.config_ok and (data / "kelvinpi.toml").read_text() == GOOD_TOML
    assert r.hostname == "fridge-1" and r.authorized_keys == [KEY] and r.timezone == "Europe/Zurich"
    assert r.wifi == {"ssid": "LabNet", "psk": "correct horse battery", "country": "CH"}
    for name in ("wamp-secret", "router-cert.pem"):
        moved = data / "secrets" / name
        assert moved.exists() and stat.S_IMODE(moved.stat().st_mode) == 0o600
        assert not (fat / name).exists()  # gone from the FAT
    assert stat.S_IMODE((data / "secrets").stat().st_mode) == 0o700
    ident = data / "identity"
    write_system(r, ident)
    assert (ident / "hostname").read_text() == "fridge-1\n"
    keys = ident / "authorized_keys/kelvinpi"
    assert keys.read_text() == KEY + "\n" and stat.S_IMODE(keys.stat().st_mode) == 0o644
    assert (ident / "timezone").read_text() == "Europe/Zurich\n"
    wpa = ident / "wpa_supplicant-wlan0.conf"
    assert 'ssid="LabNet"' in wpa.read_text() and stat.S_IMODE(wpa.stat().st_mode) == 0o600
    assert not r.refused
    assert json.loads((data / "firstboot-report.json").read_text())["applied"]


def test_invalid_config_keeps_last_good(fat, tmp_path):
    data = tmp_path / "data"
    (fat / "kelvinpi.toml").write_text(GOOD_TOML)
    apply(fat, data, validate)
    (fat / "kelvinpi.toml").write_text(GOOD_TOML.replace('"372"', '"340"'))
    r = apply(fat, data, validate)
    assert r.config_ok is False
    assert (data / "kelvinpi.toml").read_text() == GOOD_TOML  # the last good one still runs
    err = (data / "config-error.txt").read_text()
    assert "kelvinpi.toml:2: instrument[0].model" in err
    (fat / "kelvinpi.toml").write_text(GOOD_TOML)
    apply(fat, data, validate)
    assert not (data / "config-error.txt").exists()


def test_imager_cloud_init_subset(fat, tmp_path):
    (fat / "user-data").write_text(f"""#cloud-config
hostname: thermo-lab
users:
  - name: pi
    passwd: $6$hash
    ssh_authorized_keys:
      - {KEY}
""")
    (fat / "network-config").write_text("""network:
  version: 2
  wifis:
    wlan0:
      regulatory-domain: "DE"
      access-points:
        "Lab WiFi":
          password: "longenoughpass"
""")
    r = apply(fat, tmp_path / "data", validate)
    assert r.hostname == "thermo-lab" and r.authorized_keys == [KEY]
    assert r.wifi == {"ssid": "Lab WiFi", "psk": "longenoughpass", "country": "DE"}
    assert any("passwords are ignored" in x for x in r.refused)


@pytest.mark.parametrize(
    "name,content,complaint",
    [
        ("hostname", "bad host;rm -rf /\n", "not a valid hostname"),
        ("authorized_keys", 'command="sh" ssh-ed25519 AAAA\n', "not an SSH public key"),
        ("timezone", "../../etc/shadow", "not a zone name"),
        ("wifi.conf", 'ssid=Lab"Net\npsk=12345678\n', "SSID"),
        ("wifi.conf", "ssid=Lab\npsk=short\n", "passphrase"),
        ("user-data", "hostname: [unclosed", "user-data: not valid YAML"),
        ("kelvinpi.toml", "\xff\xfe", None),
    ],
)
def test_hostile_and_malformed_input_is_refused(fat, tmp_path, name, content, complaint):
    (fat / name).write_bytes(content.encode("latin-1") if name == "kelvinpi.toml" else content.encode())
    r = apply(fat, tmp_path / "data", validate)
    assert r.refused, r
    if complaint:
        assert any(complaint in x for x in r.refused), r.refused
    assert r.hostname is None and not r.authorized_keys and r.wifi is None and r.timezone is None


def test_symlinks_and_huge_files_are_refused(fat, tmp_path):
    (fat / "hostname").symlink_to("/etc/shadow")
    (fat / "authorized_keys").write_bytes(b"x" * (300 * 1024))
    (fat / "evil-secret").symlink_to("/etc/passwd")
    r = apply(fat, tmp_path / "data", validate)
    assert any("not a regular file" in x for x in r.refused)
    assert any("byte limit" in x for x in r.refused)
    assert not (tmp_path / "data/secrets/evil-secret").exists() and not (fat / "evil-secret").exists()


def test_malformed_user_data_is_refused_and_the_rest_applied(fat, tmp_path):
    """`users: 5` (a TypeError once) is refused by itself: the hostname beside it still applies."""
    (fat / "user-data").write_text("#cloud-config\nhostname: thermo-lab\nusers: 5\n")
    r = apply(fat, tmp_path / "data", validate)
    assert r.hostname == "thermo-lab"
    assert "user-data: users must be a list (got int)" in r.refused


def test_each_bad_user_is_refused_alone(fat, tmp_path):
    (fat / "user-data").write_text(f"""#cloud-config
hostname: 5
users:
  - default
  - 5
  - name: a
    ssh_authorized_keys: {KEY}
  - name: b
    ssh_authorized_keys:
      - {KEY}
      - 7
""")
    r = apply(fat, tmp_path / "data", validate)
    assert r.authorized_keys == [KEY] and r.hostname is None
    assert "user-data: hostname must be a string (got int)" in r.refused
    assert "user-data: users[1] must be a mapping (got int)" in r.refused
    assert "user-data: users[2].ssh_authorized_keys must be a list of keys" in r.refused
    assert any(x.startswith("user-data: users[3].ssh_authorized_keys: not a key: 7") for x in r.refused), r.refused


@pytest.mark.parametrize(
    "user_data,complaint",
    [
        ("- a list\n", "user-data: not valid cloud-init: not a mapping (got list)"),
        ("just text\n", "user-data: not valid cloud-init: not a mapping (got str)"),
    ],
)
def test_user_data_that_is_not_a_mapping(fat, tmp_path, user_data, complaint):
    (fat / "user-data").write_text(user_data)
    (fat / "hostname").write_text("fridge-2\n")
    r = apply(fat, tmp_path / "data", validate)
    assert complaint in r.refused and r.hostname == "fridge-2"


@pytest.mark.parametrize(
    "network_config",
    [
        "network: 5\n",
        "network:\n  wifis: 5\n",
        "network:\n  wifis:\n    wlan0: 5\n",
        "network:\n  wifis:\n    wlan0:\n      access-points: [LabNet]\n",
        "network:\n  wifis:\n    wlan0:\n      access-points:\n        LabNet:\n          password: 12345678\n",
        "network:\n  wifis:\n    wlan0:\n      access-points:\n        LabNet: [x]\n",
        "network: [unclosed\n",
    ],
)
def test_malformed_network_config_is_refused(fat, tmp_path, network_config):
    (fat / "network-config").write_text(network_config)
    (fat / "user-data").write_text(f"hostname: thermo-lab\nusers:\n  - ssh_authorized_keys: [{KEY}]\n")
    r = apply(fat, tmp_path / "data", validate)
    assert r.wifi is None and any(x.startswith("network-config: ") for x in r.refused), r.refused
    assert r.hostname == "thermo-lab" and r.authorized_keys == [KEY]


def test_firstboot_main_survives_a_malformed_card(fat, tmp_path):
    """What kelvinpi-firstboot.service runs: exit 0, keys and hostname written, the refusal logged."""
    import subprocess
    import sys

    (fat / "user-data").write_text("hostname: thermo-lab\nusers: 5\n")
    (fat / "authorized_keys").write_text(KEY + "\n")
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.firstboot", str(fat), str(data)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "<4>firstboot: refused user-data: users must be a list (got int)" in proc.stdout
    assert (data / "identity/hostname").read_text() == "thermo-lab\n"
    assert (data / "identity/authorized_keys/kelvinpi").read_text() == KEY + "\n"


def imager_card(
    fat,
    key: str,
    hostname: str = "thermo-lab",
    ssid: str = "Lab WiFi",
    passphrase: str = "correct horse battery",
    country: str = "CH",
) -> str:
    """Write user-data and network-config as Raspberry Pi Imager's cloud-init generator does
    (customization_generator.cpp): the Wi-Fi password is the derived key, not the passphrase."""
    import hashlib

    psk = hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()
    (fat / "user-data").write_text(f"""#cloud-config
hostname: {hostname}
manage_etc_hosts: true
packages:
- avahi-daemon
apt:
  conf: |
    Acquire {{
      Check-Date "false";
    }};
timezone: Europe/Zurich
keyboard:
  model: pc105
  layout: "ch"
enable_ssh: true
users:
- name: lab
  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo
  shell: /bin/bash
  lock_passwd: true
  ssh_authorized_keys:
    - {key}
  sudo: ALL=(ALL) NOPASSWD:ALL
""")
    (fat / "network-config").write_text(f"""network:
  version: 2
  wifis:
    renderer: networkd
    wlan0:
      dhcp4: true
      regulatory-domain: "{country}"
      access-points:
        "{ssid}":
          password: "{psk}"
      optional: true
""")
    (fat / "meta-data").write_text("instance_id: rpi-imager-1\n")
    return psk


def test_a_card_written_by_raspberry_pi_imager(fat, tmp_path):
    """Key, hostname, timezone and Wi-Fi (as the derived key) from Imager's files; nothing refused."""
    psk = imager_card(fat, KEY)
    data = tmp_path / "data"
    r = apply(fat, data, validate)
    assert r.refused == []
    assert r.hostname == "thermo-lab" and r.authorized_keys == [KEY] and r.timezone == "Europe/Zurich"
    assert r.wifi == {"ssid": "Lab WiFi", "psk": psk, "country": "CH"}
    write_system(r, data / "identity")
    wpa = (data / "identity/wpa_supplicant-wlan0.conf").read_text()
    assert f"\n\tpsk={psk}\n" in wpa and 'ssid="Lab WiFi"' in wpa and "country=CH" in wpa  # a key is unquoted


def billion_laughs(last: str) -> str:
    """A "billion laughs" in YAML: nine levels of nine aliases, 9^9 (387 million) strings once expanded."""
    lines = ["#cloud-config", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for n in "bcdefghi":
        lines.append(f"{n}: &{n} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = n
    return "\n".join(lines) + "\n" + last.replace("BOMB", f"*{prev}")


PI3_MEMORY = 1 << 30  # bytes of address space: a Pi 3 has 1 GiB of RAM


def _pi3_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (PI3_MEMORY, PI3_MEMORY))


@pytest.mark.parametrize(
    "name,content,complaint",
    [
        # 406 bytes; on main: MemoryError formatting the timezone, no key, no report
        (
            "user-data",
            billion_laughs("timezone: BOMB\nusers: [{ssh_authorized_keys: [BOMB]}]\n"),
            "user-data: refused: line 3: YAML aliases (*a) are not accepted (Imager writes none)",
        ),
        (
            "user-data",
            "#cloud-config\n" + "# padding\n" * 30_000 + "hostname: other\n",
            "user-data: 300030 bytes is over the 262144 byte limit",
        ),
        (
            "network-config",
            billion_laughs(
                "network:\n  wifis:\n    wlan0:\n      regulatory-domain: BOMB\n"
                "      access-points: {LabNet: {password: longenoughpass}}\n"
            ),
            "network-config: refused: line 3: YAML aliases (*a) are not accepted (Imager writes none)",
        ),
        (
            "user-data",
            "users: " + "[" * 50_000 + "]" * 50_000 + "\n",
            "user-data: refused: line 1: nested more than 32 deep",
        ),
    ],
    ids=["yaml-bomb", "oversized", "aliased-network-config", "deep-nesting"],
)
def test_a_hostile_cloud_init_file_cannot_lock_the_owner_out(fat, tmp_path, name, content, complaint):
    """Under a Pi 3's memory, what kelvinpi-firstboot.service runs installs the SSH key and the
    hostname beside the hostile file, exits 0 and writes a report naming what it refused."""
    import subprocess
    import sys

    (fat / name).write_text(content)
    (fat / "authorized_keys").write_text(KEY + "\n")
    (fat / "hostname").write_text("fridge-3\n")
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.firstboot", str(fat), str(data)],
        capture_output=True,
        text=True,
        timeout=100,
        preexec_fn=_pi3_memory,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (data / "identity/authorized_keys/kelvinpi").read_text() == KEY + "\n"
    assert (data / "identity/hostname").read_text() == "fridge-3\n"
    report = json.loads((data / "firstboot-report.json").read_text())
    assert any(x.startswith(complaint) for x in report["refused"]), report
    assert f"<4>firstboot: refused {complaint}" in proc.stdout


def test_yaml_with_too_many_values_is_refused(fat, tmp_path):
    (fat / "user-data").write_text(
        "#cloud-config\npackages: [" + ",".join(["x"] * 20_000) + "]\nhostname: thermo-lab\n"
    )
    (fat / "authorized_keys").write_text(KEY + "\n")
    r = apply(fat, tmp_path / "data", validate)
    assert r.authorized_keys == [KEY] and r.hostname is None
    assert any(x.startswith("user-data: refused: line 2: more than 10000 YAML values") for x in r.refused), r.refused


def test_a_failing_piece_is_reported_and_the_rest_applies(fat, tmp_path):
    """A secret that cannot be written (a directory in its place) costs only itself: the key, the
    hostname and the config still apply, and the report says what failed. On main: IsADirectoryError."""
    data = tmp_path / "data"
    (data / "secrets/wamp-secret").mkdir(parents=True)
    (fat / "wamp-secret").write_text("s3cret\n")
    (fat / "kelvinpi.toml").write_text(GOOD_TOML)
    (fat / "authorized_keys").write_text(KEY + "\n")
    (fat / "hostname").write_text("fridge-4\n")
    r = apply(fat, data, validate)
    assert r.authorized_keys == [KEY] and r.hostname == "fridge-4" and r.config_ok is True
    assert any(x.startswith("secrets: not applied: IsADirectoryError") for x in r.refused), r.refused
    report = json.loads((data / "firstboot-report.json").read_text())
    assert report["refused"] == r.refused


def test_the_key_is_installed_before_the_config_is_validated(fat, tmp_path):
    """A power cut (SIGKILL) while kelvinpi.toml is being validated: the SSH key is installed already and
    a report says so. The validator here blocks, standing in for a large file (a 219 KB one took about 9
    minutes of a Pi's CPU); it marks when it starts, and the process is killed then. On main: no key."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (fat / "authorized_keys").write_text(KEY + "\n")
    (fat / "kelvinpi.toml").write_text('[[instrument]]\nmodel = "372"\n')
    data = tmp_path / "data"
    started = tmp_path / "validating"
    code = (
        "import sys, time, pathlib, appliance.firstboot as f\n"
        f"def slow(text, source):\n    pathlib.Path({str(started)!r}).touch()\n    time.sleep(60)\n"
        "f._validate = slow\n"
        f"sys.argv = ['firstboot', {str(fat)!r}, {str(data)!r}]\n"
        "f.main()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "validation never started"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert (data / "identity/authorized_keys/kelvinpi").read_text() == KEY + "\n"
    report = json.loads((data / "firstboot-report.json").read_text())
    assert any("ssh key" in a.lower() or "authorized_keys" in a for a in report["applied"]), report


BOM = "\ufeff"  # Notepad's "UTF-8 with BOM"


@pytest.mark.parametrize(
    "name,content",
    [
        ("authorized_keys", KEY + "\r\n"),
        ("hostname", "fridge-2\r\n"),
        ("wifi.conf", "ssid=LabNet\r\npsk=correct horse battery\r\ncountry=CH\r\n"),
        ("kelvinpi.toml", GOOD_TOML),
        ("timezone", "Europe/Zurich\r\n"),
        ("user-data", "#cloud-config\nhostname: fridge-2\n"),
        ("wamp-secret", "s3cret&x\n"),
    ],
    ids=["authorized_keys", "hostname", "wifi.conf", "kelvinpi.toml", "timezone", "user-data", "secret"],
)
def test_a_byte_order_mark_is_not_part_of_the_file(fat, tmp_path, name, content):
    """A file saved by Notepad as "UTF-8 with BOM" applies as the same file without it (on main the key,
    wifi.conf, hostname and kelvinpi.toml were all refused)."""
    (fat / name).write_text(BOM + content, encoding="utf-8", newline="")
    data = tmp_path / "data"
    r = apply(fat, data, validate)
    assert not r.refused, r.refused
    if name == "authorized_keys":
        assert r.authorized_keys == [KEY]
    elif name in ("hostname", "user-data"):
        assert r.hostname == "fridge-2"
    elif name == "wifi.conf":
        assert r.wifi == {"ssid": "LabNet", "psk": "correct horse battery", "country": "CH"}
    elif name == "kelvinpi.toml":
        assert r.config_ok and (data / "kelvinpi.toml").read_text() == GOOD_TOML
    elif name == "timezone":
        assert r.timezone == "Europe/Zurich"
    else:
        assert (data / "secrets" / name).read_text() == content


@pytest.mark.parametrize(
    "value,said",
    [
        ("[" * 5000 + "]" * 5000, "kelvinpi.toml:6: arrays or inline tables nested"),
        ("1" * 5000, "kelvinpi.toml:6: an integer of 5000 digits"),
    ],
    ids=["deep-nesting", "long-integer"],
)
def test_an_unreadable_config_is_reported_with_its_line(fat, tmp_path, value, said):
    """config-error.txt (what the front panel shows) names the line, not "maximum recursion depth exceeded"."""
    (fat / "kelvinpi.toml").write_text(GOOD_TOML + f"x = {value}\n")
    data = tmp_path / "data"
    r = apply(fat, data, validate)
    assert r.config_ok is False
    assert (data / "config-error.txt").read_text().startswith(said)
