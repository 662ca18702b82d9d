"""socs' Bluefors agent's parser reads our emulated log folder and gets the values the ledger says.

socs' code is not imported: its parsing is written out here, line for line, from simonsobs/socs
``socs/agents/bluefors/agent.py`` (the line numbers are that file's at the commit we read,
24a4adeb). Its tracker reads every ``*.log`` of today's folder (``_build_file_list``, l.74-76),
a line at a time; the parser names each file by ``identify_log`` and parses its lines.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from zoneinfo import ZoneInfo

from firmware_host.bluefors_writer import BlueforsWriter

TZ = ZoneInfo("Europe/Helsinki")

# agent.py l.177-196: LogParser.patterns
PATTERNS = {
    "channels": ["v11", "v2", "v1", "turbo1", "v12", "v3", "v10", "v14", "v4", "v13", "compressor", "v15", "v5",
                 "hs-still", "v21", "v16", "v6", "scroll1", "v17", "v7", "scroll2", "v18", "v8", "pulsetube", "v19",
                 "v20", "v9", "hs-mc", "ext"],
    "status": ["tc400errorcode", "tc400ovtempelec", "tc400ovtemppump", "tc400setspdatt", "tc400pumpaccel",
               "tc400commerr", "tc400errorcode_2", "tc400ovtempelec_2", "tc400ovtemppump_2", "tc400setspdatt_2",
               "tc400pumpaccel_2", "tc400commerr_2", "nxdsf", "nxdsct", "nxdst", "nxdsbs", "nxdstrs", "ctrl_pres",
               "cpastate", "cparun", "cpawarn", "cpaerr", "cpatempwi", "cpatempwo", "cpatempo", "cpatemph", "cpalp",
               "cpalpa", "cpahp", "cpahpa", "cpadp", "cpacurrent", "cpahours", "cpapscale", "cpascale", "cpatscale",
               "cpasn", "cpamodel", "ctrl_pres_ok", "ctr_pressure_ok"],
    "heater": ["a1_u", "a1_r_lead", "a1_r_htr", "a2_u", "a2_r_lead", "a2_r_htr", "htr", "htr_range"],
}  # fmt: skip


def timestamp_from_str(time_string: str) -> float:
    """agent.py l.215-216: strptime "%d-%m-%y,%H:%M:%S", then ``dt.timestamp()`` in the host's zone;
    the agent's host must be in the Bluefors PC's zone: the zone is given here instead of TZ=."""
    dt = datetime.datetime.strptime(time_string, "%d-%m-%y,%H:%M:%S")
    return dt.replace(tzinfo=TZ).timestamp()


def parse_single_value_log(new_line: str, log_name: str) -> dict:
    """agent.py l.230-241."""
    date, _time, data_value = new_line.strip().split(",")
    time_str = "%s,%s" % (date, _time)  # noqa: UP031 - socs' text, as written
    return {"timestamp": timestamp_from_str(time_str), "block_name": log_name, "data": {log_name: float(data_value)}}


def parse_maxigauge_log(new_line: str, log_name: str) -> dict:
    """agent.py l.256-264."""
    ts, *channels = new_line.strip().split("CH")
    time_str = ts.strip(",")
    timestamp = timestamp_from_str(time_str)
    ch_data = {}
    for ch in channels:
        ch_num, _, state, value, *_ = ch.split(",")
        ch_data["pressure_ch{}_state".format(ch_num)] = int(state)  # noqa: UP032 - socs' text
        ch_data["pressure_ch{}".format(ch_num)] = float(value)  # noqa: UP032 - socs' text
    return {"timestamp": timestamp, "block_name": log_name, "data": ch_data}


def parse_multi_value_log(new_line: str, log_type: str, log_name: str) -> dict:
    """agent.py l.291-307."""
    date, _time, *_ = new_line.strip().split(",")
    time_str = "%s,%s" % (date, _time)  # noqa: UP031 - socs' text, as written
    timestamp = timestamp_from_str(time_str)
    data_array = {}
    for pattern in PATTERNS[log_type]:
        regex = re.compile(rf"{pattern},([0-9\.\+\-E]+)")
        m = regex.search(new_line)
        if not m:
            continue
        if log_type == "channels":
            data_array[pattern.replace("-", "_")] = int(m.group(1))
        else:
            data_array[pattern] = float(m.group(1))
    return {"timestamp": timestamp, "block_name": log_name, "data": data_array}


def identify_log(filename: str) -> tuple[str | None, str | None]:
    """agent.py l.336-355."""
    file_types = {
        "lakeshore": "(CH[0-9]+ [T,R,P])",
        "flowmeter": "(Flowmeter)",
        "maxiguage": "(maxigauge)",
        "channels": "(Channels)",
        "status": "(Status)",
        "errors": "(Errors)",
        "heater": "(heaters)",
    }
    for k, v in file_types.items():
        if re.search(v, filename, flags=re.I):
            _type = k
            m = re.search(file_types[_type], filename, flags=re.I)
            if _type == "lakeshore":
                return _type, "{}_{}".format(_type, m.group(0).lower().replace(" ", "_"))
            return _type, m.group(0).lower()
    return (None, None)


def socs_reads(folder) -> Counter:
    """What read_and_publish_logs (l.367-419) would publish from every line of the folder."""
    out: Counter = Counter()
    for path in sorted(folder.glob("*.log")):  # l.75: glob("{}/{}/*.log")
        log_type, log_name = identify_log(path.name)
        with open(path) as f:
            for new in iter(f.readline, ""):
                if log_type in ["lakeshore", "flowmeter"]:
                    data = parse_single_value_log(new, log_name)
                elif log_type == "maxiguage":
                    data = parse_maxigauge_log(new, log_name)
                elif log_type in ["channels", "status", "heater"]:
                    data = parse_multi_value_log(new, log_type, log_name)
                else:
                    continue
                for name, value in data["data"].items():
                    out[(name, data["timestamp"], float(value))] += 1
    return out


def mantissa(v: float) -> float:
    """What socs' value class ``[0-9\\.\\+\\-E]+`` (l.297) captures of ``1.859667e+01``: ``1.859667``."""
    return float(f"{v:.6e}".split("e")[0])


