"""Alarm rules on sequences of observations (pure), then the whole appliance against the emulator
with a real HTTP receiver and a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import pytest

from appliance import config
from appliance.alarms import AlarmEngine, Observation, slope_per_minute

BASE = '[[instrument]]\nmodel = "372"\nname = "N"\ntransport = "tcp"\nhost = "h"\n'


def rules(text: str) -> list:
    return list(config.parse(BASE + text).alarm)


def run(engine: AlarmEngine, seq) -> list[tuple[float, str, str]]:
    out = []
    for obs in seq:
        out += [(tr.t, tr.rule.name, tr.kind) for tr in engine.step(obs)]
    return out


def test_threshold_hold_and_hysteresis():
    eng = AlarmEngine(
        rules(
            '[[alarm]]\nkind = "above"\nname = "hot"\nfield = "N::mxc_t"\nthreshold = 0.05\n'
            "hysteresis = 0.01\nhold = 3\n"
        )
    )
    values = [0.02, 0.06, 0.06, 0.03, 0.06, 0.06, 0.06, 0.06, 0.045, 0.041, 0.039, 0.06]
    seq = [Observation(now=t, latest={"N::mxc_t": (t, v)}) for t, v in enumerate(values)]
    # above from t=4 on: held 3 s at t=7; 0.045 and 0.041 are inside the hysteresis band; 0.039 clears
    assert run(eng, seq) == [(7, "hot", "raised"), (10, "hot", "cleared")]


def test_below_and_curve_limits():
    eng = AlarmEngine(
        rules(
            '[[alarm]]\nkind = "below"\nname = "cold"\nfield = "N::a_t"\nthreshold = 1\n'
            '[[alarm]]\nkind = "above"\nname = "over"\nfield = "N::a_t"\nthreshold = 10\n'
        )
    )
    seq = [
        Observation(now=0, latest={"N::a_t": (0, 0.5)}),
        Observation(now=1, latest={"N::a_t": (1, None)}, beyond={"N::a_t": "above"}),  # T_OVER: no value
        Observation(now=2, latest={"N::a_t": (2, 5.0)}),
    ]
    assert run(eng, seq) == [
        (0, "cold", "raised"),
        (1, "over", "raised"),
        (2, "cold", "cleared"),
        (2, "over", "cleared"),
    ]


def test_invalid_reading_is_not_a_value():
    eng = AlarmEngine(rules('[[alarm]]\nkind = "above"\nname = "hot"\nfield = "N::a_t"\nthreshold = 1\n'))
    assert run(eng, [Observation(now=0, latest={"N::a_t": (0, None)})]) == []


def test_rate_over_window():
    eng = AlarmEngine(
        rules('[[alarm]]\nkind = "rate"\nname = "warming"\nfield = "N::a_t"\nthreshold = 0.5\nwindow = 60\n')
    )
    # flat for two minutes, then +1 K/min
    seq = [
        Observation(now=t, latest={"N::a_t": (t, 4.0 if t < 120 else 4.0 + (t - 120) / 60)}) for t in range(0, 400, 5)
    ]
    got = run(eng, seq)
    assert got[0][1:] == ("warming", "raised")
    # a least-squares slope over 60 s passes 0.5 K/min about half a window after the ramp starts
    assert 140 <= got[0][0] <= 160, got
    assert len(got) == 1
    assert slope_per_minute([(0, 0), (60, 1), (120, 2)]) == pytest.approx(1.0)


def test_rate_falling_and_too_few_points():
    eng = AlarmEngine(
        rules(
            '[[alarm]]\nkind = "rate"\nname = "cooling"\nfield = "N::a_t"\nthreshold = 1\n'
            'window = 60\ndirection = "falling"\n'
        )
    )
    assert (
        run(eng, [Observation(now=0, latest={"N::a_t": (0, 10.0)}), Observation(now=1, latest={"N::a_t": (1, 5.0)})])
        == []
    )  # two points: no rate yet
    seq = [Observation(now=t, latest={"N::a_t": (t, 10.0 - t / 10)}) for t in range(2, 60, 2)]
    assert run(eng, seq)[0][1:] == ("cooling", "raised")


def test_no_data_is_scanner_aware():
    eng = AlarmEngine(rules('[[alarm]]\nkind = "no_data"\nname = "silent"\nfield = "N::mxc_t"\nseconds = 10\n'))
    gap = {"N::mxc_t": 52.0}  # the autoscan comes back every 52 s
    seq = [Observation(now=t, latest={"N::mxc_t": (0.0, 0.01)}, expected_gap=gap) for t in (1, 30, 60, 62, 63)]
    assert run(eng, seq) == [(63, "silent", "raised")]  # not at 30 s, as a plain 30 s rule would
    assert run(eng, [Observation(now=64, latest={"N::mxc_t": (64.0, 0.01)}, expected_gap=gap)]) == [
        (64, "silent", "cleared")
    ]


def test_disconnected_store_backlog():
    eng = AlarmEngine(
        rules(
            '[[alarm]]\nkind = "disconnected"\nname = "gone"\ninstrument = "N"\nhold = 2\n'
            '[[alarm]]\nkind = "store_not_writing"\nname = "stuck"\nseconds = 30\n'
        )
    )
    seq = [
        Observation(now=0, connected={"N": True}, last_commit=0),
        Observation(now=1, connected={"N": False}, last_commit=0),
        Observation(now=3, connected={"N": False}, last_commit=0),
        Observation(now=31, connected={"N": True}, last_commit=0),
        Observation(now=32, connected={"N": True}, last_commit=32),
    ]
    assert run(eng, seq) == [
        (3, "gone", "raised"),
        (31, "gone", "cleared"),
        (31, "stuck", "raised"),
        (32, "stuck", "cleared"),
    ]


def test_restart_keeps_active_and_acknowledged():
    rs = rules('[[alarm]]\nkind = "above"\nname = "hot"\nfield = "N::a_t"\nthreshold = 1\n')
    eng = AlarmEngine(rs)
    assert run(eng, [Observation(now=0, latest={"N::a_t": (0, 2.0)})]) == [(0, "hot", "raised")]
    eng.ack("hot", "test")
    saved = {"hot": eng.states["hot"].as_dict()}
    again = AlarmEngine(rs, saved)
    assert again.states["hot"].active and again.states["hot"].acked and again.states["hot"].since == 0
    # still hot: no second "raised"; cooled: "cleared"
    assert run(
        again, [Observation(now=5, latest={"N::a_t": (5, 2.0)}), Observation(now=6, latest={"N::a_t": (6, 0.5)})]
    ) == [(6, "hot", "cleared")]


def test_scan_schedule_next_in_and_gap():
    from appliance.freshness import next_in, scan_gap

    scan = {
        "autoscan": True,
        "channel": "2",
        "switched": 100.0,
        "rotation": [["1", 3, 10], ["2", 3, 10], ["3", 3, 10], ["5", 3, 10]],
    }
    assert scan_gap(scan, "5", 1.0) == 53.0 and scan_gap(scan, "A", 1.0) == 1.0
    assert scan_gap(dict(scan, autoscan=False), "5", 1.0) == 1.0
    assert next_in(scan, "2", 101.0) == 2.0  # in its change pause
    assert next_in(scan, "2", 105.0) == 0.0  # being read
    assert next_in(scan, "3", 105.0) == 8.0 + 3  # rest of 2's visit, then 3's pause
    assert next_in(scan, "1", 105.0) == 8.0 + 13 + 13 + 3  # 3 and 5 come first


def test_alarm_records_survive_a_kill(tmp_path):
    """Notices, states and deliveries go through the writer's write path (journal, then SQLite:
    an alarm record, like an event, is flushed at once), so a process killed after the write,
    without stop(), loses none of them; until then, alarm_load sees the queued ones."""
    import json

    from appliance.store import Store

    path = tmp_path / "k.db"
    s = Store(path)
    s.alarm_record("state", "hot", json.dumps({"active": True, "acked": False, "since": 5.0}), 5.0)
    s.alarm_record("notice", 1, 5.0, "hot", "raised", json.dumps({"alarm": "hot"}), json.dumps(["a", "b"]))
    s.alarm_record("notice", 2, 6.0, "hot", "repeat", json.dumps({"alarm": "hot"}), json.dumps(["a", "b"]))
    states, notices = s.alarm_load()  # still queued: seen already
    assert states["hot"]["active"] and [n["id"] for n in notices] == [1, 2]
    s.write([])
    s.alarm_record("sent", 1, "a", 7.0)
    s.write([])
    s._journal.close()  # "killed": no stop(), no final flush
    again = Store(path)
    states, notices = again.alarm_load()
    assert states["hot"] == {"active": True, "acked": False, "since": 5.0}
    assert [(n["id"], n["kind"], n["targets"], n["sent"]) for n in notices] == [
        (1, "raised", ["a", "b"], {"a"}),
        (2, "repeat", ["a", "b"], set()),
    ]
    again.close()


def test_a_secret_readable_by_others_refuses_the_target(tmp_path):
    import os

    from appliance.notify import sender_for

    url = tmp_path / "url"
    url.write_text("https://hooks.example.org/T000/B000/XXXX\n")
    os.chmod(url, 0o644)
    cfg = config.parse(BASE + f'[[notify]]\nkind = "slack"\nname = "s"\nurl_file = "{url}"\n').notify[0]
    with pytest.raises(PermissionError) as e:
        sender_for(cfg)
    assert "chmod 600" in str(e.value) and "XXXX" not in str(e.value)
    os.chmod(url, 0o600)
    assert sender_for(cfg).name == "s"


def test_an_instrument_name_of_the_wrong_type_is_a_config_error_not_a_crash():
    """Found by the config fuzzer: the alarm cross-check hashed an instrument name given as a list."""
    text = """
