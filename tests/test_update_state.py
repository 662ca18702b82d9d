"""The update's state on the data partition and what a boot makes of it (issue 28): the marker written
atomically, the firmware's device-tree flags, the gate's conditions one by one, and the rollback and
late-commit stories a boot tells. Real files in tmp_path; events land in a list (the service writes them
to the store: tests/test_update_gate.py runs that whole path)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from appliance.update import BootInfo, Conditions, HealthGate, UpdateCommands, boot_info, marker, reconcile
from appliance.update.bundle import BundleInfo, BundleRefused, stage, what_is
from appliance.update.devicetree import DeviceTreeError, write_boot_info
from appliance.update.install import Installer, InstallFailed, UpdateBusy
from appliance.update.rollback import NO_COMMIT

from .support.bundles import recorder, status_rauc


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


GOOD = {
    "bundle": "k.raucb",
    "bundle_version": "1",
    "from_slot": "A",
    "to_slot": "B",
    "started_at": 1.8e9,
    "boot_id": "x",
}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "(empty)"),
        ("{half a marker", "(Expecting property name"),
        ("null", "(a JSON null, not an object)"),
        ("[]", "(a JSON list, not an object)"),
        ('"x"', "(a JSON str, not an object)"),
        (json.dumps({**GOOD, "started_at": "soon"}), "('started_at' is 'soon', not UNIX seconds)"),
        (json.dumps({**GOOD, "started_at": 1e300}), "('started_at' is 1e+300, not UNIX seconds)"),
        (json.dumps({**GOOD, "to_slot": None}), "('to_slot' is None, not text)"),
        (json.dumps({**GOOD, "recorded": "false"}), "('recorded' is 'false', not true or false)"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "boot_id"}), "(no 'boot_id')"),
        (json.dumps({**GOOD, "try_started": float("nan")}), "('try_started' is nan, not seconds since boot)"),
    ],
)
@pytest.mark.parametrize("boot", [BootInfo(2, False), BootInfo(3, True)])
def test_a_marker_that_is_not_one_is_told_as_an_event_and_set_aside(tmp_path, text, problem, boot):
    """Valid JSON of another shape never raises past ``read`` (it stopped the service from starting); the
    boot records what it knows and moves the file aside, so it neither blocks nor repeats."""
    (tmp_path / "pending.json").write_text(text)
    with pytest.raises(marker.MarkerError, match="pending.json: not a pending-update marker ") as err:
        marker.read(tmp_path)
    assert problem in str(err.value)
    events: list[tuple[str, str]] = []
    assert reconcile(tmp_path, boot, lambda k, d: events.append((k, d))) == "update_unknown"
    ((kind, detail),) = events
    assert kind == "update_unknown" and problem in detail and f"slot {boot.slot}" in detail
    (aside,) = tmp_path.glob("pending.json.unreadable-*")
    assert f"set aside as {aside}" in detail and aside.read_text() == text
    assert marker.read(tmp_path) is None
    assert reconcile(tmp_path, boot, lambda k, d: events.append((k, d))) is None and len(events) == 1


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


TRY_B = BootInfo(3, True)  # the try boot of slot B


def gate(
    tmp_path, state: dict, deadline: float = 60.0, boot: BootInfo = TRY_B, with_status: bool = False
) -> tuple[HealthGate, list]:
    """A gate over ``state``; its ``rauc`` records its calls and, ``with_status``, keeps the primary slot as the
    image's backend does (tmp_path/primary: A until a commit); without, ``rauc status`` has no answer."""
    log = tmp_path / "log"
    write_boot_info(tmp_path / "dt", boot.partition, boot.tryboot)
    if with_status:
        rauc = status_rauc(tmp_path / "rauc", log, tmp_path / "dt", tmp_path / "primary")
        if not (tmp_path / "primary").exists():
            (tmp_path / "primary").write_text("A\n")
    else:
        rauc = recorder(tmp_path / "rauc", log)
    c = UpdateCommands([str(rauc)], tmp_path / "k", "c", ["true"], ["true"], tmp_path / "dt", tmp_path / "s")
    events: list = []
    g = HealthGate(
        c,
        boot,
        Conditions(
            ready=lambda: state["ready"],
            instruments=lambda: dict(state["instruments"]),
            store_committed=lambda: state["store"],
            uplinks=lambda: dict(state["uplinks"]),
        ),
        lambda k, d: events.append((k, d)),
        deadline,
        threading.Event(),
        check_every=0.05,
    )
    return g, events


def changes(tmp_path) -> list[str]:
    """What the gate asked RAUC to change (not its questions)."""
    log = tmp_path / "log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [c for c in lines if c != "status --output-format=json"]


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
    assert changes(tmp_path) == ["status mark-bad booted"]


def all_healthy() -> dict:
    return {"ready": True, "instruments": {"a": True}, "store": True, "uplinks": {}}


