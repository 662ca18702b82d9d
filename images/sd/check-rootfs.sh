#!/bin/bash
# Refuse a root filesystem that carries credentials:   check-rootfs.sh ROOTFS
#  - a usable password hash in /etc/shadow (every account must be locked: '!' or '*')
#  - SSH host keys (generated per device on first boot) or authorized_keys
#  - a PEM private key anywhere outside Python packages' own code and test data
#  - anything under /data (the per-device partition starts empty)
# and one without the kelvinpi_tryboot module (built by build-tryboot-module.sh, indexed by depmod, named
# in modules-load.d: without it no update is ever tried on a Pi), or with the headers it was built with,
# and one whose emergency/rescue modes do not run try-abandon (a failed try would stay there),
# and one whose PID 1 does not drive the hardware watchdog (a hung try would never reset),
# and one that still has a file system mounted inside it (a build step's /proc left behind, e.g. when
# something held it busy at unmount): its files would be copied into the image, and the manifest
# would block reading /proc/kmsg.
set -euo pipefail
R=${1:?rootfs}
bad=0
real=$(realpath "$R")
mounted=$(awk -v r="$real/" 'substr($5, 1, length(r)) == r {print $5}' /proc/self/mountinfo)
if [ -n "$mounted" ]; then
  echo "check-rootfs: mounted inside the rootfs (umount them, then build again): $mounted" >&2
  exit 1
fi
while IFS=: read -r user hash _; do
  case "$hash" in '!'*|'*'*) ;; *) echo "check-rootfs: account '$user' has a usable password" >&2; bad=1 ;; esac
done < "$R/etc/shadow"
for f in "$R"/etc/ssh/ssh_host_*; do
  [ -e "$f" ] && { echo "check-rootfs: SSH host key in the image: ${f#"$R"}" >&2; bad=1; }
done
found=$(find "$R" -xdev \( -path "$R/proc" -o -path "$R/sys" -o -path "$R/dev" \) -prune -o \
  \( -name authorized_keys -o -name 'authorized_keys2' \) -print)
[ -z "$found" ] || { echo "check-rootfs: authorized_keys in the image: $found" >&2; bad=1; }
keys=$(grep -rlI --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev --exclude-dir=site-packages \
  -e '-----BEGIN [A-Z ]*PRIVATE KEY-----' "$R" 2>/dev/null || true)
[ -z "$keys" ] || { echo "check-rootfs: private key(s) in the image: $keys" >&2; bad=1; }
if [ -d "$R/data" ] && [ -n "$(ls -A "$R/data")" ]; then echo "check-rootfs: /data is not empty" >&2; bad=1; fi
for m in "$R"/usr/lib/modules/*/; do
  grep -q '^updates/kelvinpi_tryboot\.ko:' "$m/modules.dep" 2>/dev/null && [ -f "$m/updates/kelvinpi_tryboot.ko" ] ||
    { echo "check-rootfs: no kelvinpi_tryboot module for kernel $(basename "$m") (build-tryboot-module.sh)" >&2; bad=1; }
  [ ! -e "$m/build" ] && [ ! -L "$m/build" ] || { echo "check-rootfs: kernel headers left in the image: ${m#"$R"}build" >&2; bad=1; }
done
grep -qx kelvinpi_tryboot "$R/etc/modules-load.d/kelvinpi-tryboot.conf" 2>/dev/null ||
  { echo "check-rootfs: /etc/modules-load.d/kelvinpi-tryboot.conf does not load kelvinpi_tryboot" >&2; bad=1; }
# a try boot that falls into emergency or rescue mode must reboot into the old slot (try-abandon)
for u in emergency rescue; do
  grep -q '^ExecStartPre=-/usr/lib/kelvinpi/try-abandon' "$R/etc/systemd/system/$u.service.d/kelvinpi-try.conf" 2>/dev/null &&
    [ -x "$R/usr/lib/kelvinpi/try-abandon" ] ||
    { echo "check-rootfs: $u.service does not run try-abandon (a failed try would stay in $u mode)" >&2; bad=1; }
done
# the boot's units: the card's settings and config, then the service
for u in kelvinpi-firstboot kelvinpi; do
  [ -L "$R/etc/systemd/system/multi-user.target.wants/$u.service" ] && [ -f "$R/etc/systemd/system/$u.service" ] &&
    [ ! -L "$R/etc/systemd/system/$u.service" ] ||
    { echo "check-rootfs: $u.service is not enabled (multi-user.target.wants), or masked, or missing" >&2; bad=1; }
done
# the hardware watchdog, driven by PID 1: a hung kernel or PID 1 resets the Pi (on a try: into the old slot);
# systemd reads system.conf, then its drop-ins in name order, the last setting winning
wd=$( { cat "$R/etc/systemd/system.conf" "$R"/etc/systemd/system.conf.d/*.conf 2>/dev/null || true; } |
  sed -n 's/^[[:space:]]*RuntimeWatchdogSec=[[:space:]]*//p' | tail -1)
case "$wd" in ''|0|off|0s|0ms) echo "check-rootfs: systemd does not drive the hardware watchdog (RuntimeWatchdogSec='$wd')" >&2; bad=1 ;; esac
[ $bad = 0 ] && echo "check-rootfs: no credentials in $R"
exit $bad
