"""The "was" of a settings request (red team 2122b #3). A command has no reply of its own: INSET
bytes written to a link that then died may never have arrived. On main such a write ("written, not
read back") became the last read, and the last read was preferred to every later snapshot, so the
next request's audit claimed the wanted value the instrument never got. Now nothing unconfirmed is
remembered, and a configuration snapshot newer than the last read wins.

Fast tier: the settings service over a real Model 372 driver on loopback TCP to the emulator, a
real store file; the poller is a stand-in that runs each request at once on the caller's thread."""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest

from appliance.config import ControlConfig
from appliance.control import Control, ControlRefused
from appliance.health import InstrumentHealth
from appliance.settings import SettingService, written_not_read_back
from appliance.store import Store
from drivers.errors import ConnectionLost

from .test_driver_emulator import tcp372


class _Poller:
    """What the settings service uses of a poller: its name, model, instrument and ``call``."""

    def __init__(self, inst) -> None:
        self.cfg = SimpleNamespace(name="N", model="372")
        self.instrument = inst
        self.health = InstrumentHealth(name="N", model="372", transport="tcp", connected=True)
        self.snapshot_due = False
        self.stop_event = threading.Event()

    def call(self, fn, what: str, timeout: float = 30.0):
        return fn(self.instrument)


@pytest.fixture
def rig(tmp_path, emu372):
    inst = tcp372(emu372)
    store = Store(tmp_path / "k.db")
    poller = _Poller(inst)
    control = Control(ControlConfig(), [poller], store)
    store.snapshot("N", inst.configuration(["5"]))  # the snapshot taken at connect
    yield SimpleNamespace(inst=inst, store=store, poller=poller, control=control, emu=emu372)
    inst.close()
    store.close()


def _requested(store: Store, what: str) -> str:
    return next(e["detail"] for e in store.events(limit=100) if "requested by" in e["detail"] and what in e["detail"])


def test_a_write_never_confirmed_is_not_the_last_read(rig):
    key = ("N", "input", "5")
    rig.control.last_read[key] = {"dwell": 10}
    written_not_read_back(rig.control, rig.poller, key, {"dwell": 35}, ConnectionLost("link gone"))
    assert key not in rig.control.last_read  # main: {"dwell": 35}, never confirmed


def test_after_a_write_that_never_arrived_the_next_was_is_what_the_instrument_holds(rig, monkeypatch):
    held = rig.inst.input_setup("5").dwell
    assert held != 35
    svc = SettingService(rig.control)
    reads: list[int] = []
    orig = rig.inst.input_setup

    def input_setup(ch):  # the read before the write answers; the read-back finds the link gone
        reads.append(1)
        if len(reads) > 1:
            raise ConnectionLost("instrument closed the connection")
        return orig(ch)

    monkeypatch.setattr(rig.inst, "set_input_setup", lambda ch, setup: None)  # the bytes never arrive
    monkeypatch.setattr(rig.inst, "input_setup", input_setup)
    with pytest.raises(ControlRefused) as err:
        svc.set("N", "input", {"target": "5", "values": {"dwell": 35}}, "10.0.0.9")
    assert "written, not read back" in str(err.value.args), err.value.args
    monkeypatch.undo()
    # the link is back; its snapshot reads what the instrument holds (unchanged: no new record)
    rig.store.snapshot("N", rig.inst.configuration(["5"]))
    svc.set("N", "input", {"target": "5", "values": {"pause": 4}}, "10.0.0.9")
    was = _requested(rig.store, "{'pause': 4}").split("(was ")[1]
    assert f"'dwell': {held}" in was and "'dwell': 35" not in was, was  # main: 'dwell': 35


def test_a_snapshot_newer_than_the_last_read_wins(rig):
    """Changed at the front panel after a request read it: the snapshot that saw the change is the "was"."""
    svc = SettingService(rig.control)
    before = svc.get("N", "input", "5")["values"]["dwell"]
    rig.inst.set_input_setup(
        "5", replace(rig.inst.input_setup("5"), dwell=before + 7)
    )  # the front panel (not through the appliance)
    rig.store.snapshot("N", rig.inst.configuration(["5"]))
    svc.set("N", "input", {"target": "5", "values": {"pause": 5}}, "10.0.0.9")
    was = _requested(rig.store, "{'pause': 5}").split("(was ")[1]
    assert f"'dwell': {before + 7}" in was, was  # main: the older last read
