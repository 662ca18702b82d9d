#!/bin/bash
# Build the arm64 root filesystem with mmdebstrap (Debian packages only; qemu-user through binfmt_misc).
#   build-rootfs.sh OUTDIR            env: SUITE (trixie), SOURCE_DATE_EPOCH, WHEELS (dir of wheels to install)
# No mirror host name here: mmdebstrap's default mirror (or the host's apt sources) is used.
set -euo pipefail
OUT=${1:?output dir}
SUITE=${SUITE:-trixie}
HERE=$(cd "$(dirname "$0")" && pwd)
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH}"
: "${WHEELS:?set WHEELS to the directory holding the kelvinpi wheel and its aarch64 dependencies}"
[ "$(id -u)" = 0 ] || { echo "build-rootfs: needs root (mmdebstrap --mode=root)" >&2; exit 2; }
arch-test arm64 >/dev/null 2>&1 || { echo "build-rootfs: this host cannot run arm64 binaries: apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64" >&2; exit 2; }
rm -rf "$OUT"
export WHEELS HERE
mmdebstrap --mode=root --arch=arm64 --variant=minbase \
  --components=main,non-free-firmware \
  --aptopt='Apt::Install-Recommends "false"' --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --include=systemd-sysv,udev,dbus,kmod,iproute2,netbase,libpam-systemd,systemd-timesyncd,systemd-resolved,\
linux-image-arm64,initramfs-tools,zstd,raspi-firmware,firmware-brcm80211,wireless-regdb,wpasupplicant,\
openssh-server,ca-certificates,e2fsprogs,dosfstools,fdisk,cloud-guest-utils,util-linux,python3,python3-venv \
  --setup-hook='mkdir -p "$1/boot/firmware"' \
  --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"' \
  --customize-hook='"$HERE/customize.sh" "$1"' \
  "$SUITE" "$OUT"
