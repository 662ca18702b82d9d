"""What the appliance needs to know about ``bluefors-logs`` as a model (``appliance.models.MODELS``)."""

from __future__ import annotations

from typing import ClassVar


class BlueforsLogs:
    """The Bluefors log folder as a model: its readings carry no status word, socs' agent is
    ``BlueforsAgent`` and it publishes every log on one feed, ``bluefors`` (socs
    ``socs/agents/bluefors/agent.py``: ``register_feed('bluefors', ...)``)."""

    STATUS_BITS = dict[int, str]()
    OCS_AGENT_CLASS = "BlueforsAgent"
    OCS_FEED = "bluefors"
    # The front panel's one card for the gas handling system (appliance/web/panel.py ships it,
    # panel.js draws a "gas" card): the flow, the pumps and the pulse tube from the Channels log (a
    # pulse tube or compressor off flags the card) and the open valves v1, v2, ... by name. The
    # folder's other fields (its thermometers, P1-P6, the Status values) are in the API and plots.
    PANEL: ClassVar[dict] = {
        "title": "gas handling",
        "kind": "gas",
        "flow": "flow",
        "flow_units": "mmol/s",
        "pumps": [["PT", "pulsetube"], ["comp", "compressor"], ["turbo", "turbo1"], ["scroll", "scroll1"]],
        "must_run": ["pulsetube", "compressor"],
        "valves": "^v[0-9]+$",
    }

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]:
        """Unused (a log line names its fields itself, each with its socs name): the socs name of
        a thermometer channel's temperature and resistance logs."""
        return f"lakeshore_ch{channel}_t", f"lakeshore_ch{channel}_r"
