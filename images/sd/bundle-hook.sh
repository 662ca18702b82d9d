#!/bin/sh
# The update bundle's hook, run by RAUC on the Pi while it installs the bundle:
#   slot-post-install for the boot FAT image: point its cmdline.txt at the root slot it belongs to.
# The boot FAT in the bundle is the same whichever slot it lands in; the root slot beside it is the
# parent slot in the running system's /etc/rauc/system.conf (device=/dev/disk/by-partuuid/<id>-05|06).
set -eu
case "${1:-}" in
  slot-post-install) ;;
  *) exit 0 ;;
esac
[ "${RAUC_SLOT_CLASS:-}" = bootfs ] || exit 0
conf=${RAUC_SYSTEM_CONFIG:-/etc/rauc/system.conf}
dev=$(awk -v want="[slot.${RAUC_SLOT_PARENT:?}]" '
  { gsub(/\r/, "") } /^\[/ { in_ = ($0 == want); next } in_ && /^device=/ { sub(/^device=/, ""); print; exit }' "$conf")
case "$dev" in
  /dev/disk/by-partuuid/*) partuuid=${dev##*/} ;;
  *) echo "bundle hook: $conf gives slot $RAUC_SLOT_PARENT the device '$dev', not a /dev/disk/by-partuuid/ path" >&2; exit 1 ;;
esac
cmdline="${RAUC_SLOT_MOUNT_POINT:?}/cmdline.txt"
[ -f "$cmdline" ] || { echo "bundle hook: the boot image has no cmdline.txt" >&2; exit 1; }
sed "s|root=[^ ]*|root=PARTUUID=$partuuid|" "$cmdline" > "$cmdline.new"
grep -q "root=PARTUUID=$partuuid" "$cmdline.new" || { echo "bundle hook: cmdline.txt has no root= to point at $partuuid" >&2; exit 1; }
sync "$cmdline.new"; mv -f "$cmdline.new" "$cmdline"; sync -f "$cmdline"
echo "bundle hook: $RAUC_SLOT_NAME boots root PARTUUID=$partuuid ($RAUC_SLOT_PARENT)"
