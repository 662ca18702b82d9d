"""Helpers the tests share: real routers and receivers on loopback, and the ledger reconciliation."""
