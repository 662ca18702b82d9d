#!/bin/bash
# Let this host run arm64 binaries (mmdebstrap runs the image's maintainer scripts under qemu-user).
#   enable-binfmt.sh        (root; needs qemu-user-static, binfmt-support, arch-test installed)
# Installing qemu-user-static registers its binfmt entry but, on a machine (or container) where
# binfmt_misc is not mounted or systemd did not run at install time, does not enable it: mount
# binfmt_misc, enable qemu-aarch64 with update-binfmts (binfmt-support, Debian 12) or load
# systemd's binfmt.d entry (newer Debian), then prove it with arch-test.
set -euo pipefail
if arch-test arm64 >/dev/null 2>&1; then echo "enable-binfmt: arm64 binaries already run here"; exit 0; fi
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if command -v update-binfmts >/dev/null 2>&1 && update-binfmts --display qemu-aarch64 >/dev/null 2>&1; then
  update-binfmts --enable qemu-aarch64 || true
fi
if ! arch-test arm64 >/dev/null 2>&1; then
  for conf in /usr/lib/binfmt.d/qemu-aarch64*.conf; do
    [ -e "$conf" ] || continue
    if [ -x /usr/lib/systemd/systemd-binfmt ]; then /usr/lib/systemd/systemd-binfmt "$conf" || true
    else grep -v '^[#;]' "$conf" | while read -r entry; do
      [ -z "$entry" ] || printf '%s' "$entry" > /proc/sys/fs/binfmt_misc/register || true; done; fi
  done
fi
if arch-test arm64 >/dev/null 2>&1; then
  echo "enable-binfmt: arm64 binaries run here (qemu-aarch64 via binfmt_misc)"
else
  echo "enable-binfmt: this host still cannot run arm64 binaries; check that qemu-user-static is installed and" \
       "that /proc/sys/fs/binfmt_misc is writable (a container needs --privileged)" >&2
  exit 2
fi