def test_socs_bluefors_parser_reads_the_emulated_folder_as_the_ledger_says(tmp_path):
    start = datetime.datetime(2026, 12, 6, 10, 0, tzinfo=TZ).timestamp()
    w = BlueforsWriter(tmp_path, TZ, start, seed=7)
    w.advance(15 * 60)
    got = socs_reads(tmp_path / "26-12-06")
    multi = set(PATTERNS["status"]) | set(PATTERNS["heater"])
    want = Counter((n, e.t, mantissa(v) if n in multi else v) for e in w.ledger for n, v in e.values)
    # Two quirks of socs' regex (l.297), as it has them with the real logs' numbers (FIDELITY.md):
    # its value class has no lower-case 'e', so a Status or Heaters value in C's %e notation reads as
    # its mantissa (above); and "htr," also matches inside "a1_r_htr,", so htr reads a1_r_htr's value.
    quirk = {k for k in set(got) | set(want) if k[0] == "htr"}
    assert {k: n for k, n in got.items() if k not in quirk} == {k: n for k, n in want.items() if k not in quirk}
    htr_socs = {t: v for (n, t, v) in got if n == "htr"}
    a1 = {t: v for (n, t, v) in want if n == "a1_r_htr"}
    assert htr_socs == a1 and len(a1) == 16  # the quirk, as socs has it (10:00 to 10:15, both ends)
    exact = {k for k in got if k[0] not in multi}  # thermometers, flow, gauges, valves: exactly the ledger
    assert len(exact) > 1000
    names = {k[0] for k in got}
    assert {"lakeshore_ch6_t", "flowmeter", "pressure_ch1", "pressure_ch1_state", "cpatempwi", "pulsetube"} <= names
    assert {"hs_still", "hs_mc", "lakeshore_ch1_r"} <= names
