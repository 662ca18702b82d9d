"""In-place updates (issue 28; docs/update.md): signed RAUC bundles into the other system slot, one try
boot, and a commit only once the new system has shown it works.

=================  ====================================================================
``bundle``         ``rauc info`` with the keyring, then the compatible and the format
``install``        ``rauc install``, the marker, the try reboot (``Installer``), the argv lists
``marker``         the pending-update marker on the data partition (atomic JSON)
``devicetree``     which slot the firmware booted and whether it is a try
``gate``           the health gate that commits or fails a try boot (a thread in the service)
``rollback``       at start: the marker settled as an event (rolled back, committed late)
``cli``            ``kelvinpi update FILE``
``web``            ``POST /api/v1/update`` (the control token, the upload streamed to state_dir)
=================  ====================================================================
"""

from __future__ import annotations

from .bundle import BundleInfo, BundleRefused
from .devicetree import BootInfo, boot_info
from .gate import Conditions, HealthGate
from .install import Installer, InstallFailed, UpdateCommands
from .rollback import reconcile

__all__ = [
    "BootInfo",
    "BundleInfo",
    "BundleRefused",
    "Conditions",
    "HealthGate",
    "InstallFailed",
    "Installer",
    "UpdateCommands",
    "boot_info",
    "reconcile",
]
