"""The Bluefors log follower against the emulated log writer's ledger: every line once, whatever happens.

Each test runs the emulated writer (``firmware_host.bluefors_writer``) in simulated time and a
``Follower`` on its folder, then compares the (socs name, UNIX time, value) of every value taken
with the writer's ledger, as multisets: a lost line is missing, a doubled one counted twice.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from appliance.bluefors.follower import FolderGone, Follower, Line
from appliance.bluefors.formats import BadLine, identify, parse_line
from appliance.bluefors.localtime import to_unix
from firmware_host.bluefors_writer import BlueforsWriter, bf_number

TZ = ZoneInfo("Europe/Helsinki")
# fewer lines than the Bluefors software writes (a test's seconds go into the changes, not the volume)
LIGHT = {"CH": 300.0, "Flowmeter": 60.0, "maxigauge": 60.0, "Channels": 120.0, "Status": 120.0, "Heaters": 120.0}


def writer(root, start: float, **kw) -> BlueforsWriter:
    return BlueforsWriter(root, TZ, start, periods=LIGHT, **kw)


def at(y: int, mo: int, d: int, h: int, mi: int, fold: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=TZ, fold=fold).timestamp()


def ledger(w: BlueforsWriter) -> Counter:
    return Counter((name, e.t, v) for e in w.ledger for name, v in e.values)


class Taken:
    """What a follower emitted, as the ledger counts it."""

    def __init__(self) -> None:
        self.values: Counter = Counter()
        self.lines: list[Line] = []
        self.keys: set[tuple[str, float]] = set()

    def __call__(self, line: Line) -> None:
        self.lines.append(line)
        for f, v in line.values:
            self.values[(f.ocs, line.t, v)] += 1
            self.keys.add((f.name, line.t))

    def seen(self, name: str, t: float) -> bool:
        """What the store answers a restarted follower: is this field's value at this time stored."""
        return (name, t) in self.keys


def run(w: BlueforsWriter, f: Follower, taken: Taken, seconds: float, step: float = 37.0) -> None:
    """The writer runs ``seconds`` of simulated time; the follower polls every ``step`` of it."""
    left = seconds
    while left > 0:
        w.advance(min(step, left))
        left -= step
        f.poll(taken)


def assert_same(w: BlueforsWriter, taken: Taken) -> None:
    want, got = ledger(w), taken.values
    lost, doubled = want - got, got - want
    assert not lost and not doubled, f"lost {sum(lost.values())} e.g. {list(lost)[:3]}, extra {list(doubled)[:3]}"
    assert sum(want.values()) > 0


def test_midnight_rollover_yesterday_read_to_its_end_first(tmp_path):
    w = BlueforsWriter(tmp_path, TZ, at(2026, 12, 6, 23, 50))  # the software's own rates
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 20 * 60, step=97)  # polls straddle midnight: both folders hold new lines
    assert_same(w, taken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["26-12-06", "26-12-07"]
    times = [ln.t for ln in taken.lines if ln.path.startswith("26-12-06/CH6 T")]
    assert times and max(times) < at(2026, 12, 7, 0, 0)


def test_daylight_saving_ends_the_repeated_hour_is_two_hours(tmp_path):
    # Helsinki: 2026-10-25 04:00 EEST -> 03:00 EET; 03:00-03:59 is written twice
    start = at(2026, 10, 25, 2, 30)
    w = writer(tmp_path, start)
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 3 * 3600, step=301)
    assert_same(w, taken)
    local = [ln for ln in (tmp_path / "26-10-25" / "CH6 T 26-10-25.log").read_text().splitlines()]
    stamps = [ln.split(",")[1] for ln in local]
    assert stamps.count("03:30:00") == 2  # the writer did repeat the hour
    t = [ln.t for ln in taken.lines if ln.path.endswith("CH6 T 26-10-25.log")]
    assert t == sorted(t) and len(set(t)) == len(t)  # UNIX times strictly rising through the change
    assert t[-1] - t[0] == 3 * 3600  # three hours of UNIX time from 02:30 to 04:30 local, not two


def test_restart_inside_the_repeated_hour_keeps_the_fold(tmp_path):
    w = writer(tmp_path, at(2026, 10, 25, 2, 50))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, at(2026, 10, 25, 3, 20, fold=1) - w.now, step=120)  # into the second pass
    again = Follower(tmp_path, TZ, dict(f.positions), taken.seen)  # what the store gives back
    run(w, again, taken, 3600, step=120)
    assert_same(w, taken)


