"""The update's state on the data partition and what a boot makes of it (issue 28): the marker written
atomically, the firmware's device-tree flags, the gate's conditions one by one, and the rollback and
late-commit stories a boot tells. Real files in tmp_path; events land in a list (the service writes them
to the store: tests/test_update_gate.py runs that whole path)."""

from __future__ import annotations

import threading

import pytest

from appliance.update import BootInfo, Conditions, HealthGate, UpdateCommands, boot_info, marker, reconcile
from appliance.update.devicetree import DeviceTreeError, write_boot_info
from appliance.update.rollback import NO_COMMIT

from .support.bundles import recorder


def pending(to_slot: str = "B", **kw) -> marker.PendingUpdate:
    return marker.PendingUpdate("k.raucb", "0.4.0", "A" if to_slot == "B" else "B", to_slot, 1.8e9, "boot-1", **kw)


def test_the_marker_round_trips_and_is_replaced_whole(tmp_path):
    assert marker.read(tmp_path) is None
    marker.write(tmp_path, pending())
    assert marker.read(tmp_path) == pending()
    marker.update(tmp_path, failure="why")
    assert marker.read(tmp_path) == pending(failure="why")
    assert [p.name for p in tmp_path.iterdir()] == ["pending.json"]  # no temporary file left
    assert marker.remove(tmp_path) and marker.read(tmp_path) is None and not marker.remove(tmp_path)


def test_a_marker_that_is_not_one_is_named_and_left_alone(tmp_path):
    (tmp_path / "pending.json").write_text("{half a marker")
    with pytest.raises(marker.MarkerError, match="pending.json: not a pending-update marker"):
        marker.read(tmp_path)
    events: list = []
    assert reconcile(tmp_path, BootInfo(2, False), lambda k, d: events.append(k)) is None
    assert events == [] and (tmp_path / "pending.json").exists()


def test_the_device_tree_says_the_slot_and_the_try(tmp_path):
    assert boot_info(tmp_path) is None  # not a Pi booted through autoboot.txt
    write_boot_info(tmp_path, 3, True)
    b = boot_info(tmp_path)
    assert (b.slot, b.other, b.tryboot) == ("B", "A", True)
    write_boot_info(tmp_path, 2, False)
    assert boot_info(tmp_path) == BootInfo(2, False)
    (tmp_path / "chosen" / "bootloader" / "partition").write_bytes(b"\x00\x02")
    with pytest.raises(DeviceTreeError, match="partition: 2 bytes, expected a big-endian u32"):
        boot_info(tmp_path)


@pytest.mark.parametrize(
    "booted, recorded, failure, kind, detail",
    [
        (
            "A",
            False,
            None,
            "update_rolled_back",
            f"back on slot A: {pending().describe()} was rolled back: {NO_COMMIT}",
        ),
        (
            "A",
            True,
            "not healthy within 600 s: x",
            "update_rolled_back",
            "was rolled back: not healthy within 600 s: x",
        ),
        ("B", True, None, "update_committed", "was committed (found on the next boot)"),
    ],
)
def test_a_normal_boot_settles_the_marker(tmp_path, booted, recorded, failure, kind, detail):
    marker.write(tmp_path, pending(recorded=recorded, failure=failure))
    events: list[tuple[str, str]] = []
    got = reconcile(tmp_path, BootInfo(2 if booted == "A" else 3, False), lambda k, d: events.append((k, d)))
    assert got == kind and events[-1][0] == kind and detail in events[-1][1]
    assert [k for k, _ in events] == ([] if recorded else ["update_installed"]) + [kind]
    assert marker.read(tmp_path) is None


def test_the_try_boot_records_the_install_once_and_keeps_the_marker(tmp_path):
    marker.write(tmp_path, pending())
    events: list[str] = []
    for _ in range(2):  # the service restarted during the try
        reconcile(tmp_path, BootInfo(3, True), lambda k, d: events.append(k))
    assert events == ["update_installed"] and marker.read(tmp_path).recorded


def gate(tmp_path, state: dict, deadline: float = 60.0) -> tuple[HealthGate, list]:
    log = tmp_path / "log"
    rauc = recorder(tmp_path / "rauc", log)
    c = UpdateCommands([str(rauc)], tmp_path / "k", "c", ["true"], ["true"], tmp_path / "dt", tmp_path / "s")
    events: list = []
    g = HealthGate(
        c,
        BootInfo(3, True),
        Conditions(
            ready=lambda: state["ready"],
            instruments=lambda: dict(state["instruments"]),
            store_committed=lambda: state["store"],
            uplinks=lambda: dict(state["uplinks"]),
        ),
        lambda k, d: events.append((k, d)),
        deadline,
        threading.Event(),
    )
    return g, events


def test_each_condition_holds_the_gate_and_is_latched_once_seen(tmp_path):
    state = {"ready": False, "instruments": {"a": False, "b": False}, "store": False, "uplinks": {"uplink[0]": False}}
    g, _ = gate(tmp_path, state)
    assert g.look() == [
        "the service has not signalled READY",
        "instrument a has delivered no reading",
        "instrument b has delivered no reading",
        "the store has not committed",
        "uplink uplink[0] has not connected",
    ]
    state.update(ready=True, store=True, instruments={"a": True, "b": False})
    assert g.look() == ["instrument b has delivered no reading", "uplink uplink[0] has not connected"]
    state["uplinks"] = {"uplink[0]": True}
    assert g.look() == ["instrument b has delivered no reading"]
    state.update(uplinks={"uplink[0]": False}, instruments={"a": False, "b": True})  # dropped again: still seen
    assert g.look() == []


def test_a_failed_commit_is_a_failed_try(tmp_path):
    state = {"ready": True, "instruments": {}, "store": True, "uplinks": {}}
    g, events = gate(tmp_path, state)
    g.c = UpdateCommands(["false"], *list(g.c.__dict__.values())[1:])  # mark-good cannot run
    g._run()
    assert g.state == "failed" and events[0][0] == "update_failed"
    assert "the commit failed: rauc status mark-good booted failed (exit 1)" in events[0][1]


def test_a_service_restarted_on_the_try_keeps_the_first_starts_deadline(tmp_path):
    """A crash or the watchdog's restart on the try boot does not restart the clock: a service that keeps
    failing still meets the deadline, and is marked bad."""
    import time

    state = {"ready": False, "instruments": {"a": False}, "store": True, "uplinks": {}}
    first, _ = gate(tmp_path, state, deadline=50)
    marker.write(tmp_path / "s", pending())
    first.start()  # the first start on this boot notes when the try began
    first.stop_event.set()
    first.join(5)
    noted = marker.read(tmp_path / "s")
    assert noted.try_boot_id == marker.boot_id() and noted.try_started is not None
    marker.update(tmp_path / "s", try_started=noted.try_started - 100)  # that start was 100 s ago
    again, events = gate(tmp_path, state, deadline=50)
    t0 = time.monotonic()
    again.start()
    again.join(10)
    assert time.monotonic() - t0 < 5  # no new 50 s: the deadline had already passed
    assert events[0][0] == "update_failed" and events[0][1].startswith("not healthy within 50 s: ")
    assert (tmp_path / "log").read_text().splitlines() == ["status mark-bad booted"]
