"""The settings view's "last changes" come from a query of the node's control and curve events
(red team 2122, fault 6): on main the view filtered the newest 5,000 events of every kind in
Python, so after 5,100 unrelated events an instrument's changes were []. Fast tier: a real store
file, no appliance."""

from __future__ import annotations

from types import SimpleNamespace

from appliance.store import Store
from appliance.web.control import CHANGES_SHOWN, settings_view


def _poller(name: str) -> SimpleNamespace:
    """What the view reads of a poller: its name, model and incomplete curve marks."""
    return SimpleNamespace(cfg=SimpleNamespace(name=name, model="372"), health=SimpleNamespace(incomplete_curves={}))


def test_the_last_changes_survive_many_later_events_of_other_kinds(tmp_path):
    store = Store(tmp_path / "k.db")
    try:
        store.event("control", "N", "[x-1] requested by 10.0.0.9: input (INSET) input 5 set {'dwell': 3}", t=1000.0)
        store.event("curve", "N", "curve 21 marked incomplete: test", t=1001.0)
        store.event("control", "OTHER", "[x-2] requested by 10.0.0.9: something else", t=1002.0)
        for i in range(5100):  # unrelated events after them, on this node and others
            store.event("gap", "N" if i % 2 else "OTHER", f"filler {i}", t=2000.0 + i)
        for flushed in (False, True):  # as journaled, and once in SQLite
            if flushed:
                store.close()
                store = Store(tmp_path / "k.db")
            changes = settings_view(store, _poller("N"))["changes"]
            assert [c["kind"] for c in changes] == ["curve", "control"], (flushed, changes)
            assert "input 5 set" in changes[1]["detail"]
    finally:
        store.close()


def test_the_view_lists_at_most_the_newest_changes(tmp_path):
    store = Store(tmp_path / "k.db")
    try:
        for i in range(CHANGES_SHOWN + 5):
            store.event("control", "N", f"change {i}", t=1000.0 + i)
        changes = settings_view(store, _poller("N"))["changes"]
        assert len(changes) == CHANGES_SHOWN and changes[0]["detail"] == f"change {CHANGES_SHOWN + 4}"
        assert store.events(limit=10, node="N", kinds=("curve",)) == []
    finally:
        store.close()
