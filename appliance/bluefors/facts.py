"""What the appliance needs to know about ``bluefors-logs`` as a model (``appliance.models.MODELS``)."""

from __future__ import annotations


class BlueforsLogs:
    """The Bluefors log folder as a model: its readings carry no status word, socs' agent is
    ``BlueforsAgent`` and it publishes every log on one feed, ``bluefors`` (socs
    ``socs/agents/bluefors/agent.py``: ``register_feed('bluefors', ...)``)."""

    STATUS_BITS = dict[int, str]()
    OCS_AGENT_CLASS = "BlueforsAgent"
    OCS_FEED = "bluefors"

    @staticmethod
    def ocs_names(channel: str, name: str) -> tuple[str, str]:
        """Unused (a log line names its fields itself, each with its socs name): the socs name of
        a thermometer channel's temperature and resistance logs."""
        return f"lakeshore_ch{channel}_t", f"lakeshore_ch{channel}_r"
