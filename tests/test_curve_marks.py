"""A curve slot marked incomplete keeps the curve it held before, wherever the store is (red team
2122b #1 and the texts of #6). Fast tier: the curve service's bookkeeping on a real store file, no
instrument link: the failed upload is the poller's ``ConnectionLost`` as ``upload`` hands it over.

On main the curve to put back was looked up only in SQLite (``Store.snapshots``), so while its
snapshot record waited in memory (within a commit interval, or for as long as the store could not
write: a full disk) a retry on the marked slot found "no old curve": the slot was then marked "the
slot was empty", its pending restore stopped and the old curve was never put back."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from appliance.config import ControlConfig
from appliance.control import Control
from appliance.curve_api import CurveService
from appliance.health import InstrumentHealth
from appliance.store import Store
from drivers.curves import Curve
from drivers.errors import ConnectionLost

OLD = Curve("KP-OLD12", "SN-D12", 4, 300.0, 1, [(float(i), 300.0 - i) for i in range(1, 13)])
NEW = Curve("KP-NEW30", "SN-W30", 4, 300.0, 1, [(float(i), 300.0 - i) for i in range(1, 31)])


def _poller() -> SimpleNamespace:
    """What the curve service reads of a poller. Stopped: a scheduled restore ends at once."""
    stop = threading.Event()
    stop.set()
    return SimpleNamespace(
        cfg=SimpleNamespace(name="N", model="372"),
        health=InstrumentHealth(name="N", model="372", transport="tcp"),
        stop_event=stop,
        connected_event=threading.Event(),
        snapshot_due=False,
    )


def _service(store: Store) -> tuple[CurveService, SimpleNamespace]:
    poller = _poller()
    return CurveService(Control(ControlConfig(), [poller], store)), poller


def _fail_upload(svc: CurveService, poller, old: Curve | None) -> str:
    """What ``upload`` does around a link lost at point 5: keep the old curve, then recover."""
    if old is not None:
        svc._keep("N", 23, old)
    return svc._recover(poller, None, 23, old, ConnectionLost("instrument closed the connection"), NEW)


def test_the_curve_to_put_back_is_found_while_its_records_wait_in_memory(tmp_path):
    store = Store(tmp_path / "k.db")  # its writer not started: every record waits in memory
    try:
        svc, poller = _service(store)
        _fail_upload(svc, poller, OLD)
        assert store.snapshots("N/curve 23") == []  # not in SQLite
        marked, old = svc._before_incomplete(poller, 23)
        assert marked and old == OLD, old  # main: None ("the slot was empty")
        # the service started again on the same store (the records still on their way): found too
        svc2, poller2 = _service(store)
        svc2.reconcile()
        assert "23" in poller2.health.incomplete_curves
        assert svc2._before_incomplete(poller2, 23) == (True, OLD)
    finally:
        store.close()


def test_after_restarts_the_mark_is_found_says_after_a_restart_once_and_the_was_names_the_cut_copy(tmp_path):
    store = Store(tmp_path / "k.db")
    svc, poller = _service(store)
    state = _fail_upload(svc, poller, OLD)
    assert state.endswith("it is put back once the link is up again"), state
    store.close()
    for _ in range(3):  # three restarts
        store = Store(tmp_path / "k.db")
        svc, poller = _service(store)
        svc.reconcile()
        store.close()
    why = poller.health.incomplete_curves["23"]
    assert why.count("(still incomplete after a restart)") == 1, why  # main: once per restart
    assert svc._before_incomplete(poller, 23)[1] == OLD
    was = svc._was("N", 23)
    assert was == (
        "incomplete: an upload of KP-NEW30 SN-W30 stopped part way "
        f"(the curve before it: KP-OLD12 SN-D12, 12 points, kept as {svc._marks('N')['23']['hash']})"
    ), was  # main: "KP-OLD12 SN-D12, 12 points", as if the slot held it whole


def test_a_slot_empty_before_is_not_promised_back(tmp_path):
    store = Store(tmp_path / "k.db")
    try:
        svc, poller = _service(store)
        state = _fail_upload(svc, poller, None)
        assert "put back" not in state, state  # main: "the slot was empty; it is put back once ..."
        assert (
            state == "curve 23 marked incomplete: the slot was empty before; upload the curve again or delete the slot"
        )
        assert (
            svc._was("N", 23)
            == "incomplete: an upload of KP-NEW30 SN-W30 stopped part way (the curve before it: empty)"
        )
    finally:
        store.close()
