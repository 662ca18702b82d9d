"""The Kelvinpi service: config, pollers, store, web, uplinks, CLI."""

__version__ = "0.3.0"
