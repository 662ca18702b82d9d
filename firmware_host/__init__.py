"""Emulated Lake Shore 372 / 240 firmware: device state and physics apart from the wire."""
