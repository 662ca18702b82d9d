#!/bin/bash
# Build and install the kelvinpi_tryboot kernel module inside the rootfs (from customize.sh), for the
# kernel installed there, then take the headers and the compiler out again:
#   build-tryboot-module.sh ROOTFS
# Debian's kernel does not pass a "0 tryboot" restart to the Raspberry Pi firmware (Raspberry Pi's own
# kernel does): without the module an A/B update is never tried (tryboot/kelvinpi_tryboot.c says how).
# The module goes to /usr/lib/modules/<ver>/updates, systemd-modules-load loads it at every boot.
# The packages installed for the build are purged by name (the ones dpkg did not list before), and the
# build fails unless the package set afterwards is the one before: the image does not grow but by the
# module. The module is built in a fixed directory and its debug info stripped: no build path in it.
set -euo pipefail
R=${1:?rootfs}
HERE=${HERE:-$(cd "$(dirname "$0")" && pwd)}
MOD=kelvinpi_tryboot
SRC=/usr/src/$MOD
say() { echo "build-tryboot-module: $*" >&2; }
mapfile -t kvers < <(ls "$R/usr/lib/modules")
[ "${#kvers[@]}" = 1 ] || { say "expected one kernel under $R/usr/lib/modules, found: ${kvers[*]:-none}"; exit 2; }
KVER=${kvers[0]}
W=$(mktemp -d)
# customize.sh points resolv.conf at systemd-resolved's stub, which does not run in the chroot: apt gets
# the host's for the build, the link is put back afterwards
resolv_saved=0
restore() {
  rm -rf "$R$SRC"
  if [ $resolv_saved = 1 ]; then rm -f "$R/etc/resolv.conf"; mv "$W/resolv.conf" "$R/etc/resolv.conf"; fi
  rm -rf "$W"
}
trap restore EXIT
if [ -e "$R/etc/resolv.conf" ] || [ -L "$R/etc/resolv.conf" ]; then
  mv "$R/etc/resolv.conf" "$W/resolv.conf"; resolv_saved=1
fi
cat /etc/resolv.conf > "$R/etc/resolv.conf"
installed() { chroot "$R" dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" {print $2}' | sort; }
installed > "$W/before"
# dpkg's backup of its status file would otherwise hold the build's packages
cp -p "$R/var/lib/dpkg/status-old" "$W/status-old" 2>/dev/null || :
debconf_tmp=0; [ ! -d "$R/var/cache/debconf/tmp.ci" ] || debconf_tmp=1
fetched=0
if ! chroot "$R" apt-cache show "linux-headers-$KVER" >/dev/null 2>&1; then
  chroot "$R" apt-get update -qq; fetched=1   # a rootfs whose lists were cleaned already
fi
chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "linux-headers-$KVER" gcc make >/dev/null
rm -rf "$R$SRC"; mkdir -p "$R$SRC"
cp "$HERE/tryboot/Kbuild" "$HERE/tryboot/$MOD.c" "$R$SRC/"
# modpost refuses a symbol the kernel's Module.symvers does not export (KBUILD_MODPOST_WARN unset)
chroot "$R" make -s -C "/usr/lib/modules/$KVER/build" M="$SRC" modules
chroot "$R" strip --strip-debug "$SRC/$MOD.ko"
want=$(chroot "$R" modinfo -F vermagic "$(find "$R/usr/lib/modules/$KVER/kernel" -name '*.ko*' -print -quit | sed "s|^$R||")")
got=$(chroot "$R" modinfo -F vermagic "$SRC/$MOD.ko")
[ "$got" = "$want" ] || { say "vermagic '$got' is not the kernel's '$want'"; exit 1; }
install -D -m 0644 "$R$SRC/$MOD.ko" "$R/usr/lib/modules/$KVER/updates/$MOD.ko"
installed > "$W/with-build"
# shellcheck disable=SC2046  # one package name a word
chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $(comm -13 "$W/before" "$W/with-build") >/dev/null
installed > "$W/after"
if ! diff -u "$W/before" "$W/after" >&2; then say "the package set differs from before the build (above)"; exit 1; fi
[ ! -e "$W/status-old" ] || cp -p "$W/status-old" "$R/var/lib/dpkg/status-old"
[ $debconf_tmp = 1 ] || rmdir "$R/var/cache/debconf/tmp.ci" 2>/dev/null || :   # debconf's, left empty
chroot "$R" apt-get clean
[ $fetched = 0 ] || find "$R/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name lock ! -name partial -exec rm -rf {} +
# the logs of the install and purge: mmdebstrap's cleanup removes them (it is given SOURCE_DATE_EPOCH)
chroot "$R" depmod -a "$KVER"
grep -q "^updates/$MOD.ko:" "$R/usr/lib/modules/$KVER/modules.dep" || { say "depmod did not index $MOD"; exit 1; }
cat > "$R/etc/modules-load.d/kelvinpi-tryboot.conf" <<CONF
# passes a "0 tryboot" restart to the Raspberry Pi firmware (Debian's kernel does not): A/B updates
$MOD
CONF
say "$KVER: $MOD.ko $(stat -c %s "$R/usr/lib/modules/$KVER/updates/$MOD.ko") bytes, vermagic $got"
