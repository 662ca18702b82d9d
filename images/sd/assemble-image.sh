#!/bin/bash
# Assemble a flashable MBR image from a rootfs directory, without loop devices or mounts:
#   p1 FAT32 "config"  autoboot.txt (the Pi firmware's A/B slot choice), bootcode.bin (Pi 3 boot ROM),
#                      and what a lab writes: kelvinpi.toml, secrets, Raspberry Pi Imager's cloud-init files
#   p2 FAT32 boot A    p3 FAT32 boot B (empty)
#   p4 extended:  p5 ext4 root A   p6 ext4 root B (empty)   p7 ext4 "data" (small here; grown to fill
#                 the card on first boot: it is the last partition)
# Slot B is zeros in the flashed image (they compress to nothing); the first update writes it.
# Sizes and the fixed disk signature (PARTUUID = <DISK_ID>-<n>) come from layout.env.
# Reproducible: see slot-images.sh; the config FAT and data ext4 take their ids from SOURCE_DATE_EPOCH.
#
#   assemble-image.sh ROOTFS_DIR OUT.img
set -euo pipefail
ROOTFS=${1:?rootfs dir}; OUT=${2:?output image}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=layout.env
. "$HERE/layout.env"
BOOT_MIB=${BOOT_MIB_OVERRIDE:-$BOOT_MIB}; ROOT_MIB=${ROOT_MIB_OVERRIDE:-$ROOT_MIB}
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH (git log -1 --format=%ct)}"
command -v sfdisk >/dev/null || { echo "assemble-image: missing sfdisk (apt-get install fdisk)" >&2; exit 2; }
export LC_ALL=C MTOOLS_SKIP_CHECK=1 E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
work=$(mktemp -d "${OUT}.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
sde=$SOURCE_DATE_EPOCH
uuid_for() { python3 -c "import uuid,sys; print(uuid.uuid5(uuid.NAMESPACE_OID, sys.argv[1]))" "$1-$sde"; }

# slot A: boot FAT + root ext4 of the slot's size
BOOT_MIB_OVERRIDE=$BOOT_MIB bash "$HERE/slot-images.sh" "$ROOTFS" "$work" "$ROOT_MIB" >/dev/null

# p1: the config FAT. autoboot.txt as the firmware documents it: every boot starts slot A; a try
# (reboot "0 tryboot") also starts A until an update points [tryboot] at the slot it wrote.
mkdir -p "$work/config"
printf '[all]\ntryboot_a_b=1\nboot_partition=%s\n[tryboot]\nboot_partition=%s\n' "$BOOT_A_PART" "$BOOT_A_PART" \
  > "$work/config/autoboot.txt"
if [ -f "$ROOTFS/boot/firmware/bootcode.bin" ]; then cp "$ROOTFS/boot/firmware/bootcode.bin" "$work/config/"; fi
touch -h -d "@$sde" "$work/config"/*
truncate -s "${CONFIG_MIB}M" "$work/config.vfat"
mkfs.vfat -F 32 -n CONFIG -i "$(printf '%08x' $(( (sde + 1) & 0xffffffff )))" --invariant "$work/config.vfat" >/dev/null
(cd "$work/config" && find . -type f | sort) | while read -r f; do mcopy -m -i "$work/config.vfat" "$work/config/${f#./}" "::${f#.}"; done

# p7: ext4 data, empty; kelvinpi-grow-data.service grows p4 and p7 to the end of the card
du_=$(uuid_for data)
mkfs.ext4 -q -F -L data -U "$du_" -E "hash_seed=$du_,lazy_itable_init=0,lazy_journal_init=0" \
  "$work/data.ext4" "${DATA_MIB}M"
printf 'sif / ctime @%s\nsif / atime @%s\nsif /lost+found ctime @%s\nsif /lost+found atime @%s\n' \
  "$sde" "$sde" "$sde" "$sde" | debugfs -w -f - "$work/data.ext4" >/dev/null 2>&1

# MBR (the Pi 3 boot ROM reads no GPT), in MiB: a 4 MiB gap, p1-p3, then the extended p4 whose
# logical partitions each start 1 MiB after the previous one ends (room for their EBRs)
c_start=4
a_start=$(( c_start + CONFIG_MIB )); b_start=$(( a_start + BOOT_MIB )); ext_start=$(( b_start + BOOT_MIB ))
ra_start=$(( ext_start + 1 )); rb_start=$(( ra_start + ROOT_MIB + 1 )); d_start=$(( rb_start + ROOT_MIB + 1 ))
total_mib=$(( d_start + DATA_MIB ))
s() { echo $(( $1 * 2048 )); }
rm -f "$OUT"
truncate -s "${total_mib}M" "$OUT"
sfdisk --quiet "$OUT" <<SFDISK
label: dos
label-id: 0x$DISK_ID
unit: sectors

start=$(s $c_start), size=$(s "$CONFIG_MIB"), type=c, bootable
start=$(s $a_start), size=$(s "$BOOT_MIB"), type=c
start=$(s $b_start), size=$(s "$BOOT_MIB"), type=c
start=$(s $ext_start), size=$(s $(( total_mib - ext_start ))), type=f
start=$(s $ra_start), size=$(s "$ROOT_MIB"), type=83
start=$(s $rb_start), size=$(s "$ROOT_MIB"), type=83
start=$(s $d_start), size=$(s "$DATA_MIB"), type=83
SFDISK
dd if="$work/config.vfat" of="$OUT" bs=1M seek=$c_start conv=notrunc,sparse status=none
dd if="$work/boot.vfat" of="$OUT" bs=1M seek="$a_start" conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$OUT" bs=1M seek=$ra_start conv=notrunc,sparse status=none
dd if="$work/data.ext4" of="$OUT" bs=1M seek=$d_start conv=notrunc,sparse status=none
touch -d "@$sde" "$OUT"
echo "assembled $OUT: config ${CONFIG_MIB} MiB, boot A/B ${BOOT_MIB} MiB, root A/B ${ROOT_MIB} MiB, data ${DATA_MIB} MiB (disk ${DISK_ID})"