def test_to_unix_folds_only_a_time_earlier_than_the_line_before():
    local = dt.datetime(2026, 10, 25, 3, 30)
    first, second = at(2026, 10, 25, 3, 30), at(2026, 10, 25, 3, 30, fold=1)
    assert second - first == 3600
    assert to_unix(local, TZ, None) == first
    assert to_unix(local, TZ, first - 60) == first
    assert to_unix(local, TZ, at(2026, 10, 25, 3, 59)) == second
    assert to_unix(dt.datetime(2026, 12, 6, 12, 0), TZ, 2e9) == at(2026, 12, 6, 12, 0)  # unambiguous: as is


def test_replaced_and_rotated_files_lose_and_double_nothing(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 600)
    w.advance(185)  # unread lines in the file when it is replaced (same lines, a new inode)
    w.replace("maxigauge")
    run(w, f, taken, 300)
    w.advance(650)  # unread lines in the file when it is moved aside
    aside = w.rotate("CH6 T")
    run(w, f, taken, 300)
    assert aside.exists() and (aside.parent / "CH6 T 26-12-06.log").stat().st_ino != aside.stat().st_ino
    assert_same(w, taken)


def test_half_written_line_is_waited_for(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 120)
    w.half_line("Flowmeter")
    w.advance(60)
    path = tmp_path / "26-12-06" / "Flowmeter 26-12-06.log"
    assert not path.read_bytes().endswith(b"\n")
    n = len(taken.lines)
    f.poll(taken)
    assert [ln for ln in taken.lines[n:] if "Flowmeter" in ln.path] == []  # nothing from the half line
    run(w, f, taken, 120)
    assert_same(w, taken)


def test_share_outage_empty_mount_point_then_back(tmp_path):
    real, share = tmp_path / "pc", tmp_path / "share"
    real.mkdir()
    share.symlink_to(real)
    w = writer(real, at(2026, 12, 6, 23, 40))
    f, taken = Follower(share, TZ), Taken()
    run(w, f, taken, 300)
    share.unlink()
    share.mkdir()  # unmounted: the mount point is an empty folder
    w.advance(1800)  # the PC goes on writing, across midnight
    with pytest.raises(FolderGone, match="is the share mounted"):
        f.poll(taken)
    share.rmdir()
    with pytest.raises(FolderGone, match="cannot be read"):
        f.poll(taken)
    share.symlink_to(real)
    f.poll(taken)
    run(w, f, taken, 300)
    assert_same(w, taken)


def test_status_log_appearing_late_is_read_from_its_start(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0), status_from=at(2026, 12, 6, 10, 7))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 300)
    assert not (tmp_path / "26-12-06" / "Status 26-12-06.log").exists()
    run(w, f, taken, 600)
    assert any("Status" in ln.path for ln in taken.lines)
    assert_same(w, taken)


def test_restart_from_positions_behind_the_floor_doubles_nothing(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 23, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 1800)
    old = dict(f.positions)  # positions saved a while ago (the store is written behind the samples)
    run(w, f, taken, 1200)
    again = Follower(tmp_path, TZ, old, taken.seen)  # the floor: the newest stored time of each field
    run(w, again, taken, 1800)
    assert_same(w, taken)


def test_bad_line_is_named_and_skipped(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 60)
    path = tmp_path / "26-12-06" / "CH6 T 26-12-06.log"
    with open(path, "ab") as fh:
        fh.write(b" 06-12-26,10:01:30,not-a-number\r\n")
    run(w, f, taken, 120)
    assert_same(w, taken)
    assert len(f.problems) == 1 and "CH6 T 26-12-06.log at byte" in f.problems[0]
    assert "not-a-number" in f.problems[0]


def test_formats_identify_and_refuse():
    assert identify("CH6 T 26-12-06.log").channel == 6
    assert identify("Status_24-12-03.log").kind == "status"
    assert identify("Errors 26-12-06.log") is None and identify("notes.txt") is None
    assert identify("maxigauge 26-12-06.log.1") is None
    log = identify("maxigauge 26-12-06.log")
    with pytest.raises(BadLine, match="CH<n>"):
        parse_line(log, "06-12-26,10:00:00,XX1,,1,1.0E-2")
    with pytest.raises(BadLine, match="time"):
        parse_line(identify("Flowmeter 26-12-06.log"), "2026-12-06 10:00:00,1.0")
    when, values = parse_line(identify("Channels 26-12-06.log"), "06-12-26,10:00:00,1,hs-still,1,v1,0")
    assert when == dt.datetime(2026, 12, 6, 10, 0) and [(f.name, v) for f, v in values] == [
        ("hs_still", 1.0),
        ("v1", 0.0),
    ]
    assert bf_number(18.59667) == "1.859667e+01" and bf_number(0.011) == "1.100000e-02"


