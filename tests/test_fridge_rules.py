"""The classic plant trips as sample rules: ``make run``'s demo (appliance/demo.toml) and ``kelvinpi
sample-config`` (appliance/config_doc.py) both carry compressor stopped, cooling water above its
limit, P1 rising and flow below its floor, and every plant rule names a field its instrument really
produces (a rule on a misspelt field would never fire: the panel only lists it as unmatched)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from appliance import config
from appliance.bluefors.formats import identify, parse_line
from appliance.config_doc import SAMPLE_PLANT_ALARMS, sample
from drivers.cpa import FIELDS as CPA_FIELDS
from firmware_host.bluefors_writer import BlueforsWriter

ROOT = Path(__file__).resolve().parent.parent
CLASSIC = {"compressor-stopped", "cooling-water-hot", "p1-rising", "flow-below-floor"}


def bluefors_fields(tmp_path: Path) -> set[str]:
    """The fields the follower makes of a folder the emulated Bluefors writer wrote (every log)."""
    w = BlueforsWriter(tmp_path / "logs", ZoneInfo("Europe/Helsinki"), time.time() - 120)
    w.advance(120)
    out: set[str] = set()
    for f in (tmp_path / "logs").rglob("*.log"):
        log = identify(f.name)
        assert log is not None, f
        for line in f.read_text().splitlines():
            out |= {field.name for field, _ in parse_line(log, line)[1]}
    return out


def produced_by(cfg: config.Config, tmp_path: Path) -> dict[str, set[str]]:
    """node -> the fields a plant instrument of ``cfg`` produces."""
    out: dict[str, set[str]] = {}
    for inst in cfg.instrument:
        if inst.model == "cpa":
            out[inst.name] = set(CPA_FIELDS)
        elif inst.model in ("maxigauge", "tpg366"):
            out[inst.name] = {f"p{n}" for n in range(1, 7)}
        elif inst.model == "bluefors-logs":
            out[inst.name] = bluefors_fields(tmp_path)
    return out


def check(cfg: config.Config, tmp_path: Path) -> None:
    assert {a.name for a in cfg.alarm} >= CLASSIC, [a.name for a in cfg.alarm]
    fields = produced_by(cfg, tmp_path)
    plant = [a for a in cfg.alarm if a.field.split("::")[0] in fields]
    assert {a.name for a in plant} >= CLASSIC
    for a in plant:
        node, name = a.field.split("::")
        assert name in fields[node], f"{a.name}: {a.field} is no field of {node}"


def test_demo_has_the_classic_trips_on_real_fields(tmp_path):
    check(config.load(ROOT / "appliance" / "demo.toml"), tmp_path)


def test_sample_has_the_classic_trips_on_real_fields(tmp_path):
    text = sample()
    assert SAMPLE_PLANT_ALARMS in text
    uncommented = re.sub(r"(?m)^# (\[\[alarm\]\]|\w+ = )", r"\1", SAMPLE_PLANT_ALARMS)
    check(config.parse(text.replace(SAMPLE_PLANT_ALARMS, uncommented), "sample"), tmp_path)


def test_a_misspelt_plant_field_is_caught(tmp_path):
    """The check can fail: a rule on ``ptc1::cpa_run`` (no such CPA field) is named."""
    text = config.load(ROOT / "appliance" / "demo.toml")
    bad = text.model_copy(
        update={"alarm": [a.model_copy(update={"field": "ptc1::cpa_run"}) if a.field == "ptc1::cparun" else a
                          for a in text.alarm]}
    )  # fmt: skip
    try:
        check(bad, tmp_path)
    except AssertionError as exc:
        assert "ptc1::cpa_run" in str(exc)
    else:
        raise AssertionError("a rule on a field the CPA does not have passed")
