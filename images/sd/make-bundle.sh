#!/bin/bash
# A signed RAUC update bundle (format verity) from a built rootfs directory:
#   make-bundle.sh ROOTFS_DIR OUT.raucb
#   env: SIGNING_KEY, SIGNING_CERT (default: the development key in images/keys, tests only),
#        KEYRING (the image's trust: the bundle is checked against it once built), VERSION, SOURCE_DATE_EPOCH
# The bundle holds the root slot (rootfs.ext4, just big enough: RAUC grows it to the slot) and the boot
# slot (bootfs.vfat, the rootfs's /boot/firmware) and bundle-hook.sh, which points the boot slot's
# cmdline.txt at its root slot. compatible = kelvinpi-rpi-arm64: another board or architecture refuses it.
set -euo pipefail
ROOTFS=${1:?rootfs dir}; OUT=${2:?output .raucb}
HERE=$(cd "$(dirname "$0")" && pwd)
KEYS=$(cd "$HERE/../keys" && pwd)
SIGNING_KEY=${SIGNING_KEY:-$KEYS/dev-DO-NOT-SHIP.key.pem}
SIGNING_CERT=${SIGNING_CERT:-$KEYS/dev-DO-NOT-SHIP.cert.pem}
KEYRING=${KEYRING:-$SIGNING_CERT}
VERSION=${VERSION:?set VERSION (git describe)}
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH (git log -1 --format=%ct)}"
for tool in rauc mksquashfs; do
  command -v "$tool" >/dev/null || { echo "make-bundle: missing $tool (apt-get install rauc squashfs-tools)" >&2; exit 2; }
done
[ -d "$ROOTFS/usr" ] || { echo "make-bundle: $ROOTFS is not a root file system (make image builds images/out/rootfs)" >&2; exit 2; }
for f in "$SIGNING_KEY" "$SIGNING_CERT" "$KEYRING"; do [ -r "$f" ] || { echo "make-bundle: cannot read $f" >&2; exit 2; }; done
case "$OUT" in *.raucb) ;; *) echo "make-bundle: the output must end in .raucb (RAUC's rule): $OUT" >&2; exit 2 ;; esac
work=$(mktemp -d "${OUT}.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
bash "$HERE/slot-images.sh" "$ROOTFS" "$work" min
mkdir "$work/bundle"
mv "$work/root.ext4" "$work/bundle/rootfs.ext4"
mv "$work/boot.vfat" "$work/bundle/bootfs.vfat"
install -m 0755 "$HERE/bundle-hook.sh" "$work/bundle/hook.sh"
cat > "$work/bundle/manifest.raucm" <<MANIFEST
[update]
compatible=kelvinpi-rpi-arm64
version=$VERSION
build=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%dT%H%M%SZ)

[bundle]
format=verity

[hooks]
filename=hook.sh

[image.rootfs]
filename=rootfs.ext4

[image.bootfs]
filename=bootfs.vfat
hooks=post-install
MANIFEST
find "$work/bundle" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$OUT"
rauc bundle --cert="$SIGNING_CERT" --key="$SIGNING_KEY" --mksquashfs-args="-comp zstd -all-root" \
  "$work/bundle" "$OUT" >/dev/null
rauc info --keyring="$KEYRING" "$OUT" >/dev/null 2>"$work/info.err" || {
  echo "make-bundle: the bundle does not verify against $KEYRING: $(tail -1 "$work/info.err")" >&2; exit 1; }
echo "make-bundle: $OUT ($(du -m "$OUT" | cut -f1) MiB, version $VERSION, signed by $(openssl x509 -in "$SIGNING_CERT" -noout -subject -nameopt oneline | sed 's/^subject=//'))"
