"""Emulated Lake Shore 372 / 240 firmware: device state and physics apart from the wire.

What the emulators answer, and the evidence for each choice (socs' fixtures, the ``lakeshore``
package, the manuals), is listed in ``firmware_host/FIDELITY.md``.
"""