def test_first_start_reads_only_the_newest_day(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 23, 55))
    w.advance(600)
    f, taken = Follower(tmp_path, TZ), Taken()
    f.poll(taken)
    assert taken.lines and all(ln.path.startswith("26-12-07/") for ln in taken.lines)


def test_old_days_read_to_their_end_are_forgotten(tmp_path):
    w = writer(tmp_path, at(2026, 12, 5, 23, 58))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 300)
    w.stall(2 * 86400 - 1200)  # two days on (and nothing written meanwhile): the 5th is past following
    w.advance(2 * 86400 - 600)
    f.poll(taken)
    f.poll(taken)
    assert not any(p.startswith("26-12-05/") for p in f.positions)
    assert any(p.inode == -1 and p.path.startswith("26-12-05/") for p in f.take_changed())


def test_pc_clock_set_back_while_following_loses_no_line(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 600)
    path = tmp_path / "26-12-06" / "CH6 T 26-12-06.log"
    with open(path, "ab") as fh:  # the PC's clock stepped back 5 minutes: a line earlier than the last
        fh.write(b" 06-12-26,10:05:00,1.000000e-02\r\n")
    n = len(taken.lines)
    f.poll(taken)
    assert [(ln.t, ln.values[0][1]) for ln in taken.lines[n:]] == [(at(2026, 12, 6, 10, 5), 0.01)]


def test_a_long_backlog_is_taken_in_steps_in_order(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 20, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    w.advance(60)
    f.poll(taken)
    w.advance(6 * 3600)  # six hours behind (an outage), through midnight
    f.values_per_poll = 500
    sizes = []
    for _ in range(100):
        n = sum(taken.values.values())
        f.poll(taken)
        sizes.append(sum(taken.values.values()) - n)
        if sizes[-1] == 0:
            break
    assert max(sizes) < 500 + 60 and len(sizes) > 5  # a step may end one line past the share
    assert_same(w, taken)
    days = [ln.path[:8] for ln in taken.lines]
    assert days == sorted(days)  # yesterday's lines all before today's


def test_restart_before_any_position_was_saved_doubles_nothing(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 1200)
    again = Follower(tmp_path, TZ, {}, taken.seen)  # no position in the store yet, the samples are
    run(w, again, taken, 600)
    assert_same(w, taken)


# -- red-team faults (#25 plant review): each lost lines on main ----------------------------------


def test_a_future_dated_day_folder_does_not_stop_today(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 600)
    (tmp_path / "27-12-06").mkdir()  # the PC clock a year ahead for a moment: one stray day folder
    (tmp_path / "27-12-06" / "CH6 T 27-12-06.log").write_bytes(b" 06-12-27,10:00:00,1.0e-02\r\n")
    run(w, f, taken, 3600)
    want, got = ledger(w), taken.values
    assert not (want - got), f"lost {sum((want - got).values())}"
    assert any(p.startswith("26-12-06/") for p in f.positions)  # today still followed


def test_a_line_stamped_in_the_future_silences_no_field(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 22, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 600)
    with open(tmp_path / "26-12-06" / "CH6 T 26-12-06.log", "ab") as fh:  # a day ahead: a PC clock glitch
        fh.write(b" 07-12-26,22:10:00,1.000000e-02\r\n")
    run(w, f, taken, 6 * 3600)  # on through midnight
    lost = [k for k in (ledger(w) - taken.values) if k[0] == "lakeshore_ch6_t"]
    assert not lost, f"{len(lost)} ch6_t values lost after midnight"
    again = Follower(tmp_path, TZ, dict(f.positions), taken.seen)  # and a restart
    n = len(taken.lines)
    run(w, again, taken, 3600)
    assert sum(1 for ln in taken.lines[n:] if ln.values[0][0].name == "ch6_t") == 3600 / LIGHT["CH"]
    want, got = ledger(w), taken.values
    assert not (want - got)


def test_a_week_offline_reads_every_day_in_order(tmp_path):
    w = BlueforsWriter(tmp_path, TZ, at(2026, 12, 1, 10, 0), periods={k: 1200.0 for k in LIGHT})
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 600)
    w.advance(4 * 86400)  # the appliance off for days (a week in the review), the PC writing on
    again = Follower(tmp_path, TZ, dict(f.positions), taken.seen)
    again.values_per_poll = 20_000
    n = len(taken.lines)
    for _ in range(200):
        if again.poll(taken) == 0:
            break
    assert_same(w, taken)
    days = [ln.path[:8] for ln in taken.lines[n:]]
    assert days == sorted(days) and len(set(days)) == 5
    assert all(p.startswith("26-12-05/") for p in again.positions)  # the days read are not followed on


