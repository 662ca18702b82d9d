#!/bin/bash
# Build the arm64 root filesystem with mmdebstrap (Debian packages only; qemu-user through binfmt_misc).
#   build-rootfs.sh OUTDIR            env: SUITE (trixie), SOURCE_DATE_EPOCH, WHEELS (dir of wheels to install),
#                                          KERNEL (stable | backports)
# No mirror host name here: mmdebstrap's default mirror (or the host's apt sources) is used.
# KERNEL=backports takes linux-image-arm64 from <suite>-backports, whose kernel has the Raspberry Pi 5's
# RP1 drivers (Ethernet, USB, GPIO) that the stable kernel lacks. UNTESTED on real Pi 5 hardware.
set -euo pipefail
OUT=${1:?output dir}
SUITE=${SUITE:-trixie}
KERNEL=${KERNEL:-stable}
case "$KERNEL" in
  stable)    KERNEL_PKG=linux-image-arm64; BACKPORTS_HOOK=true ;;
  # the backports suite goes beside the main one in whatever sources mmdebstrap wrote (no host name here)
  backports) KERNEL_PKG="linux-image-arm64/$SUITE-backports"
             BACKPORTS_HOOK='sed -n "s/^\(deb .* \)'"$SUITE"' /\1'"$SUITE"'-backports /p" "$1/etc/apt/sources.list" > "$1/etc/apt/sources.list.d/backports.list"; test -s "$1/etc/apt/sources.list.d/backports.list"' ;;
  *) echo "build-rootfs: KERNEL must be 'stable' or 'backports', not '$KERNEL'" >&2; exit 2 ;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH}"
: "${WHEELS:?set WHEELS to the directory holding the kelvinpi wheel and its aarch64 dependencies}"
[ "$(id -u)" = 0 ] || { echo "build-rootfs: needs root (mmdebstrap --mode=root)" >&2; exit 2; }
arch-test arm64 >/dev/null 2>&1 || { echo "build-rootfs: this host cannot run arm64 binaries: apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64" >&2; exit 2; }
rm -rf "$OUT"
export WHEELS HERE KERNEL KEYRING
mmdebstrap --mode=root --arch=arm64 --variant=minbase \
  --components=main,non-free-firmware \
  --aptopt='Apt::Install-Recommends "false"' --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --include=systemd-sysv,udev,dbus,kmod,iproute2,netbase,libpam-systemd,systemd-timesyncd,systemd-resolved,\
$KERNEL_PKG,initramfs-tools,zstd,raspi-firmware,firmware-brcm80211,wireless-regdb,wpasupplicant,\
openssh-server,ca-certificates,rauc,rauc-service,e2fsprogs,dosfstools,fdisk,cloud-guest-utils,util-linux,python3,python3-venv,\
cifs-utils \
  --setup-hook='mkdir -p "$1/boot/firmware"' --setup-hook="$BACKPORTS_HOOK" \
  --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"' \
  --customize-hook='"$HERE/customize.sh" "$1"' \
  "$SUITE" "$OUT"