def unhealthy() -> dict:
    return {"ready": True, "instruments": {"a": False}, "store": True, "uplinks": {}}


def run_gate(g: HealthGate) -> HealthGate:
    g.start()
    g.join(10)
    return g


@pytest.mark.parametrize("restart", [all_healthy, unhealthy], ids=["healthy", "unhealthy"])
def test_a_committed_try_is_never_judged_again_on_the_same_boot(tmp_path, restart):
    """The tryboot flag stays 1 until the next reboot: a service restarted after the commit (a new config,
    a crash, the watchdog) must neither mark the committed slot bad (the backend would then point [all]
    at the old slot) nor record update_committed again. RAUC's primary says the try is committed."""
    marker.write(tmp_path / "s", pending())
    first, events = gate(tmp_path, all_healthy(), with_status=True)
    assert run_gate(first).state == "committed"
    assert changes(tmp_path) == ["status mark-good booted"] and (tmp_path / "primary").read_text() == "B\n"
    assert [k for k, _ in events] == ["update_committed"] and marker.read(tmp_path / "s") is None
    for _ in range(2):  # restarted twice on the same boot, with the deadline long gone
        again, more = gate(tmp_path, restart(), deadline=0.1, with_status=True)
        run_gate(again)
        assert (again.state, again.verdict) == (
            "idle",
            "slot B is the primary already: nothing on trial (a committed try is not judged again)",
        )
        assert again._thread is None and more == []
        assert again.stats().as_dict()["seconds"] is None
    assert changes(tmp_path) == ["status mark-good booted"] and (tmp_path / "primary").read_text() == "B\n"


def test_where_rauc_cannot_say_only_an_uncommitted_marker_for_this_slot_opens_the_gate(tmp_path):
    # RAUC has no answer (no service): no marker, so the committed try is not judged again
    idle, events = gate(tmp_path, unhealthy(), deadline=0.1)
    assert run_gate(idle).state == "idle" and "not judged" in idle.verdict
    # a marker whose commit is noted but whose removal failed: committed, removed now, no second event
    marker.write(tmp_path / "s", pending(committed=True))
    done, events = gate(tmp_path, unhealthy(), deadline=0.1)
    assert run_gate(done).state == "committed" and events == [] and marker.read(tmp_path / "s") is None
    assert changes(tmp_path) == []
    # an uncommitted marker for this slot: judged (past the deadline: marked bad)
    marker.write(tmp_path / "s", pending())
    judged, events = gate(tmp_path, unhealthy(), deadline=0.1)
    assert run_gate(judged).state == "failed" and [k for k, _ in events] == ["update_failed"]
    assert changes(tmp_path) == ["status mark-bad booted"]


def test_a_commit_cut_off_before_its_event_is_recorded_once_on_the_restart(tmp_path):
    """mark-good went through (RAUC's primary is the booted slot), then the service died before the event."""
    (tmp_path / "primary").write_text("B\n")
    marker.write(tmp_path / "s", pending(recorded=True))
    for n in range(2):
        g, events = gate(tmp_path, unhealthy(), deadline=0.1, with_status=True)
        assert run_gate(g).state == ("idle" if n else "committed")
        assert events == (
            []
            if n
            else [("update_committed", f"{pending().describe()} was committed (found on a restart of the try boot)")]
        )
    assert marker.read(tmp_path / "s") is None and changes(tmp_path) == []


def test_a_committed_marker_found_on_the_next_boot_is_not_committed_twice(tmp_path):
    """The commit noted itself in the marker, then its removal failed: the next boot only removes it."""
    marker.write(tmp_path, pending(recorded=True, committed=True))
    events: list = []
    assert reconcile(tmp_path, BootInfo(3, False), lambda k, d: events.append(k)) == "update_committed"
    assert events == [] and marker.read(tmp_path) is None


@pytest.mark.parametrize("with_status", [True, False], ids=["rauc says A is primary", "rauc cannot say"])
def test_a_try_of_the_slot_the_update_did_not_write_neither_commits_nor_claims_it(tmp_path, with_status):
    """The firmware tried slot A (its [tryboot] no longer named B): the update A -> B was never tried."""
    marker.write(tmp_path / "s", pending("B", recorded=True))
    g, events = gate(tmp_path, all_healthy(), boot=BootInfo(2, True), with_status=with_status)
    assert reconcile(tmp_path / "s", g.boot, g.record) == "update_rolled_back"
    ((kind, detail),) = events
    assert detail == (
        f"on slot A: {pending().describe()} was rolled back: "
        "the try boot started slot A, not slot B: the update was never tried"
    )
    assert run_gate(g).state == "idle" and len(events) == 1 and changes(tmp_path) == []
    assert marker.read(tmp_path / "s") is None


