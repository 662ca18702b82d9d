"""Uplinks to the control room (sisock data node, OCS feeds, InfluxDB)."""
from __future__ import annotations


def build_uplinks(app) -> list:
    return []
