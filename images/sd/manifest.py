#!/usr/bin/env python3
"""Content manifest of a root filesystem tree: one line per path, sorted.

    path  type  mode  uid:gid  size  sha256-or-link-target

Time stamps are left out (the assembler clamps them to SOURCE_DATE_EPOCH); two builds from the
same inputs must give identical manifests.   manifest.py ROOTFS > rootfs.manifest
"""

import hashlib
import os
import stat
import sys


def entries(root: str):
    """Every path on the root's own file system: a mount inside it (a leftover /proc) is not walked."""
    dev = os.lstat(root).st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == dev)
        for name in sorted(dirnames + filenames):  # (a mount point itself is left out too)
            full = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(full, root)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                kind, extra, size = "l", os.readlink(full), 0
            elif stat.S_ISDIR(st.st_mode):
                kind, extra, size = "d", "-", 0
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                kind, extra, size = "f", h.hexdigest(), st.st_size
            else:
                kind, extra, size = "o", f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}", 0
            yield f"{rel}\t{kind}\t{mode:04o}\t{st.st_uid}:{st.st_gid}\t{size}\t{extra}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for line in sorted(entries(sys.argv[1])):
        print(line)
