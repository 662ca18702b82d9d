#!/bin/bash
# Boot the built image under qemu-system-aarch64 -M virt and check it comes up polling.
#   boot-test.sh IMAGE.img
# Host side: the 372 emulator on 127.0.0.1 (the guest reaches it as 10.0.2.2 through qemu's user
# network) and the 240 emulator's pty attached to the guest as a PCI 16550 UART (/dev/ttyS0).
# The card is the A/B image (images/sd/layout.env): this script stands in for the Pi firmware's slot
# choice only, as update-test.py does: it reads autoboot.txt on the config FAT (p1), takes the kernel,
# initramfs and cmdline.txt from the boot slot it names (p2, slot A: root=PARTUUID=<disk>-05), and puts
# the firmware's /chosen/bootloader node into qemu virt's device tree.
# The config FAT gets what a user writes: kelvinpi.toml and a secret, and Raspberry Pi Imager's own
# cloud-init files (user-data with hostname, timezone and the SSH key; network-config with Wi-Fi,
# its password as the derived key, as Imager writes it). A mac80211_hwsim radio gives the guest a
# wlan0, so the Wi-Fi settings are checked where they act: wpa_supplicant@wlan0 runs on them.
# Devices get 300 s (not 90): under TCG on a loaded host udev took 80 s to find even ttyAMA0.
set -euo pipefail
IMG=$(readlink -f "${1:?image}")
[ -f "$IMG" ] || { echo "boot-test: no image at $1" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY="$ROOT/.venv/bin/python"
# shellcheck source=layout.env
. "$HERE/layout.env"
for tool in qemu-system-aarch64 dtc mcopy mdir sfdisk debugfs e2fsck curl ssh ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "boot-test: missing $tool" >&2; exit 2; }
done
W=$(mktemp -d /tmp/kelvinpi-boot.XXXXXX)
pids=()
KEEP_W=""   # set by fail(): the console and qemu logs are the evidence
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "$KEEP_W" ] || rm -rf "$W"; }
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P372=$(free_port); PWEB=$(free_port); PSSH=$(free_port)
export MTOOLS_SKIP_CHECK=1
# "START SIZE" (bytes) of partition N, by its number (p4 is the extended one: p5-p7 live inside it)
part() { sfdisk -J "$1" | "$PY" -c '
import json, re, sys
path, n = sys.argv[1], int(sys.argv[2])
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    if int(re.search(r"(\d+)$", p["node"][len(path):])[1]) == n:
        print(p["start"] * 512, p["size"] * 512)
        break
else:
    sys.exit(f"boot-test: {path} has no partition {n}")' "$1" "$2"; }
early_fail() { echo "FAIL: $*"; rm -rf "$W"; exit 1; }   # before the guest runs: nothing to keep
cp --sparse=always "$IMG" "$W/disk.img"; truncate -s 6G "$W/disk.img"   # a bigger card: the data partition (p7, ~3.1 GiB in) grows to ~2.9 GiB
read -r off _ < <(part "$W/disk.img" "$CONFIG_PART")
# The firmware's part: autoboot.txt's boot_partition ([all]; no tryboot on this power-on), then that
# slot's config.txt (kernel=, initramfs) and cmdline.txt
mcopy -o -i "$W/disk.img@@$off" ::/autoboot.txt "$W/autoboot.txt" ||
  early_fail "no autoboot.txt on the config FAT (p$CONFIG_PART)"
bpart=$(awk -F= 'BEGIN {s="[all]"} /^\[/ {s=tolower($0)} s=="[all]" && $1=="boot_partition" {print $2}' "$W/autoboot.txt" | tr -d ' \r' | tail -1)
[ "$bpart" = "$BOOT_A_PART" ] || early_fail "autoboot.txt boots partition '${bpart}', not slot A's p$BOOT_A_PART: $(cat "$W/autoboot.txt")"
read -r boff _ < <(part "$W/disk.img" "$bpart")
mcopy -o -i "$W/disk.img@@$boff" ::/config.txt "$W/config.txt"; mcopy -o -i "$W/disk.img@@$boff" ::/cmdline.txt "$W/cmdline.txt"
kname=$(sed -n 's/^kernel=\(.*\)/\1/p' "$W/config.txt" | tr -d ' \r' | tail -1)
iname=$(sed -n 's/^initramfs[[:space:]]\+\([^[:space:]]*\).*/\1/p' "$W/config.txt" | tail -1)
mcopy -o -i "$W/disk.img@@$boff" "::/${kname:-kernel8.img}" "$W/vmlinuz" && mcopy -o -i "$W/disk.img@@$boff" "::/$iname" "$W/initrd" ||
  early_fail "boot slot p$bpart lacks the kernel '$kname' or initramfs '$iname' its config.txt names"
cmdline=$(tr -d '\r\n' < "$W/cmdline.txt")
[[ "$cmdline" == *"root=PARTUUID=$DISK_ID-0$ROOT_A_PART "* ]] ||
  early_fail "slot A's cmdline.txt does not root at PARTUUID=$DISK_ID-0$ROOT_A_PART: $cmdline"
# qemu virt's own device tree plus the node the Pi firmware adds (rauc-tryboot reads it)
qemu-system-aarch64 -M "virt,dumpdtb=$W/virt.dtb" -cpu cortex-a72 -smp 2 -m 1024 -nic none -display none > /dev/null 2>&1
{ dtc -q -I dtb -O dts "$W/virt.dtb"
  printf '\n/ {\n\tchosen {\n\t\tbootloader {\n\t\t\tpartition = <%s>;\n\t\t\ttryboot = <0>;\n\t\t};\n\t};\n};\n' "$bpart"
} | dtc -q -I dts -O dtb -o "$W/boot.dtb"
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
if [ -n "${BOOT_TEST_PLAN_ONLY:-}" ]; then   # the firmware's choice and the card as written, without booting (tests)
  echo "plan: boot partition $bpart, kernel $kname ($(stat -c %s "$W/vmlinuz") bytes), initramfs $iname ($(stat -c %s "$W/initrd") bytes)"
  echo "plan: cmdline $cmdline"
  echo "plan: config FAT p$CONFIG_PART holds $(mdir -b -i "$W/disk.img@@$off" ::/ | sed 's|^::/||' | sort | tr '\n' ' ')"
  echo "plan: data p$DATA_PART at $(part "$W/disk.img" "$DATA_PART")"
  rm -rf "$W"; exit 0
fi

"$PY" -m appliance.cli emulate ls372 --listen "127.0.0.1:$P372" > "$W/ls372.log" 2>&1 & pids+=($!)
"$PY" -m appliance.cli emulate ls240 --serial-link "$W/ls240" > "$W/ls240.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do [ -e "$W/ls240" ] && break; sleep 0.2; done
# What the guest printed and why qemu stopped are the evidence when a boot fails: keep both.
diagnose() {
  echo "--- console lines that tell (timeouts, failures, watchdog, resets; $W/console.log):"
  grep -naE "timed out|Timed out|FAILED|Failed to start|Dependency failed|emergency|watchdog|Watchdog|reboot|Reboot|Kernel panic|Oops|BUG:|Reached target" \
    "$W/console.log" | tail -40
  echo "--- last console lines:"; tail -25 "$W/console.log"
  echo "--- qemu ($W/qemu.log):"; cat "$W/qemu.log"
}
fail() { echo "FAIL: $*"; KEEP_W=1; diagnose; exit 1; }
elapsed() { "$PY" -c "print(round($(date +%s.%N) - $start, 1))"; }
start=$(date +%s.%N)
# Test VM only: under TCG on a loaded 2-core host PID 1 can stall longer than the image's 15 s
# RuntimeWatchdogSec, and the emulated i6300esb then resets the guest: with -no-reboot qemu just
# exits, the console shows no reason. So the VM's watchdog gets 60 s (still armed, checked below)
# and fires into qemu's log (-action watchdog=debug) instead of resetting: a fire fails the test by name.
TEST_WATCHDOG_SEC=${TEST_WATCHDOG_SEC:-60}
timeout 900 qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -accel tcg,thread=multi \
  -kernel "$W/vmlinuz" -initrd "$W/initrd" -dtb "$W/boot.dtb" \
  -append "$cmdline console=ttyAMA0 systemd.show_status=1 modules-load=mac80211_hwsim systemd.default_device_timeout_sec=300 systemd.watchdog_sec=$TEST_WATCHDOG_SEC" \
  -drive if=none,file="$W/disk.img",format=raw,id=hd0 -device virtio-blk-pci,drive=hd0 \
  -netdev user,id=n0,hostfwd=tcp:127.0.0.1:$PWEB-:8080,hostfwd=tcp:127.0.0.1:$PSSH-:22 -device virtio-net-pci,netdev=n0,romfile= \
  -chardev serial,id=ls240,path="$(readlink -f "$W/ls240")" -device pci-serial,chardev=ls240 \
  -device i6300esb -device virtio-rng-pci -display none -serial file:"$W/console.log" -monitor none -no-reboot -action watchdog=debug \
  > "$W/qemu.log" 2>&1 &
qemu=$!; pids+=($qemu)
ok=""
for _ in $(seq 2400); do   # 600 s at a quarter second a look (a loaded host took 189-205 s)
  if curl -sf "http://127.0.0.1:$PWEB/api/v1/latest" -o "$W/latest.json" && "$PY" - "$W/latest.json" <<'PYEOF'
import json, sys
items = json.load(open(sys.argv[1]))
nodes = {i["field"].split("::")[0] for i in items if i["value"] is not None and i["age"] < 15}
sys.exit(0 if {"LSA23JD", "LSA24AZ"} <= nodes else 1)
PYEOF
  then ok=1; break; fi
  if ! kill -0 "$qemu" 2>/dev/null; then
    rc=0; wait "$qemu" || rc=$?
    fail "qemu exited $(elapsed) s after start (status $rc) before the appliance answered: the guest reset or" \
         "powered off (-no-reboot turns a reset into an exit; a watchdog reset shows no shutdown lines)"
  fi
  sleep 0.25   # the panel's moment to a quarter second, as update-test.py reads it
done
t_panel=$(elapsed)
[ -n "$ok" ] || fail "no live readings from both instruments on the front panel (http://127.0.0.1:$PWEB/api/v1/latest) after ${t_panel} s"
echo "front panel shows live readings from both instruments ${t_panel} s after qemu started"

SSH="ssh -i $W/key -p $PSSH -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=20"
# The key is the one user-data lists for Imager's user; the appliance's login user is kelvinpi (firstboot.py).
$SSH kelvinpi@127.0.0.1 'echo "USER $(id -un)"; echo "HOST $(uname -n)"
  echo "LOCALTIME $(readlink -f /etc/localtime)"; echo "TZ $(date +%Z)"; echo "TZUTC $(TZ=UTC date +%Z)"
  echo "WIFI $(systemctl is-active wpa_supplicant@wlan0) $(readlink -f /etc/wpa_supplicant/wpa_supplicant-wlan0.conf) $(stat -L -c "%a %U" /etc/wpa_supplicant/wpa_supplicant-wlan0.conf)"
  echo "TZCTL $(timedatectl show -p Timezone --value)"
  echo "STATE $(systemctl is-system-running --wait)"; echo "BOOT $(systemd-analyze | head -1)"
  echo "FAILED $(systemctl --failed --no-legend --plain | cut -d" " -f1 | tr "\n" " ")"
  echo "WDOG $(systemctl show -p RuntimeWatchdogUSec --value) $(cat /sys/class/watchdog/watchdog0/identity 2>/dev/null)"
  echo "KELVINPI $(systemctl show -p ActiveState --value kelvinpi) $(systemctl show -p StatusText --value kelvinpi)"
  echo "DATA $(df -m --output=size /data | tail -1 | tr -d " ")"
  echo "SLOWEST $(systemd-analyze blame --no-pager | head -4 | tr -s " " | tr "\n" ";")"' > "$W/ssh.out" 2> "$W/ssh.err" ||
  fail "SSH as kelvinpi with the key from user-data's users[].ssh_authorized_keys did not log in: $(tail -3 "$W/ssh.err")"
cat "$W/ssh.out"
# What the boot waited on, for the README's "Size and boot time" (printed, not checked)
$SSH kelvinpi@127.0.0.1 'systemd-analyze critical-chain --no-pager kelvinpi.service; systemd-analyze blame --no-pager | head -15' \
  > "$W/chain.txt" 2>&1 || true
echo "--- systemd-analyze critical-chain kelvinpi.service, blame:"; cat "$W/chain.txt"
field() { sed -n "s/^$1 //p" "$W/ssh.out"; }
[ "$(field HOST)" = "$HOST" ] || fail "hostname is '$(field HOST)', not '$HOST' from user-data"
[ "$(field LOCALTIME)" = "/usr/share/zoneinfo/$TZ_NAME" ] || fail "/etc/localtime is $(field LOCALTIME), not $TZ_NAME from user-data"
[[ "$(field TZ)" =~ ^CES?T$ ]] || fail "local time zone is '$(field TZ)', not $TZ_NAME's CET/CEST (user-data)"
[ "$(field TZCTL)" = "$TZ_NAME" ] || fail "timedatectl says the zone is '$(field TZCTL)', not $TZ_NAME from user-data"
[ "$(field TZUTC)" = UTC ] || fail "TZ=UTC gives '$(field TZUTC)': setting $TZ_NAME changed the UTC zone itself"
[ "$(field WIFI)" = "active /data/identity/wpa_supplicant-wlan0.conf 600 root" ] ||
  fail "wpa_supplicant@wlan0 not running on the Wi-Fi settings from network-config (active, config, mode owner: $(field WIFI))"
[ "$(field STATE)" = running ] && [ -z "$(field FAILED | tr -d ' ')" ] ||
  fail "system $(field STATE), failed units: $(field FAILED)"
[[ "$(field WDOG)" =~ ^[1-9].*\ i6300ESB ]] || fail "systemd does not drive the hardware watchdog (RuntimeWatchdogUSec, device: '$(field WDOG)')"
[[ "$(field KELVINPI)" =~ ^active ]] || fail "kelvinpi not active (no READY): $(field KELVINPI)"
if grep -q "timer fired" "$W/qemu.log"; then fail "the hardware watchdog fired: PID 1 did not ping it for ${TEST_WATCHDOG_SEC} s (a hang, or a host too loaded for emulation)"; fi
data_mb=$(field DATA)
[ "${data_mb:-0}" -gt 2000 ] || fail "data partition did not grow to the 6 GiB card's end ($data_mb MB)"
if ssh -p "$PSSH" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
     -o PreferredAuthentications=password,keyboard-interactive -o PubkeyAuthentication=no kelvinpi@127.0.0.1 true 2>/dev/null; then
  fail "password login accepted"; fi
kill "$qemu"; wait "$qemu" 2>/dev/null || true
if mdir -b -i "$W/disk.img@@$off" ::/ | grep -q wamp-secret; then fail "the secret is still on the config FAT"; fi
# What firstboot wrote on the data partition, read from the card itself (the guest keeps it root-only).
# qemu was killed, as a Pi is unplugged: replay the journal first, as the next boot would (debugfs
# does not, and refuses the half-checkpointed bitmaps).
read -r dstart dsize < <(part "$W/disk.img" "$DATA_PART")
dd if="$W/disk.img" of="$W/data.ext4" bs=4M iflag=skip_bytes,count_bytes skip="$dstart" count="$dsize" conv=sparse status=none
rc=0; e2fsck -fy "$W/data.ext4" > "$W/e2fsck.log" 2>&1 || rc=$?
[ "$rc" -lt 4 ] || fail "the data partition does not check clean after the power cut (e2fsck $rc): $(tail -5 "$W/e2fsck.log")"
dcat() { debugfs -R "cat $1" "$W/data.ext4" 2>/dev/null; }
dcat /identity/wpa_supplicant-wlan0.conf > "$W/wpa.conf"
echo "--- /data/identity/wpa_supplicant-wlan0.conf (psk elided):"; sed 's/psk=.*/psk=…/' "$W/wpa.conf"
grep -qx "country=$COUNTRY" "$W/wpa.conf" && grep -qx "	ssid=\"$SSID\"" "$W/wpa.conf" && grep -qx "	psk=$PSK" "$W/wpa.conf" ||
  fail "the Wi-Fi settings from network-config (country $COUNTRY, SSID $SSID, the 64-hex key) are not what wpa_supplicant reads"
dcat /firstboot-report.json > "$W/report.json"
"$PY" - "$W/report.json" "$HOST" "$SSID" "$TZ_NAME" <<'PYEOF' || fail "firstboot report: $(cat "$W/report.json")"
import json, sys
report, host, ssid, tz = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
applied = report["applied"]
want = [f"hostname {host} (from user-data)", "1 SSH key(s) (from user-data)", f"timezone {tz} (from user-data)",
        f"Wi-Fi {ssid!r} (from network-config)", "kelvinpi.toml"]
missing = [w for w in want if w not in applied]
print("firstboot applied:", "; ".join(applied), "| refused:", "; ".join(report["refused"]) or "nothing")
if missing:
    print("firstboot did not apply:", "; ".join(missing))
sys.exit(1 if missing or report["refused"] else 0)
PYEOF
echo "$(field BOOT)"
echo "boot test passed in $(elapsed) s (front panel live after ${t_panel} s): SSH as kelvinpi with" \
     "the key from Imager's user-data, hostname $HOST, timezone $TZ_NAME, wpa_supplicant@wlan0 running on network-config's" \
     "Wi-Fi, watchdog armed, 0 failed units, password refused, secret gone from the FAT, data ${data_mb} MB"
rm -rf "$W"