[[instrument]]
model = "372"
name = ["LSA23JD"]
host = "127.0.0.1"

[[alarm]]
name = "mxc warm"
kind = "above"
field = "LSA23JD::mxc_t"
threshold = 0.1
"""
    with pytest.raises(config.ConfigError) as exc:
        config.parse(text, "kelvinpi.toml")
    assert "kelvinpi.toml:4: instrument[0].name" in str(exc.value)


def test_the_cleared_transition_says_what_happened_not_why_it_was_raised():
    """Issue 21 item 11: the cleared notice said "0.02088 > 0.05" (the raise's reason) beside
    the value 0.02088; it says "back below 0.05 K: 0.0209 K" (and the like for every kind)."""
    eng = AlarmEngine(
        rules(
            '[[alarm]]\nkind = "above"\nname = "hot"\nfield = "N::mxc_t"\nthreshold = 0.05\n'
            '[[alarm]]\nkind = "below"\nname = "cold"\nfield = "N::still_t"\nthreshold = 0.5\nhysteresis = 0.1\n'
            '[[alarm]]\nkind = "no_data"\nname = "silent"\nfield = "N::cp_t"\nseconds = 5\n'
            '[[alarm]]\nkind = "disconnected"\nname = "gone"\ninstrument = "N"\n'
            '[[alarm]]\nkind = "store_not_writing"\nname = "stuck"\nseconds = 10\n'
        )
        + [config.BacklogAlarm(kind="backlog", name="behind", uplink=0, threshold=100)]
    )
    units = {"N::mxc_t": "K", "N::still_t": "K", "N::cp_t": "K"}
    hot = Observation(
        now=100,
        latest={"N::mxc_t": (100, 0.0612), "N::still_t": (100, 0.3), "N::cp_t": (50, 0.1)},
        units=units,
        connected={"N": False},
        last_commit=80,
        backlog={0: 500},
    )
    raised = {tr.rule.name: tr.state.detail for tr in eng.step(hot)}
    assert raised == {
        "hot": "0.0612 K > 0.05 K",
        "cold": "0.3 K < 0.5 K",
        "silent": "no reading for 50 s",
        "gone": "not answering",
        "stuck": "no commit for 20 s",
        "behind": "500 samples not acknowledged",
    }
    ok = Observation(
        now=101,
        latest={"N::mxc_t": (101, 0.02088), "N::still_t": (101, 0.65), "N::cp_t": (101, 0.1)},
        units=units,
        connected={"N": True},
        last_commit=101,
        backlog={0: 3},
    )
    cleared = {tr.rule.name: (tr.kind, tr.state.detail) for tr in eng.step(ok)}
    assert cleared == {
        "hot": ("cleared", "back below 0.05 K: 0.0209 K"),
        "cold": ("cleared", "back above 0.6 K: 0.65 K"),
        "silent": ("cleared", "readings again: the latest 0 s old"),
        "gone": ("cleared", "answering again"),
        "stuck": ("cleared", "committing again"),
        "behind": ("cleared", "backlog back to 3 samples (at most 100)"),
    }
    assert eng.states["hot"].value == 0.02088  # the value and the detail agree


def test_every_alarm_kind_is_registered_once_and_a_new_kind_is_one_class_and_one_line():
    """The [[alarm]] union and the condition registry name the same kinds; a kind added as a config
    model, a condition class and one registry entry is evaluated by the engine like the built-in ones."""
    from typing import Literal

    from appliance import alarms

    union_kinds = {k for m in config.ALARM_MODELS for k in m.model_fields["kind"].annotation.__args__}
    assert union_kinds == {"above", "below", "rate", "no_data", "disconnected", "store_not_writing", "backlog"}
    assert set(alarms.CONDITIONS) == set(config.ALARM_MODELS)
    assert all(cls.model is m for m, cls in alarms.CONDITIONS.items())

    class OddAlarm(config._AlarmBase):
        kind: Literal["odd"]
        field: str

    class OddCondition(alarms.RuleCondition):
        model = OddAlarm

        def evaluate(self, obs):
            _t, v = obs.latest.get(self.cfg.field, (None, None))
            odd = v is not None and int(v) % 2 == 1
            return alarms.Condition(odd, not odd, v, f"{v} is odd", f"{v} is even")

    alarms.CONDITIONS[OddAlarm] = OddCondition
    try:
        eng = AlarmEngine([OddAlarm(name="odd", kind="odd", field="n::x")])
        assert [t.kind for t in eng.step(Observation(now=1.0, latest={"n::x": (1.0, 3.0)}))] == ["raised"]
        tr = eng.step(Observation(now=2.0, latest={"n::x": (2.0, 4.0)}))
        assert [(t.kind, t.state.detail) for t in tr] == [("cleared", "4.0 is even")]
    finally:
        del alarms.CONDITIONS[OddAlarm]
    with pytest.raises(TypeError, match="unknown alarm rule"):
        AlarmEngine([OddAlarm(name="odd", kind="odd", field="n::x")])


def test_a_value_close_to_the_threshold_reads_different_from_it():
    """Red-team (issue 21): cleared at 0.011499 below a 0.0115 threshold read "back below 0.0115 K:
    0.0115 K". The value gets the digits it needs to differ visibly, raised and cleared alike."""
    from appliance.alarms import ThresholdCondition

    cfg = config.parse(
        '[[instrument]]\nmodel = "372"\nname = "N"\ntransport = "tcp"\nhost = "h"\n'
        '[[alarm]]\nkind = "above"\nname = "w"\nfield = "N::mxc_t"\nthreshold = 0.0115\n'
    ).alarm[0]
    cond = ThresholdCondition(cfg)

    def said(v: float):
        return cond.evaluate(Observation(now=0.0, latest={"N::mxc_t": (0.0, v)}, units={"N::mxc_t": "K"}))

    assert said(0.011499).cleared == "back below 0.0115 K: 0.011499 K"
    assert said(0.0114999999).cleared == "back below 0.0115 K: 0.0114999999 K"
    assert said(0.0104).cleared == "back below 0.0115 K: 0.0104 K"  # no more digits than it needs
    assert said(0.01150000001).detail == "0.01150000001 K > 0.0115 K"
    assert said(0.0115).cleared == "back below 0.0115 K: 0.0115 K"  # exactly at the level: the same


def test_a_backlog_rule_finds_its_uplink_by_position_not_by_display_name(tmp_path):
    """The alarm service reads each uplink's backlog under the index build_uplinks gave it (main parsed
    "uplink[<n>]" out of the health's name, so a renamed uplink silenced its backlog rule), a failed one too."""
    from appliance.alarm_service import AlarmService
    from appliance.store import Store
    from appliance.uplinks import build_uplinks

    cfg = config.parse(
        BASE
        + '[[uplink]]\nkind = "influxdb"\nurl = "http://127.0.0.1:9"\ndatabase = "d"\n'
        + f'[[uplink]]\nkind = "influxdb"\nurl = "http://127.0.0.1:9"\ndatabase = "d"\nusername = "u"\n'
        f'password_file = "{tmp_path / "missing"}"\n'
        + '[[alarm]]\nkind = "backlog"\nname = "behind"\nuplink = 0\nthreshold = 100\n'
    )
    store = Store(tmp_path / "k.db")
    try:
        built = build_uplinks(cfg.uplink, store, cfg.instrument)  # built, never started
        health = [r.health for r in built if r.health is not None]
        assert [h.index for h in health] == [0, 1] and health[1].last_error  # the second could not start
        health[0].name, health[0].backlog = "control room", 500
        health[1].name, health[1].backlog = "spare", 7
        svc = AlarmService(cfg, store, uplink_health=lambda: health)
        assert svc.observe().backlog == {0: 500, 1: 7}
    finally:
        store.close()


# -- limit bits: a gauge's OVERRANGE / UNDERRANGE with the limit it sent (red team pf, fault 5) ---------
GAUGE_RULES = (
    '[[alarm]]\nkind = "above"\nname = "p-above"\nfield = "N::p2"\nthreshold = 100\nhysteresis = 10\n'
    '[[alarm]]\nkind = "above"\nname = "p-low-above"\nfield = "N::p2"\nthreshold = 1e-3\n'
    '[[alarm]]\nkind = "below"\nname = "p-below"\nfield = "N::p2"\nthreshold = 1e-6\n'
)


def gauge_obs(t: float, value: float | None, beyond: str | None = None, limit: float | None = None) -> Observation:
    obs = Observation(now=t, latest={"N::p2": (t, value)}, units={"N::p2": "mbar"})
    if beyond is not None:
        obs.beyond["N::p2"] = beyond
    if limit is not None:
        obs.limit["N::p2"] = limit
    return obs


def test_overrange_is_above_only_a_threshold_its_limit_reaches():
    """An IKR at its 1e-2 mbar limit is above 1e-3 mbar, and says nothing of 100 mbar."""
    eng = AlarmEngine(rules(GAUGE_RULES))
    got = run(eng, [gauge_obs(0, 1e-5), gauge_obs(1, None, "above", 1e-2)])
    assert got == [(1, "p-low-above", "raised")]
    assert eng.states["p-low-above"].detail == "over the gauge's range (> 0.01 mbar)"


def test_the_opposite_limit_bit_clears_a_rule_when_its_limit_proves_it():
    eng = AlarmEngine(rules(GAUGE_RULES))
    seq = [
        gauge_obs(0, 500.0),  # p-above and p-low-above raised
        gauge_obs(1, None, "below", 5e-9),  # UNDERRANGE at 5e-9: below both clearing levels, and below 1e-6
        gauge_obs(2, 5e-7),
        gauge_obs(3, None, "above", 1000.0),  # OVERRANGE at 1000: p-below cleared, the above rules raised
    ]
    assert run(eng, seq) == [
        (0, "p-above", "raised"),
        (0, "p-low-above", "raised"),
        (1, "p-above", "cleared"),
        (1, "p-low-above", "cleared"),
        (1, "p-below", "raised"),
        (3, "p-above", "raised"),
        (3, "p-low-above", "raised"),
        (3, "p-below", "cleared"),
    ]
    assert not (eng.states["p-above"].active and eng.states["p-below"].active)


def test_an_opposite_limit_short_of_the_clearing_level_holds():
    eng = AlarmEngine(rules(GAUGE_RULES))
    assert run(eng, [gauge_obs(0, 500.0), gauge_obs(1, None, "below", 95.0)]) == [
        (0, "p-above", "raised"),
        (0, "p-low-above", "raised"),
    ]  # below 95 is not surely below 90 (100 - hysteresis), nor below 1e-3