def test_a_sparse_file_in_the_repeated_hour_takes_its_pass_from_the_other_logs(tmp_path):
    # a log written only now and then (a channel not scanned): 03:20 in the first pass, then 03:40
    # in the second; the file alone cannot tell, the other logs read with it can
    w = writer(tmp_path, at(2026, 10, 25, 3, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    path = tmp_path / "26-10-25" / "CH9 T 26-10-25.log"
    run(w, f, taken, at(2026, 10, 25, 3, 20) - w.now)
    with open(path, "ab") as fh:
        fh.write(b" 25-10-26,03:20:30,1.0e-02\r\n")
    run(w, f, taken, at(2026, 10, 25, 3, 40, fold=1) - w.now, step=120)
    with open(path, "ab") as fh:
        fh.write(b" 25-10-26,03:40:30,2.0e-02\r\n")
    run(w, f, taken, 120)
    ch9 = [ln.t for ln in taken.lines if ln.values[0][0].name == "ch9_t"]
    assert ch9 == [at(2026, 10, 25, 3, 20) + 30, at(2026, 10, 25, 3, 40, fold=1) + 30]


def test_a_remount_giving_an_old_inode_to_another_file_mixes_no_fields(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 1200)
    day = tmp_path / "26-12-06"
    ch6, ch1 = day / "CH6 T 26-12-06.log", day / "CH1 T 26-12-06.log"
    w.advance(600)  # the share away for 10 minutes, the PC writing on
    d6, d1 = ch6.read_bytes(), ch1.read_bytes()
    os.replace(ch6, ch1)  # a remount (noserverino): CH6 T's old inode number is now CH1 T's
    ch1.write_bytes(d1)
    ch6.write_bytes(d6)
    f.poll(taken)
    want, got = ledger(w), taken.values
    assert not (got - want), f"foreign values {list(got - want)[:3]}"
    assert not (want - got)


def test_a_half_line_then_a_writer_restart_loses_the_whole_line(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 600)
    path = tmp_path / "26-12-06" / "CH6 T 26-12-06.log"
    with open(path, "ab") as fh:
        fh.write(b" 06-12-26,10:1")  # the writer dies mid-line
    f.poll(taken)
    with open(path, "ab") as fh:
        fh.write(b" 06-12-26,10:20:00,1.000000e-02\r\n")  # the restarted software appends a whole line
    n = len(taken.lines)
    f.poll(taken)
    assert [(ln.t, ln.values[0][1]) for ln in taken.lines[n:] if ln.path.endswith(path.name)] == [
        (at(2026, 12, 6, 10, 20), 1e-2)
    ]
    assert any("half line" in p for p in f.problems)


def test_a_byte_order_mark_before_the_first_line_is_not_part_of_it(tmp_path):
    p = tmp_path / "26-12-06"
    p.mkdir(parents=True)
    (p / "CH6 T 26-12-06.log").write_bytes(b"\xef\xbb\xbf 06-12-26,09:59:00,1.000000e-02\r\n")
    f, taken = Follower(tmp_path, TZ), Taken()
    f.poll(taken)
    assert [(ln.t, ln.values[0][1]) for ln in taken.lines] == [(at(2026, 12, 6, 9, 59), 1e-2)] and not f.problems


def test_a_file_cut_shorter_is_recorded_and_read_again(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 1200)
    path = tmp_path / "26-12-06" / "maxigauge 26-12-06.log"
    with open(path, "r+b") as fh:
        fh.truncate(0)  # cut under the same inode; the writer goes on appending
    run(w, f, taken, 600)
    assert_same(w, taken)
    assert any("cut to" in p and "maxigauge" in p for p in f.problems)


def test_a_file_cut_and_regrown_past_the_position_while_off_is_read_again(tmp_path):
    w = writer(tmp_path, at(2026, 12, 6, 10, 0))
    f, taken = Follower(tmp_path, TZ), Taken()
    run(w, f, taken, 3600)
    path = tmp_path / "26-12-06" / "maxigauge 26-12-06.log"
    with open(path, "r+b") as fh:
        fh.truncate(0)  # cut (same inode) while the appliance is off ...
    w.advance(2 * 3600)  # ... and regrown past where the appliance had got to
    assert os.stat(path).st_size > f.positions["26-12-06/maxigauge 26-12-06.log"].offset
    again = Follower(tmp_path, TZ, dict(f.positions), taken.seen)  # positions as the store keeps them
    again.poll(taken)
    assert_same(w, taken)
    assert any("first bytes changed" in p for p in again.problems)
