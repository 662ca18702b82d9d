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


@pytest.mark.parametrize("name,content,complaint", [
    ("hostname", "bad host;rm -rf /\n", "not a valid hostname"),
    ("authorized_keys", "command=\"sh\" ssh-ed25519 AAAA\n", "not an SSH public key"),
    ("timezone", "../../etc/shadow", "not a zone name"),
    ("wifi.conf", 'ssid=Lab"Net\npsk=12345678\n', "SSID"),
    ("wifi.conf", "ssid=Lab\npsk=short\n", "passphrase"),
    ("user-data", "hostname: [unclosed", "not valid cloud-init YAML"),
    ("kelvinpi.toml", "\xff\xfe", None),
])
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
