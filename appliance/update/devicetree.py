"""Which slot the Raspberry Pi firmware booted, and whether this boot is its one-time try.

The firmware says so in the device tree it hands the kernel (its ``tryboot`` documentation):
``chosen/bootloader/partition`` is the boot partition it loaded (a big-endian u32: 2 is slot A's,
3 is slot B's, as ``autoboot.txt`` lays them out) and ``chosen/bootloader/tryboot`` is 1 on the
boot that ``reboot "0 tryboot"`` asked for. The custom RAUC backend (image side) reads the same
two files, so the appliance and RAUC never disagree about the slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# autoboot.txt: boot_partition=2 is slot A, 3 is slot B (docs/update.md, the contract with the image)
SLOTS = {2: "A", 3: "B"}
OTHER = {"A": "B", "B": "A"}


class DeviceTreeError(Exception):
    """A device-tree file that is there but is not one big-endian u32 (named in the message)."""


@dataclass(frozen=True)
class BootInfo:
    """What the firmware booted: the boot partition, its slot name, and whether it is a try."""

    partition: int
    tryboot: bool

    @property
    def slot(self) -> str:
        return SLOTS.get(self.partition, f"partition {self.partition}")

    @property
    def other(self) -> str:
        """The slot an update is written to: the one not booted."""
        return OTHER.get(self.slot, "?")


def read_u32(path: Path) -> int:
    raw = path.read_bytes()
    if len(raw) != 4:
        raise DeviceTreeError(f"{path}: {len(raw)} bytes, expected a big-endian u32 (4 bytes)")
    return int.from_bytes(raw, "big")


def boot_info(device_tree: Path) -> BootInfo | None:
    """The firmware's account of this boot; None where there is none (not a Pi booted by its
    firmware's A/B support: a laptop, a container, an image without autoboot.txt)."""
    base = Path(device_tree) / "chosen" / "bootloader"
    part = base / "partition"
    if not part.exists():
        return None
    try_file = base / "tryboot"
    return BootInfo(read_u32(part), try_file.exists() and read_u32(try_file) == 1)


# /chosen/bootloader/capabilities of the Pi 4/5 EEPROM bootloader (Raspberry Pi's configuration
# documentation, "BCM2711 and BCM2712 specific bootloader properties"): bit 2 is TRYBOOT_A_B mode,
# bit 3 is tryboot. A Pi 3 has no EEPROM and no such file: there the firmware on the card decides.
CAP_TRYBOOT_A_B = 1 << 2
CAP_TRYBOOT = 1 << 3


def bootloader_cannot_try(device_tree: Path) -> str | None:
    """Why this Pi's bootloader would never try an update (an EEPROM too old for ``tryboot_a_b``), or None.

    Without the capability an install would write slot B and reboot with the try flag, and the
    bootloader would start slot A again as if nothing happened: the update would look rolled back for
    no reason. Refusing first, naming the bootloader's version, tells the lab what to update."""
    base = Path(device_tree) / "chosen" / "bootloader"
    caps_file = base / "capabilities"
    if not caps_file.exists():
        return None
    try:
        caps = read_u32(caps_file)
    except (DeviceTreeError, OSError) as exc:
        return f"cannot tell whether this Pi's bootloader can try an update: {exc}"
    missing = [name for bit, name in ((CAP_TRYBOOT_A_B, "TRYBOOT_A_B"), (CAP_TRYBOOT, "tryboot")) if not caps & bit]
    if not missing:
        return None
    version = base / "version"
    named = version.read_bytes().rstrip(b"\0").decode("ascii", "replace").strip() if version.exists() else "unknown"
    return (
        f"this Pi's bootloader EEPROM (version {named}, capabilities 0x{caps:x}) lacks {' and '.join(missing)}: "
        "an update would never be tried; update the bootloader first (rpi-eeprom-update on Raspberry Pi OS, "
        "or the Raspberry Pi Imager's bootloader image), then install again"
    )


def write_boot_info(device_tree: Path, partition: int, tryboot: bool) -> None:
    """Lay out what the firmware would (for a test's directory, or a harness standing in for it)."""
    base = Path(device_tree) / "chosen" / "bootloader"
    base.mkdir(parents=True, exist_ok=True)
    (base / "partition").write_bytes(partition.to_bytes(4, "big"))
    (base / "tryboot").write_bytes(int(tryboot).to_bytes(4, "big"))
