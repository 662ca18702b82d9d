#!/bin/bash
# One system slot's two file system images from a rootfs directory, without loop devices or mounts:
#   WORK/boot.vfat  FAT32 of the rootfs's /boot/firmware (kernel, initramfs, DTBs, firmware, config.txt,
#                   cmdline.txt), BOOT_MIB from layout.env
#   WORK/root.ext4  ext4 of the rest (/boot/firmware left empty: the boot files live on the FAT only)
# Used by assemble-image.sh (the card: root sized to the slot) and make-bundle.sh (the update bundle:
# root just big enough; RAUC grows it to the slot on install).
# Reproducible: SOURCE_DATE_EPOCH clamps every time stamp, the FAT is filled in sorted order, the ext4
# uuid and hash seed derive from SOURCE_DATE_EPOCH and LABEL, debugfs resets ctime/atime.
#
#   slot-images.sh ROOTFS_DIR WORK ROOT_MIB|min [LABEL_SUFFIX]
set -euo pipefail
ROOTFS=${1:?rootfs dir}; WORK=${2:?work dir}; ROOT_SIZE=${3:?root size in MiB, or min}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=layout.env
. "$HERE/layout.env"
BOOT_MIB=${BOOT_MIB_OVERRIDE:-$BOOT_MIB}
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH (git log -1 --format=%ct)}"
for tool in mkfs.vfat mcopy mmd mkfs.ext4 debugfs; do
  command -v "$tool" >/dev/null || { echo "slot-images: missing $tool (apt-get install dosfstools mtools e2fsprogs)" >&2; exit 2; }
done
export LC_ALL=C MTOOLS_SKIP_CHECK=1 E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
sde=$SOURCE_DATE_EPOCH
vol_id=$(printf '%08x' $(( (sde + 2) & 0xffffffff )))
uuid_for() { python3 -c "import uuid,sys; print(uuid.uuid5(uuid.NAMESPACE_OID, sys.argv[1]))" "$1-$sde"; }

# a copy of the rootfs without the boot files: never move them out of the build tree
rm -rf "$WORK/root" "$WORK/boot"
mkdir -p "$WORK/root" "$WORK/boot"
cp -a "$ROOTFS/." "$WORK/root/"
if [ -d "$WORK/root/boot/firmware" ]; then
  cp -a "$WORK/root/boot/firmware/." "$WORK/boot/"
  find "$WORK/root/boot/firmware" -mindepth 1 -delete
fi
mkdir -p "$WORK/root/data" "$WORK/root/boot/config"
find "$WORK/root" "$WORK/boot" -newermt "@$sde" -print0 | xargs -0r touch -h -d "@$sde"

# the boot slot: FAT32, files copied one by one in sorted order
rm -f "$WORK/boot.vfat"
truncate -s "${BOOT_MIB}M" "$WORK/boot.vfat"
mkfs.vfat -F 32 -n KPBOOT -i "$vol_id" --invariant "$WORK/boot.vfat" >/dev/null
(cd "$WORK/boot" && find . -mindepth 1 -type d | sort) | while read -r d; do mmd -i "$WORK/boot.vfat" "::${d#.}"; done
(cd "$WORK/boot" && find . -type f | sort) | while read -r f; do mcopy -m -i "$WORK/boot.vfat" "$WORK/boot/${f#./}" "::${f#.}"; done

# the root slot: ext4 from the directory
root_kib=$(du -sk --apparent-size "$WORK/root" | cut -f1)
inodes=$(( $(find "$WORK/root" | wc -l) * 2 + 4096 ))
if [ "$ROOT_SIZE" = min ]; then root_mib=$(( (root_kib * 11 / 10 / 1024 + inodes / 4096 + 64 + 3) / 4 * 4 ))
else root_mib=$ROOT_SIZE
  need=$(( root_kib * 11 / 10 / 1024 + 64 ))
  [ "$need" -le "$root_mib" ] || { echo "slot-images: the root file system needs ~${need} MiB, the slot has ${root_mib} MiB (ROOT_MIB in layout.env)" >&2; exit 2; }
fi
ru=$(uuid_for rootfs)
rm -f "$WORK/root.ext4"
mkfs.ext4 -q -F -L rootfs -U "$ru" -E "hash_seed=$ru,lazy_itable_init=0,lazy_journal_init=0" -N "$inodes" \
  -d "$WORK/root" "$WORK/root.ext4" "${root_mib}M"
(cd "$WORK/root" && find . -mindepth 1 | sort) | sed 's|^\.||' | while read -r p; do
  printf 'sif "%s" ctime @%s\nsif "%s" atime @%s\n' "$p" "$sde" "$p" "$sde"; done > "$WORK/debugfs.cmds"
printf 'sif / ctime @%s\nsif / atime @%s\n' "$sde" "$sde" >> "$WORK/debugfs.cmds"
debugfs -w -f "$WORK/debugfs.cmds" "$WORK/root.ext4" >/dev/null 2>&1
rm -rf "$WORK/root" "$WORK/boot" "$WORK/debugfs.cmds"
echo "slot-images: boot.vfat ${BOOT_MIB} MiB, root.ext4 ${root_mib} MiB"
