#!/bin/bash
# Assemble a flashable MBR image from a rootfs directory, without loop devices or mounts:
#   p1 FAT32 "bootfs" (the rootfs's /boot/firmware), p2 ext4 "rootfs", p3 ext4 "data"
#   (small here; grown to fill the card on first boot).
# Reproducible: SOURCE_DATE_EPOCH clamps every time stamp, the FAT is filled in sorted order,
# ext4 uuid/hash seed derive from SOURCE_DATE_EPOCH, debugfs resets ctime/atime.
#
#   assemble-image.sh ROOTFS_DIR OUT.img [BOOT_MIB] [DATA_MIB]
set -euo pipefail
ROOTFS=${1:?rootfs dir}; OUT=${2:?output image}; BOOT_MIB=${3:-512}; DATA_MIB=${4:-64}
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH (git log -1 --format=%ct)}"
for tool in mkfs.vfat mcopy mmd mkfs.ext4 debugfs sfdisk; do
  command -v "$tool" >/dev/null || { echo "assemble-image: missing $tool (apt-get install dosfstools mtools e2fsprogs fdisk)" >&2; exit 2; }
done
export LC_ALL=C MTOOLS_SKIP_CHECK=1 E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
work=$(mktemp -d "${OUT}.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
sde=$SOURCE_DATE_EPOCH
vol_id=$(printf '%08x' $(( sde & 0xffffffff )))
uuid_for() { python3 -c "import uuid,sys; print(uuid.uuid5(uuid.NAMESPACE_OID, sys.argv[1]))" "$1-$sde"; }

# a copy of the rootfs without the boot files: never move them out of the build tree
mkdir -p "$work/root" "$work/boot"
cp -a "$ROOTFS/." "$work/root/"
if [ -d "$work/root/boot/firmware" ]; then
  cp -a "$work/root/boot/firmware/." "$work/boot/"
  find "$work/root/boot/firmware" -mindepth 1 -delete
fi
mkdir -p "$work/root/data"
find "$work/root" "$work/boot" -newermt "@$sde" -print0 | xargs -0r touch -h -d "@$sde"

# p1: FAT32, files copied one by one in sorted order
truncate -s "${BOOT_MIB}M" "$work/boot.vfat"
mkfs.vfat -F 32 -n bootfs -i "$vol_id" --invariant "$work/boot.vfat" >/dev/null
(cd "$work/boot" && find . -mindepth 1 -type d | sort) | while read -r d; do mmd -i "$work/boot.vfat" "::${d#.}"; done
(cd "$work/boot" && find . -type f | sort) | while read -r f; do mcopy -m -i "$work/boot.vfat" "$work/boot/${f#./}" "::${f#.}"; done

# p2: ext4 root from the directory
root_kib=$(du -sk --apparent-size "$work/root" | cut -f1)
root_mib=$(( (root_kib * 12 / 10 / 1024 + 300 + 3) / 4 * 4 ))
inodes=$(( $(find "$work/root" | wc -l) * 2 + 4096 ))
ru=$(uuid_for rootfs)
mkfs.ext4 -q -F -L rootfs -U "$ru" -E "hash_seed=$ru,lazy_itable_init=0,lazy_journal_init=0" -N "$inodes" \
  -d "$work/root" "$work/root.ext4" "${root_mib}M"
(cd "$work/root" && find . -mindepth 1 | sort) | sed 's|^\.||' | while read -r p; do
  printf 'sif "%s" ctime @%s\nsif "%s" atime @%s\n' "$p" "$sde" "$p" "$sde"; done > "$work/debugfs.cmds"
printf 'sif / ctime @%s\nsif / atime @%s\n' "$sde" "$sde" >> "$work/debugfs.cmds"
debugfs -w -f "$work/debugfs.cmds" "$work/root.ext4" >/dev/null 2>&1

# p3: ext4 data, empty; kelvinpi-grow-data.service grows it to the end of the card
du_=$(uuid_for data)
mkfs.ext4 -q -F -L data -U "$du_" -E "hash_seed=$du_,lazy_itable_init=0,lazy_journal_init=0" \
  "$work/data.ext4" "${DATA_MIB}M"
printf 'sif / ctime @%s\nsif / atime @%s\nsif /lost+found ctime @%s\nsif /lost+found atime @%s\n' \
  "$sde" "$sde" "$sde" "$sde" | debugfs -w -f - "$work/data.ext4" >/dev/null 2>&1

# MBR (the Pi 3 boot ROM reads no GPT): 4 MiB gap, then the three partitions
boot_start=8192
root_start=$(( boot_start + BOOT_MIB * 2048 ))
data_start=$(( root_start + root_mib * 2048 ))
total_mib=$(( 4 + BOOT_MIB + root_mib + DATA_MIB ))
rm -f "$OUT"
truncate -s "${total_mib}M" "$OUT"
sfdisk --quiet "$OUT" <<SFDISK
label: dos
label-id: 0x$vol_id
unit: sectors

start=$boot_start, size=$(( BOOT_MIB * 2048 )), type=c, bootable
start=$root_start, size=$(( root_mib * 2048 )), type=83
start=$data_start, size=$(( DATA_MIB * 2048 )), type=83
SFDISK
dd if="$work/boot.vfat" of="$OUT" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$OUT" bs=1M seek=$(( 4 + BOOT_MIB )) conv=notrunc,sparse status=none
dd if="$work/data.ext4" of="$OUT" bs=1M seek=$(( 4 + BOOT_MIB + root_mib )) conv=notrunc,sparse status=none
touch -d "@$sde" "$OUT"
echo "assembled $OUT: bootfs ${BOOT_MIB} MiB, rootfs ${root_mib} MiB, data ${DATA_MIB} MiB"
