#!/bin/bash
# Drop the kernel modules no Raspberry Pi (nor the qemu virt test machine) uses, before the initramfs
# is built (MODULES=most copies whole subsystems into it: it shrinks too):
#   prune-modules.sh ROOTFS [LIST]        LIST defaults to modules-drop.list beside this script
# Every entry of the list says why it is safe. The build fails, naming the modules, if a module that
# stays needs one that was dropped (its modules.dep line, from before the prune), or if one of the
# modules the image relies on (REQUIRED below) is gone. Then depmod writes the indexes anew.
set -euo pipefail
R=${1:?rootfs}
LIST=${2:-$(cd "$(dirname "$0")" && pwd)/modules-drop.list}
# What a Pi or the test machine loads (genet is bcmgenet): a drop list that reached one of these is wrong. Each is a
# module file or built into the kernel (modules.builtin).
REQUIRED="vc4 v3d snd-soc-hdmi-codec cec brcmfmac genet macb lan78xx smsc95xx ftdi_sio cdc-acm cp210x pl2303
  sdhci-iproc mmc_block virtio_blk virtio_net virtio-rng mac80211_hwsim i6300esb bcm2835_wdt ext4 vfat nls_cp437
  nls_ascii squashfs dm-verity usb-storage uas sd_mod cifs bcm2835 dwc2 xhci-pci reset-raspberrypi hci_uart btbcm
  i2c-bcm2835 spi-bcm2835 bcm2835-rng iproc-rng200 dm-mod loop"
[ -f "$LIST" ] || { echo "prune-modules: no list $LIST" >&2; exit 2; }
kvers=$(ls "$R/usr/lib/modules")
[ -n "$kvers" ] || { echo "prune-modules: no kernel modules under $R/usr/lib/modules" >&2; exit 2; }
for kver in $kvers; do
  M="$R/usr/lib/modules/$kver"
  [ -f "$M/modules.dep" ] || { echo "prune-modules: $M has no modules.dep" >&2; exit 2; }
  before_kib=$(du -sk "$M" | cut -f1); before_n=$(find "$M/kernel" -name '*.ko*' | wc -l)
  dep_before=$(mktemp); cp "$M/modules.dep" "$dep_before"
  matched=0; missing=0
  while read -r entry; do
    # shellcheck disable=SC2206  # the entry is a glob on purpose
    paths=("$M/kernel/"$entry)
    if [ -e "${paths[0]}" ]; then rm -rf "${paths[@]}"; matched=$((matched + 1)); else missing=$((missing + 1)); fi
  done < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$LIST")
  # a module that stays must find every module it needed before the prune
  broken=$(cd "$M" && while IFS=: read -r mod deps; do
    [ -e "$mod" ] || continue
    for d in $deps; do [ -e "$d" ] || echo "$(basename "${mod%%.ko*}") needs $(basename "${d%%.ko*}")"; done
  done < "$dep_before")
  rm -f "$dep_before"
  if [ -n "$broken" ]; then
    echo "prune-modules: modules that stay need dropped ones (take them out of $LIST, or drop these too):" >&2
    echo "$broken" | sort -u >&2
    exit 1
  fi
  gone=""
  for name in $REQUIRED; do
    alt=${name//-/_}
    find "$M/kernel" \( -name "$name.ko*" -o -name "$alt.ko*" \) | grep -q . ||
      grep -qE "/($name|$alt)\.ko$" "$M/modules.builtin" || gone="$gone $name"
  done
  [ -z "$gone" ] || { echo "prune-modules: the list dropped modules the image needs:$gone" >&2; exit 1; }
  find "$M/kernel" -depth -type d -empty -delete
  if [ -x "$R/usr/sbin/depmod" ] && chroot "$R" true 2>/dev/null; then chroot "$R" depmod -a "$kver"
  else depmod -b "$R" -a "$kver"; fi
  # depmod's own view: every dependency it recorded is a file that is there
  stale=$(cd "$M" && tr ' ' '\n' < modules.dep | sed -n 's/:$//; /\.ko/p' | sort -u | while read -r f; do
    [ -e "$f" ] || echo "$f"; done)
  [ -z "$stale" ] || { echo "prune-modules: modules.dep still names dropped modules: $stale" >&2; exit 1; }
  after_kib=$(du -sk "$M" | cut -f1); after_n=$(find "$M/kernel" -name '*.ko*' | wc -l)
  echo "prune-modules: $kver: $((before_kib / 1024)) MiB -> $((after_kib / 1024)) MiB," \
       "$before_n -> $after_n modules ($matched list entries applied, $missing not in this kernel)"
done
