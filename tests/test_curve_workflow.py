"""Calibration curves through the control API and `kelvinpi curve` (issue 11), on both emulators."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading

import lakeshore
import pytest

from appliance import config as _config
from appliance.curve_api import same_point
from appliance.service import Appliance
from drivers.curves import Curve, read_340, write_340
from tests.conftest import ROOT, appliance_config, wait_for
from tests.conftest import run_with_timeout as within
from tests.test_security import TOKEN, call, secret_file

pytestmark = pytest.mark.slow  # curve uploads over the emulated links, 1-3 s each

RX = ROOT / "firmware_host/curves/RX-102A.340"
DT = ROOT / "firmware_host/curves/DT-670.340"


@pytest.fixture
def app(tmp_path, emu372, emu240):
    tok = secret_file(tmp_path / "token", TOKEN)
    control_toml = f'\n[control]\nenabled = true\ntoken_file = "{tok}"\n'
    a = Appliance(_config.parse(appliance_config(tmp_path, emu372, emu240, extra=control_toml)))
    a.tmp_path, a.control_toml = tmp_path, control_toml
    a.start()
    a.base_url = f"http://127.0.0.1:{a.web_address[1]}"
    a.token_file = tok
    wait_for(lambda: all(p.health.connected for p in a.pollers), 20, what="connected")
    yield a
    a.stop()


def cli(app, node, *words) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "curve",
            "--url",
            app.base_url,
            "--node",
            node,
            "--token-file",
            str(app.token_file),
            *words,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def small(path, n: int, name: str) -> Curve:
    c = read_340(path)
    return Curve(name, "SN-" + name[-3:], c.data_format, c.limit, c.coefficient, c.points[:n])


def fast(app, monkeypatch):
    """Take out the 65 ms per point the real bridge needs (socs PR #31): tests would wait minutes."""
    from drivers.base import Pacing

    monkeypatch.setattr("drivers.ls372.CURVE_POINT_GAP", 0.0)
    app.pollers[0].instrument.pacing = Pacing(0.0, 0.0, 0.0)


def test_372_upload_list_show_verify_delete(app, emu372, tmp_path, monkeypatch):
    fast(app, monkeypatch)
    f = tmp_path / "x.340"
    f.write_text(write_340(small(RX, 37, "KP-RX37")))
    r = cli(app, "LSA23JD", "upload", "30", str(f))
    assert r.returncode == 0, r.stderr
    assert "37 points written and read back" in r.stdout
    listing = cli(app, "LSA23JD", "list").stdout
    assert " 30  KP-RX37" in listing and " 22  RX-102A-CAL" in listing
    shown = cli(app, "LSA23JD", "show", "30").stdout
    back = read_340_text(shown)
    assert back.name == "KP-RX37" and len(back.points) == 37
    assert cli(app, "LSA23JD", "verify", "30", str(f)).returncode == 0
    other = tmp_path / "y.340"
    c = small(RX, 37, "KP-RX37")
    c.points[11] = (c.points[11][0] + 0.01, c.points[11][1])
    other.write_text(write_340(c))
    r = cli(app, "LSA23JD", "verify", "30", str(other))
    assert r.returncode == 1 and "point 12 differs" in r.stdout
    # the vendor's own driver reads back what our command uploaded
    host, port = emu372.tcp.address
    oracle = within(lambda: lakeshore.Model372(baud_rate=None, ip_address=host, tcp_port=port, timeout=2))
    try:
        assert within(lambda: oracle.get_curve_header(30)).curve_name == "KP-RX37"
        uploaded = small(RX, 37, "KP-RX37").points
        for i in (1, 12, 20, 37):
            u, t = within(lambda: oracle.get_curve_data_point(30, i))
            assert (u, t) == pytest.approx(uploaded[i - 1], rel=1e-5)
    finally:
        within(lambda: oracle.disconnect_tcp())
    assert cli(app, "LSA23JD", "delete", "30").returncode == 0
    assert " 30  " not in cli(app, "LSA23JD", "list").stdout
    r = cli(app, "LSA23JD", "delete", "5")
    assert r.returncode == 1 and "user curves are 21-59" in r.stderr
    events = [e["detail"] for e in app.store.events() if e["kind"] == "control"]
    assert any("applied: curve 30 upload: KP-RX37" in d for d in events)
    assert any("applied: curve 30 delete" in d for d in events)


def read_340_text(text: str) -> Curve:
    from drivers.curves import parse_340

    return parse_340(text)


def test_372_full_200_points_and_new_header_in_next_snapshot(app, monkeypatch):
    """A 200-point upload into the curve channel A and 5 use; the next snapshot names it."""
    fast(app, monkeypatch)
    c = read_340(RX)
    pts = (c.points * 2)[:200]
    pts = sorted({p[0]: p for p in pts}.values())  # distinct units
    while len(pts) < 200:
        u, t = pts[-1]
        pts.append((u + 0.01, t * 0.999))
    curve = Curve("KP-FULL", "SN200", 4, c.limit, c.coefficient, pts[:200])
    url = f"{app.base_url}/api/v1/control/LSA23JD/curves/22"
    status, _, body = call(url, "PUT", {"text": write_340(curve)}, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 409, body  # channels A and 5 use curve 22: replacing it needs force, naming them
    assert "used by inputs 5, A" in json.loads(body)["error"]["message"]
    status, _, body = call(url, "PUT", {"text": write_340(curve), "force": True}, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["points"] == 200, body
    snap = wait_for(
        lambda: (lambda s: s if s and s[-1][1]["curves"]["22"]["name"] == "KP-FULL" else None)(
            app.store.snapshots("LSA23JD")
        ),
        20,
        what="snapshot with the new header",
    )
    assert snap[-1][1]["curves"]["22"]["serial"] == "SN200"


def test_upload_refused_when_read_back_differs(app, emu372):
    """The instrument keeps something else than was written: 409 naming the first differing point."""
    orig = emu372.device.curves.set_point

    def lossy(number, index, units, kelvin):
        orig(number, index, units * (1.01 if index == 7 else 1.0), kelvin)

    emu372.device.curves.set_point = lossy
    status, _, body = call(
        f"{app.base_url}/api/v1/control/LSA23JD/curves/31",
        "PUT",
        {"text": write_340(small(RX, 10, "KP-LOSS"))},
        {"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 409 and "point 7 differs" in json.loads(body)["error"]["message"], body


def test_240_upload_and_the_vendor_upload_read_back(app, emu240, tmp_path, monkeypatch):
    f = tmp_path / "dt.340"
    f.write_text(write_340(small(DT, 80, "KP-DT80")))
    r = cli(app, "LSA24AZ", "upload", "2", str(f))
    assert r.returncode == 1 and "used by input 2" in r.stderr  # the 240's curve 2 is input 2's
    r = cli(app, "LSA24AZ", "upload", "2", str(f), "--force")
    assert r.returncode == 0, r.stderr
    assert " 2  KP-DT80" in cli(app, "LSA24AZ", "list").stdout
    snap = wait_for(
        lambda: (lambda s: s if s and s[-1][1]["channels"]["2"]["curve"]["name"] == "KP-DT80" else None)(
            app.store.snapshots("LSA24AZ")
        ),
        20,
        what="240 snapshot with the new header",
    )
    assert snap
    r = cli(app, "LSA24AZ", "upload", "3", str(f))
    assert r.returncode == 1 and "curves are 1-2" in r.stderr
    # the vendor's driver uploads a curve (header + points, as its API goes) while the appliance is
    # stopped, and our command reads it back
    app.stop()
    from types import SimpleNamespace

    import lakeshore.generic_instrument as generic

    monkeypatch.setattr(
        generic,
        "comports",
        lambda: [SimpleNamespace(device=emu240.pty.link, vid=0x1FB9, pid=0x0205, serial_number="LSA24AZ")],
    )
    oracle = within(lambda: lakeshore.Model240(com_port=emu240.pty.link, timeout=1))
    theirs = small(DT, 12, "VENDOR")
    try:
        within(lambda: oracle.delete_curve(1))
        within(lambda: oracle.set_curve_header(1, lakeshore.Model240CurveHeader("VENDOR", "V-1", 2, 325.0, 1)))
        for i, (u, t) in enumerate(theirs.points, 1):
            within(lambda: oracle.set_curve_data_point(1, i, u, t))
    finally:
        within(lambda: oracle.disconnect_usb())
    from drivers.ls240 import Model240

    ours = Model240.serial(emu240.pty.link)
    ours.connect()
    got = ours.download_curve(1)
    ours.close()
    assert got.name == "VENDOR" and len(got.points) == 12
    assert all(
        same_point(ours, w, g) for w, g in zip(theirs.points, got.points, strict=False)
    )  # the 240 keeps 6 digits


def test_control_off_means_no_curve_api(running_appliance):
    status, _, body = call(
        f"{running_appliance.base_url}/api/v1/control/LSA23JD/curves", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 403 and "disabled" in json.loads(body)["error"]["message"]


def test_240_driver_upload_verifies_at_six_digits(emu240):
    """The 240 keeps six digits (``+0.14590`` for 0.145904): the driver's own read-back accepts that
    rounding and refuses a real difference."""
    from drivers import InstrumentError
    from drivers.ls240 import Model240, same_to_six_digits

    assert same_to_six_digits(0.145904, 0.1459) and not same_to_six_digits(0.145904, 0.14592)
    assert same_to_six_digits(475.5, 475.5) and not same_to_six_digits(1.64429, 1.64431)
    m = Model240.serial(emu240.pty.link)
    m.connect()
    try:
        m.upload_curve(2, Curve("SIX", "D6", 2, 325.0, 1, [(0.145904, 475.0), (0.312345, 450.0)]))
        orig = emu240.device.curves.set_point
        emu240.device.curves.set_point = lambda n, i, u, t: orig(n, i, u + (0.001 if i == 2 else 0), t)
        with pytest.raises(InstrumentError, match="point 2"):
            m.upload_curve(2, Curve("SIX", "D6", 2, 325.0, 1, [(0.145904, 475.0), (0.312345, 450.0)]))
    finally:
        m.close()


def test_each_model_refuses_what_its_memory_or_outputs_cannot_take(app):
    """The drivers declare each model's curve formats, curve numbers and heater outputs; the API names them."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    dt = small(DT, 10, "KP-DT10")  # format 2: V/K, a diode curve
    spline = Curve("KP-SPLINE", "SN-SPL", 7, 40.0, 1, small(RX, 10, "x").points)  # 7: the 372's cubic spline

    def refused(path, method, body):
        status, _, text = call(f"{app.base_url}/api/v1/control/{path}", method, body, auth)
        assert status == 400, (path, status, text)
        return json.loads(text)["error"]["message"]

    msg = refused("LSA23JD/curves/30", "PUT", {"text": write_340(dt)})
    assert "data format 2 cannot be stored in a Model 372 (formats 3, 4, 7)" in msg
    msg = refused("LSA24AZ/curves/1", "PUT", {"text": write_340(spline)})
    assert "data format 7 cannot be stored in a Model 240 (formats 2, 3, 4)" in msg
    assert "LSA24AZ: curves are 1-2, not 9" in refused("LSA24AZ/curves/9", "PUT", {"text": write_340(dt)})
    assert "LSA23JD: user curves are 21-59, not 20" in refused("LSA23JD/curves/20", "PUT", {"text": write_340(dt)})
    assert "only a 372 has heaters to set" in refused("LSA24AZ/setpoint", "POST", {"output": 0, "kelvin": 0.01})
    assert "output must be 0" in refused("LSA23JD/setpoint", "POST", {"output": 2, "kelvin": 0.01})


# -- issue 22: never half written without a trace ---------------------------------------------
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def put_curve(app, number: int, curve: Curve, force: bool = False):
    body = {"text": write_340(curve), "force": force}
    status, _, text = call(f"{app.base_url}/api/v1/control/LSA23JD/curves/{number}", "PUT", body, AUTH)
    return status, json.loads(text)


def request_events(app, what: str) -> list[str]:
    """The audit events of the (latest) request whose first event names ``what``."""
    events = [e["detail"] for e in reversed(app.store.events(limit=2000)) if e["kind"] == "control"]
    first = [e for e in events if "requested by" in e and what in e][-1]
    rid = first.split("]")[0] + "]"
    return [e for e in events if e.startswith(rid)]


def slot(emu372, n: int):
    c = emu372.device.curves.curve(n)
    return None if c is None else (c.name, len(c.points))


def drop_the_link_during(emu, monkeypatch, step: str) -> list[str]:
    """Make ``emu`` drop its links once, at ``step`` of the next upload to slot 23; returns the steps fired.

    The drop tests here and in tests/test_settings_visa.py cut the link at the same three points of
    an upload (before the delete, after the header, after point 5), whatever the transport.
    """
    mem = emu.device.curves
    fired: list[str] = []

    def once() -> bool:
        if fired:
            return False
        fired.append(step)
        emu.control("drop")
        return True

    if step == "before the delete":
        orig_delete = mem.delete
        monkeypatch.setattr(mem, "delete", lambda n: None if n == 23 and once() else orig_delete(n))
    elif step == "after the header":
        orig_header = mem.set_header
        monkeypatch.setattr(mem, "set_header", lambda n, *a: (orig_header(n, *a), n == 23 and once()))
    else:
        orig_point = mem.set_point
        monkeypatch.setattr(
            mem, "set_point", lambda n, i, u, t: (orig_point(n, i, u, t), n == 23 and i == 5 and once())
        )
    return fired


def settled_after_the_drop(app, emu, what: str):
    """Wait until slot 23 holds KP-OLD12 or KP-NEW30 and is not marked incomplete; returns (name, points).

    Also asserts the old curve was kept in the store, by slot and content hash, before the slot was
    touched.
    """
    poller = app.pollers[0]

    def settled():
        got = slot(emu, 23)
        if got in (("KP-OLD12", 12), ("KP-NEW30", 30)) and "23" not in poller.health.incomplete_curves:
            return got
        return None

    got = wait_for(settled, 30, what=what)
    assert got in (("KP-OLD12", 12), ("KP-NEW30", 30))
    kept = [c for _, c in app.store.snapshots("LSA23JD/curve 23")]
    assert any(k["curve"]["name"] == "KP-OLD12" and len(k["curve"]["points"]) == 12 for k in kept), kept
    return got


@pytest.mark.parametrize("step", ["before the delete", "after the header", "after point 5"])
def test_a_link_drop_during_an_upload_leaves_new_old_or_incomplete_and_two_events(app, emu372, monkeypatch, step):
    fast(app, monkeypatch)
    old = small(RX, 12, "KP-OLD12")
    assert put_curve(app, 23, old)[0] == 200
    fired = drop_the_link_during(emu372, monkeypatch, step)
    new = small(RX, 30, "KP-NEW30")
    status, body = put_curve(app, 23, new)
    assert status == 503 and fired, body
    assert "curve 23" in body["error"]["message"]
    events = request_events(app, "curve 23 upload: KP-NEW30")
    assert len(events) == 2 and "failed part way" in events[1], events
    # the link comes back; the old curve is put back (or the slot is still marked incomplete)
    got = settled_after_the_drop(app, emu372, "the slot settled")
    curve_events = [e["detail"] for e in app.store.events(limit=2000) if e["kind"] == "curve"]
    if step != "before the delete" or got != ("KP-OLD12", 12):
        assert any("curve 23 marked incomplete" in d for d in curve_events), curve_events


def slow_upload_outlives_its_answer(app, emu, monkeypatch, name: str, points: int) -> None:
    """Upload ``points`` points to slot 24 slowly enough that the answer (503) comes before the
    upload ends, and check its outcome is still recorded and the curve lands; here and over VISA."""
    fast(app, monkeypatch)
    monkeypatch.setattr("appliance.curve_api.UPLOAD_TIMEOUT", 1.0)
    emu.control("slow 0.08 CRVPT")
    try:
        status, body = put_curve(app, 24, small(RX, points, name))
        assert status == 503 and "did not finish within 1 s" in body["error"]["message"], body
        events = wait_for(
            lambda: (lambda ev: ev if len(ev) == 2 else None)(request_events(app, f"curve 24 upload: {name}")),
            60,
            what="the outcome of the slow upload",
        )
        assert "applied after its answer" in events[1], events
    finally:
        emu.control("clear")
    assert slot(emu, 24) == (name, points)


def test_a_slow_upload_that_outlives_its_answer_still_records_its_outcome(app, emu372, monkeypatch):
    slow_upload_outlives_its_answer(app, emu372, monkeypatch, "KP-SLOW25", 25)


def test_deleting_a_curve_in_use_needs_force_and_names_the_inputs(app, emu372):
    r = cli(app, "LSA23JD", "delete", "22")
    assert r.returncode == 1 and "used by inputs 5, A" in r.stderr and "--force" in r.stderr, r.stderr
    assert slot(emu372, 22) is not None
    events = request_events(app, "curve 22 delete")
    assert len(events) == 2 and "refused" in events[1]
    assert "(was RX-102A-CAL" in events[0], events  # the header as the connect snapshot read it
    r = cli(app, "LSA23JD", "delete", "22", "--force")
    assert r.returncode == 0, r.stderr
    assert slot(emu372, 22) is None
    kept = wait_for(lambda: app.store.snapshots("LSA23JD/curve 22"), 10, what="the deleted curve kept")
    assert kept[-1][1]["curve"]["name"] == "RX-102A-CAL" and kept[-1][1]["hash"]


def test_a_name_longer_than_the_instrument_holds_is_refused_not_cut(app, emu372):
    status, body = put_curve(app, 25, small(RX, 5, "KP-A-VERY-LONG-NAME"))
    assert status == 400 and "holds at most 15" in body["error"]["message"], body
    assert slot(emu372, 25) is None


@pytest.mark.parametrize(
    "name, serial", [("RT22,BAD", "SN-1"), ("RT22-Ωcal", "SN-2"), ("RT22", 'S"N'), ("RT22;CRVDEL 21", "SN-3")]
)
def test_a_name_or_serial_the_header_cannot_hold_is_400_before_anything_is_sent(app, emu372, monkeypatch, name, serial):
    """Issue 22 red team, finding 2: such a name emptied the slot (CRVDEL went first) with no trace."""
    fast(app, monkeypatch)
    assert put_curve(app, 26, small(RX, 8, "KP-KEEP08"))[0] == 200
    heard = len(emu372.ledger.heard)
    c = small(RX, 10, "x")
    status, body = put_curve(app, 26, Curve(name, serial, c.data_format, c.limit, c.coefficient, c.points))
    assert status == 400, body
    assert "nothing was sent" in body["error"]["message"], body
    sent = [line for line in list(emu372.ledger.heard)[heard:] if line.startswith("CRV")]
    assert not [line for line in sent if not line.startswith(("CRVHDR?", "CRVPT?"))], sent
    assert slot(emu372, 26) == ("KP-KEEP08", 8)


def test_the_driver_refuses_a_bad_name_before_it_deletes_the_slot(app, emu372, monkeypatch):
    """The driver's own check comes before CRVDEL: a ValueError there never empties the slot."""
    fast(app, monkeypatch)
    assert put_curve(app, 27, small(RX, 8, "KP-KEEP08"))[0] == 200
    c = small(RX, 10, "x")
    for name in ("A-NAME-OF-SIXTEEN", "RT22,BAD"):
        bad = Curve(name, "SN", c.data_format, c.limit, c.coefficient, c.points)
        with pytest.raises(ValueError):
            app.pollers[0].call(lambda inst: inst.upload_curve(27, bad), "test upload", 30)
    assert slot(emu372, 27) == ("KP-KEEP08", 8)


def test_an_incomplete_slot_stays_marked_across_a_restart_and_is_restored_when_the_link_is_back(
    app, emu372, monkeypatch
):
    """Issue 22 red team, finding 3: the mark and the restore lived only in memory and were tried once."""
    fast(app, monkeypatch)
    old = small(RX, 12, "KP-OLD12")
    assert put_curve(app, 28, old)[0] == 200
    mem = emu372.device.curves
    orig_point = mem.set_point
    fired: list[int] = []

    def point(n, i, u, t):
        orig_point(n, i, u, t)
        if n == 28 and i == 5 and not fired:
            fired.append(i)
            emu372.control("mute on")  # the link stays down: the appliance cannot reconnect
            emu372.control("drop")

    monkeypatch.setattr(mem, "set_point", point)
    status, body = put_curve(app, 28, small(RX, 30, "KP-NEW30"))
    assert status == 503 and fired, body
    assert "28" in app.pollers[0].health.incomplete_curves
    app.stop()  # before the link is back

    b = Appliance(_config.parse(appliance_config(app.tmp_path, emu372, None, extra=app.control_toml)))
    b.start()
    try:
        assert "28" in b.pollers[0].health.incomplete_curves  # marked again at start, link still down
        assert slot(emu372, 28) != ("KP-OLD12", 12)
        emu372.control("mute off")
        wait_for(lambda: "28" not in b.pollers[0].health.incomplete_curves, 60, what="the old curve put back")
        assert slot(emu372, 28) == ("KP-OLD12", 12)
        events = [e["detail"] for e in b.store.events(limit=2000) if e["kind"] in ("curve", "control")]
        assert any("curve 28 still marked incomplete at start" in d for d in events), events
        assert any("curve 28 no longer incomplete" in d for d in events), events
    finally:
        b.stop()


def test_a_failed_restore_is_tried_again_until_the_old_curve_is_back(app, emu372, monkeypatch):
    """Issue 22 red team, finding 3: the restore was tried once ('except ControlRefused: pass')."""
    from firmware_host.protocol import ExecutionError

    fast(app, monkeypatch)
    assert put_curve(app, 29, small(RX, 12, "KP-OLD12"))[0] == 200
    mem = emu372.device.curves
    orig_point, orig_header = mem.set_point, mem.set_header
    fired: list[str] = []

    def point(n, i, u, t):
        orig_point(n, i, u, t)
        if n == 29 and i == 5 and not fired:
            fired.append("drop")
            emu372.control("drop")

    def header(n, name, *rest):
        if n == 29 and name == "KP-OLD12" and fired.count("refused") < 2:
            fired.append("refused")  # the first two restores are refused by the instrument (ESR 16)
            raise ExecutionError("refused for the test")
        orig_header(n, name, *rest)

    monkeypatch.setattr(mem, "set_point", point)
    monkeypatch.setattr(mem, "set_header", header)
    status, body = put_curve(app, 29, small(RX, 30, "KP-NEW30"))
    assert status == 503 and fired, body
    poller = app.pollers[0]
    wait_for(lambda: "29" not in poller.health.incomplete_curves, 30, what="the old curve put back at last")
    assert fired.count("refused") == 2 and slot(emu372, 29) == ("KP-OLD12", 12)


def _drop_at(app, emu372, monkeypatch, number: int, plan: list[int]) -> list[int]:
    """Drop the link after point ``plan[0]`` of the next write to slot ``number``, then ``plan[1]`` ..."""
    fast(app, monkeypatch)
    mem = emu372.device.curves
    orig_point = mem.set_point

    def point(n, i, u, t):
        orig_point(n, i, u, t)
        if n == number and plan and i == plan[0]:
            plan.pop(0)
            emu372.control("drop")

    monkeypatch.setattr(mem, "set_point", point)
    return plan


@pytest.mark.parametrize("store", ["writing", "full"])
def test_two_drops_in_a_row_put_back_the_old_curve_never_the_cut_short_copy(app, emu372, monkeypatch, store):
    """Red team 2122, fault 2: an upload dropped at point 5, the automatic restore dropped at point 3,
    the person's retry dropped at point 4. On main the retry took the 3-point copy in the slot for
    "the old curve", the next restore wrote it back and cleared the mark: slot 23 held ('KP-OLD12', 3),
    unmarked, and the event said the old curve was put back.

    Red team 2122b, fault 1: the same with a store that cannot write (a full disk): the kept copy
    waited in memory, the lookup read SQLite only, the retry said "the slot was empty", its restore
    was never scheduled and slot 23 kept ('KP-RETRY20', 4)."""
    if store == "full":

        def full(samples):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(app.store, "write", full)
    assert put_curve(app, 23, small(RX, 12, "KP-OLD12"))[0] == 200
    plan = _drop_at(app, emu372, monkeypatch, 23, [5, 3, 4])
    assert put_curve(app, 23, small(RX, 30, "KP-NEW30"))[0] == 503
    poller = app.pollers[0]
    wait_for(lambda: len(plan) == 1, 20, what="the restore's first try dropped")
    wait_for(lambda: poller.health.connected, 20, what="reconnected")
    assert slot(emu372, 23) == ("KP-OLD12", 3)  # cut short by the second drop
    answers: list = []

    def retry() -> bool:  # the person retries at once (again if the link was not back yet: nothing sent)
        answers.append(put_curve(app, 23, small(RX, 20, "KP-RETRY20")))
        return "is not connected" not in answers[-1][1]["error"]["message"]

    wait_for(retry, 20, what="the retry reached the instrument")
    status, body = answers[-1]
    assert status == 503 and not plan, body
    assert "KP-OLD12" in body["error"]["message"], body
    wait_for(lambda: "23" not in poller.health.incomplete_curves, 30, what="the old curve put back")
    assert slot(emu372, 23) == ("KP-OLD12", 12)
    assert emu372.device.curves.curve(23).points == small(RX, 12, "KP-OLD12").points


def test_deleting_a_slot_marked_incomplete_ends_its_pending_restore(app, emu372, monkeypatch):
    """Red team 2122, fault 3: a slot marked incomplete, its restore backing off after a failed try;
    a person deletes the slot (200). On main the mark stayed and seconds later the restore filled
    the slot again, undoing the delete."""
    assert put_curve(app, 24, small(RX, 12, "KP-OLD12"))[0] == 200
    plan = _drop_at(app, emu372, monkeypatch, 24, [5, 3])
    assert put_curve(app, 24, small(RX, 30, "KP-NEW30"))[0] == 503
    poller = app.pollers[0]
    wait_for(lambda: not plan, 20, what="the restore's first try dropped")
    wait_for(lambda: poller.health.connected, 20, what="reconnected")
    assert "24" in poller.health.incomplete_curves
    answers: list = []

    def delete() -> bool:  # again if the link was not back yet, or dropped again before it (nothing sent)
        answers.append(call(f"{app.base_url}/api/v1/control/LSA23JD/curves/24", "DELETE", None, AUTH))
        return not any(m in answers[-1][2] for m in ("is not connected", "link lost"))

    wait_for(delete, 20, what="the delete reached the instrument")
    status, _, text = answers[-1]
    assert status == 200, text
    assert "24" not in poller.health.incomplete_curves
    wait_for(  # the restore's thread ends by itself (after its backoff) without writing
        lambda: not any(t.name == "restore-24" and t.is_alive() for t in threading.enumerate()),
        30,
        what="the pending restore ended",
    )
    assert slot(emu372, 24) is None
    events = [e["detail"] for e in app.store.events(limit=200) if e["kind"] == "curve"]
    assert any("curve 24 no longer incomplete: deleted by" in d for d in events), events