def test_the_gate_alone_does_not_commit_a_try_of_another_slot_than_the_markers(tmp_path):
    marker.write(tmp_path / "s", pending("B"))
    g, events = gate(tmp_path, all_healthy(), boot=BootInfo(2, True), with_status=True)
    assert run_gate(g).state == "idle" and "the update is for slot B" in g.verdict
    assert events == [] and changes(tmp_path) == [] and marker.read(tmp_path / "s") == pending("B")


def test_a_restart_on_the_boot_that_installed_settles_nothing(tmp_path):
    """The service restarted between the install and the try reboot: the try has not happened yet."""
    this_boot = marker.boot_id()
    assert this_boot  # the kernel gives every boot an id
    marker.write(tmp_path, marker.PendingUpdate("k.raucb", "0.4.0", "A", "B", 1.8e9, this_boot))
    events: list = []
    assert reconcile(tmp_path, BootInfo(2, False), lambda k, d: events.append(k)) is None
    assert events == [] and marker.read(tmp_path).boot_id == this_boot


def installer(tmp_path, state_dir, record) -> Installer:
    log = tmp_path / "log"
    rauc = recorder(tmp_path / "rauc", log)
    write_boot_info(tmp_path / "dt", 2, False)
    return Installer(
        UpdateCommands([str(rauc)], tmp_path / "k", "c", ["true"], ["true"], tmp_path / "dt", state_dir), record
    )


def test_nothing_claims_installed_when_the_marker_cannot_be_written(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    events: list = []
    inst = installer(tmp_path, tmp_path / "not-a-dir" / "state", lambda k, d: events.append(k))
    info = BundleInfo(str(tmp_path / "k.raucb"), "kelvinpi-rpi-arm64", "0.4.0", "verity", "CN=x", "k.raucb")
    with pytest.raises(InstallFailed) as err:
        inst.install(info)
    assert str(err.value).startswith("slot B was written, but the update marker could not be (")
    assert "not rebooting into it, so nothing is pending and slot A still boots" in str(err.value)
    assert events == [] and (tmp_path / "log").read_text().split() == ["install", info.path]


def test_a_second_install_on_the_boot_that_installed_is_refused(tmp_path):
    events: list = []
    inst = installer(tmp_path, tmp_path / "state", lambda k, d: events.append(k))
    info = BundleInfo(str(tmp_path / "k.raucb"), "kelvinpi-rpi-arm64", "0.4.0", "verity", "CN=x", "k.raucb")
    first = inst.install(info)
    assert events == ["update_installed"] and marker.read(tmp_path / "state") == first and first.recorded
    with pytest.raises(UpdateBusy, match=r"k.raucb \(version 0.4.0\) from slot A to slot B was installed on this boot"):
        inst.install(info)
    assert events == ["update_installed"] and len((tmp_path / "log").read_text().splitlines()) == 1


def test_a_bundle_is_staged_as_a_copy_and_what_is_not_a_file_is_named(tmp_path):
    src = tmp_path / "k.raucb"
    src.write_bytes(b"bundle bytes")
    state = tmp_path / "state"
    (state).mkdir(mode=0o700)
    (state / "incoming-999999999.raucb").write_bytes(b"left by a run that is gone")
    copy = stage(src, state)
    assert copy.parent == state and copy.read_bytes() == b"bundle bytes" and copy.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in state.iterdir()] == [copy.name]
    src.write_bytes(b"replaced after the copy")
    assert copy.read_bytes() == b"bundle bytes"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, what in (
        (tmp_path, "a directory, not a bundle file"),
        (fifo, "a FIFO (named pipe), not a bundle file"),  # named, not waited on
        (tmp_path / "gone.raucb", "no such file"),
    ):
        with pytest.raises(BundleRefused) as err:
            stage(path, state)
        assert str(err.value) == f"refused update bundle {path}: {what}"
        assert what_is(path) == what


@pytest.mark.parametrize("primary", ["A", "B", None], ids=["on trial", "committed", "rauc cannot say"])
def test_a_try_boot_refuses_an_install_only_until_it_has_committed(tmp_path, primary):
    """The tryboot flag stays 1 for the whole try boot; once the gate has committed (RAUC's primary is the
    booted slot) the next update may write the other slot on the same boot (the qemu scenario (h) met it)."""
    log = tmp_path / "log"
    write_boot_info(tmp_path / "dt", 3, True)
    rauc = status_rauc(tmp_path / "rauc", log, tmp_path / "dt", tmp_path / "primary")
    if primary:
        (tmp_path / "primary").write_text(primary + "\n")
    inst = Installer(
        UpdateCommands([str(rauc)], tmp_path / "k", "c", ["true"], ["true"], tmp_path / "dt", tmp_path / "s")
    )
    if primary == "B":
        inst.refuse_if_busy()
    else:
        with pytest.raises(UpdateBusy, match="this boot is the try of slot B, not committed yet"):
            inst.refuse_if_busy()
    assert log.read_text().split("\n")[:1] == ["status --output-format=json"]
