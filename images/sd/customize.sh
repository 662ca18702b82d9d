#!/bin/bash
# mmdebstrap customize hook: identity, fstab, raspi-firmware defaults, the appliance, units, cleanup.
set -euo pipefail
R=${1:?rootfs}
HERE=${HERE:-$(cd "$(dirname "$0")" && pwd)}
# shellcheck source=layout.env
. "$HERE/layout.env"
KEYRING=${KEYRING:-$HERE/../keys/dev-DO-NOT-SHIP.cert.pem}
echo kelvinpi > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tkelvinpi\n::1\tlocalhost ip6-localhost\n' > "$R/etc/hosts"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
: > "$R/etc/machine-id"; rm -f "$R/var/lib/dbus/machine-id"
rm -f "$R"/etc/ssh/ssh_host_*                       # generated per device on first boot
chroot "$R" passwd -l root >/dev/null                # no password anywhere
chroot "$R" useradd --system --create-home --home-dir /home/kelvinpi --shell /bin/bash --groups dialout kelvinpi
chroot "$R" passwd -l kelvinpi >/dev/null
cat > "$R/etc/ssh/sshd_config.d/kelvinpi.conf" <<'SSH'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
HostKey /data/identity/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /data/identity/authorized_keys/%u
SSH
mkdir -p "$R/etc/wpa_supplicant"
ln -sf /data/identity/wpa_supplicant-wlan0.conf "$R/etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
# the root is whichever slot the firmware booted (root=PARTUUID=<disk>-05|06 on its cmdline.txt); the
# config FAT (p1) holds autoboot.txt, which RAUC's backend rewrites, and the lab's kelvinpi.toml and
# secrets; the slots' own boot FATs are not mounted (an update writes them whole, nothing else does)
cat > "$R/etc/fstab" <<FSTAB
/dev/root                 /               ext4   rw,noatime,commit=60,errors=remount-ro  0 0
PARTUUID=$DISK_ID-0$CONFIG_PART  /boot/config    vfat   rw,noatime,flush,umask=0077    0 2
LABEL=data                /data           ext4   rw,noatime,commit=5           0 2
tmpfs                     /tmp            tmpfs  rw,nosuid,nodev,size=64M      0 0
tmpfs                     /var/tmp        tmpfs  rw,nosuid,nodev,size=16M      0 0
FSTAB
mkdir -p "$R/data" "$R/boot/config"
cat > "$R/etc/default/raspi-firmware" <<RF
ROOTPART=PARTUUID=$DISK_ID-0$ROOT_A_PART
CONSOLES="tty0 ttyS1,115200"
CMA=0
RF
# a kernel panic, or an initramfs that cannot find its root (initramfs-tools panics instead of opening a
# shell when panic= is set), reboots after 10 s instead of hanging: on a try boot the firmware's
# one-shot tryboot flag is gone by then, so the old slot starts (raspi-firmware appends this file)
echo "panic=10" > "$R/etc/default/raspi-extra-cmdline"
echo FSTYPE=ext4 > "$R/etc/initramfs-tools/conf.d/fstype"
mkdir -p "$R/etc/systemd/network"
printf '[Match]\nName=e* usb*\n[Network]\nDHCP=yes\n' > "$R/etc/systemd/network/20-wired.network"
printf '[Match]\nName=wl*\n[Network]\nDHCP=yes\n' > "$R/etc/systemd/network/30-wifi.network"
# the appliance: a venv under /opt from wheels built and downloaded on the host
mkdir -p "$R/opt/kelvinpi/wheels"
cp "$WHEELS"/*.whl "$R/opt/kelvinpi/wheels/"
chroot "$R" python3 -m venv /opt/kelvinpi/venv
chroot "$R" env -u PIP_FIND_LINKS -u PIP_CONSTRAINT /opt/kelvinpi/venv/bin/pip install --quiet --no-index --find-links /opt/kelvinpi/wheels kelvinpi
rm -rf "$R/opt/kelvinpi/wheels"
ln -sf /opt/kelvinpi/venv/bin/kelvinpi "$R/usr/local/bin/kelvinpi"   # on PATH for SSH sessions (kelvinpi update, export)
cp -a "$HERE/overlay/." "$R/"
sed -i "s/@DISK_ID@/$DISK_ID/" "$R/usr/lib/kelvinpi/rauc-tryboot"
# RAUC: A/B root slots, each with its boot FAT as a child; the slot states live on the data partition
mkdir -p "$R/etc/rauc"
# one slot pair: a root slot and its boot FAT as a child (index, bootname, root and boot partitions)
rauc_slot() {
  printf '\n[slot.rootfs.%s]\ndevice=/dev/disk/by-partuuid/%s-0%s\ntype=ext4\nbootname=%s\nresize=true\n' "$1" "$DISK_ID" "$3" "$2"
  printf '\n[slot.bootfs.%s]\ndevice=/dev/disk/by-partuuid/%s-0%s\ntype=vfat\nparent=rootfs.%s\n' "$1" "$DISK_ID" "$4" "$1"
}
{
  cat <<RAUC
[system]
compatible=kelvinpi-rpi-arm64
bootloader=custom
data-directory=/data/rauc
bundle-formats=-plain

[keyring]
path=/etc/rauc/keyring.pem

[handlers]
bootloader-custom-backend=/usr/lib/kelvinpi/rauc-tryboot
RAUC
  rauc_slot 0 A "$ROOT_A_PART" "$BOOT_A_PART"
  rauc_slot 1 B "$ROOT_B_PART" "$BOOT_B_PART"
} > "$R/etc/rauc/system.conf"
# the keyring: certificates only (check-rootfs.sh refuses any private key in the image)
if grep -q 'PRIVATE KEY' "$KEYRING"; then echo "customize: KEYRING=$KEYRING holds a private key: give the certificate" >&2; exit 2; fi
grep -q 'BEGIN CERTIFICATE' "$KEYRING" || { echo "customize: KEYRING=$KEYRING holds no certificate" >&2; exit 2; }
install -m 0644 "$KEYRING" "$R/etc/rauc/keyring.pem"
chroot "$R" systemctl enable systemd-networkd systemd-resolved systemd-timesyncd ssh \
  kelvinpi-identity kelvinpi-grow-data kelvinpi-firstboot kelvinpi kelvinpi-reboot.path kelvinpi-try-deadline >/dev/null 2>&1
# Units a Kelvinpi has no use for. sshd-keygen would make host keys in /etc/ssh that sshd never reads
# (its one HostKey is on the data partition, kelvinpi-identity); it is ConditionFirstBoot and the image's
# empty /etc/machine-id is not a "first boot" to systemd, so the mask only keeps it so. e2scrub_reap
# looks for LVM snapshots (there is no LVM); apt's daily timers fire soon after a boot (Persistent=) on
# a system that is updated by slots, not apt. Masked, not disabled: a preset-all cannot bring them back.
quiet_units="e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer"
# shellcheck disable=SC2086
chroot "$R" systemctl disable $quiet_units >/dev/null 2>&1
# shellcheck disable=SC2086
chroot "$R" systemctl mask sshd-keygen.service $quiet_units >/dev/null 2>&1
# the clock never starts before the image was built (no RTC on the Pi)
touch -d "@$SOURCE_DATE_EPOCH" "$R/var/lib/systemd/timesync/clock" 2>/dev/null || { mkdir -p "$R/var/lib/systemd/timesync"; touch -d "@$SOURCE_DATE_EPOCH" "$R/var/lib/systemd/timesync/clock"; }
# the kernel modules no Pi uses go before the initramfs is made (MODULES=most copies whole subsystems)
bash "$HERE/prune-modules.sh" "$R"
# Debian's kernel does not pass a "0 tryboot" restart to the Pi firmware: a module of ours does (built
# here with the kernel's headers and a compiler, which are purged again)
bash "$HERE/build-tryboot-module.sh" "$R"
# initramfs once (it is the slow step under emulation), then the raspi-firmware kernel hook
rm -f "$R/usr/sbin/update-initramfs"
chroot "$R" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
chroot "$R" update-initramfs -c -k all >/dev/null
KVER=$(ls "$R/lib/modules" | head -1)
chroot "$R" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "$KVER" || true
# The firmware loads the initramfs from the boot slot's FAT (the hook copied it to /boot/firmware);
# the root's own copy was never read and is incompressible (zstd): 35 MB per slot. An update writes
# a slot whole, nothing runs update-initramfs on the Pi.
ls "$R/boot/firmware/initrd.img-$KVER" >/dev/null
rm -f "$R/boot/initrd.img-$KVER" "$R/initrd.img" "$R/initrd.img.old"
if [ "${KERNEL:-stable}" = backports ]; then
  # the backports kernel keeps its DTBs under /usr/lib/modules/<ver>/dtb, where raspi-firmware's hook
  # does not look: copy the Broadcom ones (bcm2837 Pi 3 / Zero 2 W, bcm2711 Pi 4, bcm2712 Pi 5) ourselves
  cp "$R/usr/lib/modules/$KVER"/dtb/broadcom/*.dtb "$R/boot/firmware/"
  ls "$R/boot/firmware/bcm2712-rpi-5-b.dtb" "$R/boot/firmware/bcm2837-rpi-3-b.dtb" >/dev/null
fi
chroot "$R" dpkg-query -W -f='${Package}\t${Version}\n' > "$R/../packages.txt" 2>/dev/null || true
chroot "$R" apt-get clean
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/log/*.log "$R"/var/cache/debconf/*-old
find "$R/opt/kelvinpi" -name __pycache__ -type d -prune -exec rm -rf {} +
# pip only installed the appliance: the Pi never runs it (12 MB)
rm -rf "$R"/opt/kelvinpi/venv/lib/python3*/site-packages/pip "$R"/opt/kelvinpi/venv/lib/python3*/site-packages/pip-* \
  "$R"/opt/kelvinpi/venv/bin/pip "$R"/opt/kelvinpi/venv/bin/pip3*
# /usr is "updated" as built: without these stamps the first boot of every slot rebuilt the linker cache
# and the journal catalog (ConditionNeedsUpdate): minutes of the first boot under emulation
printf 'TIMESTAMP_NSEC=%s000000000\n' "$SOURCE_DATE_EPOCH" | tee "$R/etc/.updated" > "$R/var/.updated"
# libraries' own test suites are not needed on the Pi (autobahn's carries a test private key)
find "$R/opt/kelvinpi/venv/lib" -type d -path '*/site-packages/autobahn/*' -name test -prune -exec rm -rf {} +
# Bytecode, compiled here: the service runs as kelvinpi under ProtectSystem=strict and cannot write
# __pycache__ below /opt, so without it every start compiled the appliance and its libraries anew.
# checked-hash pycs hold the source's hash, not its mtime (the image clamps mtimes to
# SOURCE_DATE_EPOCH later): reproducible, and a changed source is still noticed. With the image's
# own python3.13 (the host's may be another version).
chroot "$R" env SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" PYTHONHASHSEED=0 /opt/kelvinpi/venv/bin/python -m compileall -q -j 2 \
  --invalidation-mode checked-hash /opt/kelvinpi/venv/lib  # -q: only a file that fails to compile is named
