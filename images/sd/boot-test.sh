#!/bin/bash
# Boot the built image under qemu-system-aarch64 -M virt and check it comes up polling.
#   boot-test.sh IMAGE.img
# Host side: the 372 emulator on 127.0.0.1 (the guest reaches it as 10.0.2.2 through qemu's user
# network) and the 240 emulator's pty attached to the guest as a PCI 16550 UART (/dev/ttyS0).
# The FAT gets what a user writes: kelvinpi.toml and a secret, and Raspberry Pi Imager's own
# cloud-init files (user-data with hostname, timezone and the SSH key; network-config with Wi-Fi,
# its password as the derived key, as Imager writes it). A mac80211_hwsim radio gives the guest a
# wlan0, so the Wi-Fi settings are checked where they act: wpa_supplicant@wlan0 runs on them.
# Devices get 300 s (not 90): under TCG on a loaded host udev took 80 s to find even ttyAMA0.
set -euo pipefail
IMG=$(readlink -f "${1:?image}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY="$ROOT/.venv/bin/python"
W=$(mktemp -d /tmp/kelvinpi-boot.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P372=$(free_port); PWEB=$(free_port); PSSH=$(free_port)
export MTOOLS_SKIP_CHECK=1
off=$(( $(sfdisk -J "$IMG" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"])') * 512 ))
kver=$(mdir -b -i "$IMG@@$off" ::/ | sed -n 's|^::/vmlinuz-||p' | head -1)
mcopy -o -i "$IMG@@$off" "::/vmlinuz-$kver" "$W/vmlinuz"; mcopy -o -i "$IMG@@$off" "::/initrd.img-$kver" "$W/initrd"
cp --sparse=always "$IMG" "$W/disk.img"; truncate -s 4G "$W/disk.img"   # a bigger card: the data partition grows
ssh-keygen -q -t ed25519 -N '' -f "$W/key"
cat > "$W/kelvinpi.toml" <<TOML
[[instrument]]
model = "372"
name = "LSA23JD"
transport = "tcp"
host = "10.0.2.2"
port = $P372
[[instrument]]
model = "240"
name = "LSA24AZ"
transport = "serial"
device = "/dev/ttyS0"
[store]
path = "/data/kelvinpi/kelvinpi.db"
[web]
bind = "0.0.0.0"
port = 8080
TOML
echo "test-secret-$RANDOM" > "$W/wamp-secret"
HOST=kelvinpi-imager SSID=KelvinLab COUNTRY=CH TZ_NAME=Europe/Zurich
PSK=$("$PY" -c 'import hashlib, sys; print(hashlib.pbkdf2_hmac("sha1", b"correct horse battery", sys.argv[1].encode(), 4096, 32).hex())' "$SSID")
# as Raspberry Pi Imager's cloud-init generator writes them (customization_generator.cpp)
cat > "$W/user-data" <<YAML
#cloud-config
hostname: $HOST
manage_etc_hosts: true
packages:
- avahi-daemon

apt:
  conf: |
    Acquire {
      Check-Date "false";
    };

timezone: $TZ_NAME
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
    - $(cat "$W/key.pub")
  sudo: ALL=(ALL) NOPASSWD:ALL
YAML
cat > "$W/network-config" <<YAML
network:
  version: 2
  wifis:
    wlan0:
      dhcp4: true
      regulatory-domain: "$COUNTRY"
      access-points:
        "$SSID":
          password: "$PSK"
      optional: true
YAML
printf 'instance_id: rpi-imager-%s\n' "$RANDOM" > "$W/meta-data"
for f in kelvinpi.toml wamp-secret user-data network-config meta-data; do mcopy -o -i "$W/disk.img@@$off" "$W/$f" "::/$f"; done

"$PY" -m appliance.cli emulate ls372 --listen "127.0.0.1:$P372" > "$W/ls372.log" 2>&1 & pids+=($!)
"$PY" -m appliance.cli emulate ls240 --serial-link "$W/ls240" > "$W/ls240.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do [ -e "$W/ls240" ] && break; sleep 0.2; done
start=$(date +%s.%N)
timeout 900 qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -accel tcg,thread=multi \
  -kernel "$W/vmlinuz" -initrd "$W/initrd" -append "root=LABEL=rootfs rw rootwait console=ttyAMA0 systemd.show_status=1 modules-load=mac80211_hwsim systemd.default_device_timeout_sec=300" \
  -drive if=none,file="$W/disk.img",format=raw,id=hd0 -device virtio-blk-pci,drive=hd0 \
  -netdev user,id=n0,hostfwd=tcp:127.0.0.1:$PWEB-:8080,hostfwd=tcp:127.0.0.1:$PSSH-:22 -device virtio-net-pci,netdev=n0,romfile= \
  -chardev serial,id=ls240,path="$(readlink -f "$W/ls240")" -device pci-serial,chardev=ls240 \
  -device i6300esb -device virtio-rng-pci -display none -serial file:"$W/console.log" -monitor none -no-reboot &
qemu=$!; pids+=($qemu)
ok=""
for _ in $(seq 600); do
  if curl -sf "http://127.0.0.1:$PWEB/api/v1/latest" -o "$W/latest.json" && "$PY" - "$W/latest.json" <<'PYEOF'
import json, sys
items = json.load(open(sys.argv[1]))
nodes = {i["field"].split("::")[0] for i in items if i["value"] is not None and i["age"] < 15}
sys.exit(0 if {"LSA23JD", "LSA24AZ"} <= nodes else 1)
PYEOF
  then ok=1; break; fi
  kill -0 "$qemu" 2>/dev/null || break
  sleep 1
done
t_panel=$("$PY" -c "print(round($(date +%s.%N) - $start, 1))")
[ -n "$ok" ] || { echo "FAIL: no live readings from both instruments on the front panel"; tail -50 "$W/console.log"; exit 1; }
echo "front panel shows live readings from both instruments ${t_panel} s after qemu started"
SSH="ssh -i $W/key -p $PSSH -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=20"
$SSH kelvinpi@127.0.0.1 'echo SSH-OK $(hostname); echo TZ $(date +%Z); echo WIFI $(systemctl is-active wpa_supplicant@wlan0) $(readlink -f /etc/wpa_supplicant/wpa_supplicant-wlan0.conf) $(stat -L -c "%a %U" /etc/wpa_supplicant/wpa_supplicant-wlan0.conf); systemctl is-system-running --wait; systemctl --failed --no-legend | wc -l; systemctl show -p ActiveState,StatusText kelvinpi; df -m --output=size /data | tail -1' | tee "$W/ssh.out"
grep -q "SSH-OK $HOST" "$W/ssh.out" || { echo "FAIL: ssh with the key from user-data, hostname $HOST from user-data"; exit 1; }
grep -Eq "^TZ CES?T$" "$W/ssh.out" || { echo "FAIL: timezone $TZ_NAME from user-data"; exit 1; }
grep -q "^WIFI active /data/identity/wpa_supplicant-wlan0.conf 600 root" "$W/ssh.out" || {
  echo "FAIL: wpa_supplicant@wlan0 not running on the Wi-Fi settings from network-config"; exit 1; }
grep -qx "running" "$W/ssh.out" || { echo "FAIL: system not running cleanly"; $SSH kelvinpi@127.0.0.1 systemctl --failed; exit 1; }
grep -q "ActiveState=active" "$W/ssh.out" || { echo "FAIL: kelvinpi not active (no READY)"; exit 1; }
data_mb=$(tail -1 "$W/ssh.out" | tr -d ' ')
[ "$data_mb" -gt 1000 ] || { echo "FAIL: data partition did not grow ($data_mb MB)"; exit 1; }
if ssh -p "$PSSH" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
     -o PreferredAuthentications=password,keyboard-interactive -o PubkeyAuthentication=no kelvinpi@127.0.0.1 true 2>/dev/null; then
  echo "FAIL: password login accepted"; exit 1; fi
kill "$qemu"; wait "$qemu" 2>/dev/null || true
if mdir -b -i "$W/disk.img@@$off" ::/ | grep -q wamp-secret; then echo "FAIL: the secret is still on the FAT"; exit 1; fi
# what firstboot wrote on the data partition, read from the card itself (the guest keeps it root-only)
doff=$(( $(sfdisk -J "$W/disk.img" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][2]["start"])') * 512 ))
dcat() { debugfs -R "cat $1" "$W/disk.img?offset=$doff" 2>/dev/null; }
dcat /identity/wpa_supplicant-wlan0.conf > "$W/wpa.conf"
grep -qx "country=$COUNTRY" "$W/wpa.conf" && grep -qx "	ssid=\"$SSID\"" "$W/wpa.conf" && grep -qx "	psk=$PSK" "$W/wpa.conf" || {
  echo "FAIL: the Wi-Fi settings from network-config are not what wpa_supplicant reads:"; cat "$W/wpa.conf"; exit 1; }
dcat /firstboot-report.json > "$W/report.json"
"$PY" - "$W/report.json" "$HOST" "$SSID" <<'PYEOF' || { echo "FAIL: firstboot report"; cat "$W/report.json"; exit 1; }
import json, sys
report, host, ssid = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
applied = report["applied"]
want = [f"hostname {host} (from user-data)", "1 SSH key(s) (from user-data)", f"Wi-Fi {ssid!r} (from network-config)"]
missing = [w for w in want if w not in applied]
print("firstboot applied:", "; ".join(applied), "| refused:", "; ".join(report["refused"]) or "nothing")
sys.exit(1 if missing or report["refused"] else 0)
PYEOF
echo "boot test passed: front panel live in ${t_panel} s, SSH with the key from Imager's user-data ok, hostname $HOST," \
     "timezone $TZ_NAME, wpa_supplicant@wlan0 running on network-config's Wi-Fi, password refused, secret gone from the FAT," \
     "data ${data_mb} MB"
