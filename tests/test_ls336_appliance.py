"""The appliance and a Model 336 / 350: registered like the 372 (config, models, acquisition, naming),
and end to end over TCP: produced (the emulator's ledger) = stored = served (HTTP), through a dropped
connection and a garbled reply."""

from __future__ import annotations

import json
import urllib.request

import pytest

from appliance import config
from appliance.models import REGISTRY, facts, limit_bits
from appliance.naming import ocs_names
from firmware_host.emulator import Emulator

from .conftest import start_appliance, wait_for
from .support.reconcile import quiesce, reconcile


def instrument_toml(model: str = "336", extra: str = "", **keys: object) -> str:
    base = {"model": model, "name": "LSA336A", "transport": "tcp", "host": "127.0.0.1", **keys}
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in base.items())
    return f"[[instrument]]\n{body}{extra}"


def test_registered_in_every_registry():
    for model in ("336", "350"):
        assert model in REGISTRY and facts(model).STATUS_BITS[32] == "T_OVER"
        assert (limit_bits(model).over, limit_bits(model).under) == (32, 16)
    assert ocs_names("336", "C", "Still Plate") == ("Still_Plate_T", "Still_Plate_V")  # socs' LS336_Agent
    assert facts("336").OCS_AGENT_CLASS == "LS336_Agent"
    from appliance.web.common import status_names

    assert status_names(16 | 64, "350") == ["T_UNDER", "S_ZERO"]  # the panel's and the API's names


def test_config_takes_a_336_and_its_lettered_inputs():
    cfg = config.parse(
        instrument_toml(extra='[[instrument.channel]]\nnumber = "c"\n[[instrument.channel]]\nnumber = "D2"\n')
    )
    assert cfg.instrument[0].model == "336" and [c.number for c in cfg.instrument[0].channel] == ["C", "D2"]
    config.parse(
        instrument_toml("350", transport="serial", serial_number="LSA350A", host=None).replace("host = null\n", "")
    )


@pytest.mark.parametrize(
    ("model", "number", "message"),
    [
        ("336", 5, "a Lake Shore 336 temperature controller has inputs A, B, C, D, D2, D3, D4, D5, not 5"),
        ("350", "E", "channel number must be"),
        ("372", "B", "a Lake Shore 372 AC resistance bridge has inputs A, 1-16, not B"),
    ],
)
def test_config_refuses_inputs_the_model_lacks(model, number, message):
    with pytest.raises(config.ConfigError, match=message.replace('"', ".").replace("'", ".")):
        config.parse(instrument_toml(model, extra=f"[[instrument.channel]]\nnumber = {json.dumps(number)}\n"))


@pytest.mark.slow
def test_appliance_polls_336_and_reconciles_through_faults(tmp_path):
    emu = Emulator.ls336(seed=31)
    host, port = emu.listen_tcp("127.0.0.1", 0)
    cfg = (
        instrument_toml(host=host, port=port, timeout=0.5, interval=0.2, read_heater=True)
        + "[polling]\nbackoff_initial = 0.2\nbackoff_max = 0.5\n"
        + f'[store]\npath = "{tmp_path / "kelvinpi.db"}"\ncommit_interval = 0.2\n'
        + '[web]\nbind = "127.0.0.1"\nport = 0\n'
    )
    app = start_appliance(cfg)
    try:
        led = emu.ledger
        wait_for(lambda: led.total() >= 16, 20, what="first readings")
        emu.control("garbage 1")
        wait_for(lambda: emu.faults.garbage == 0, 10, what="a garbled reply sent")
        emu.control("drop")
        n = led.total()
        wait_for(lambda: led.total() >= n + 16, 20, what="readings after the drop")
        quiesce(emu, settle=1.5, app=app)
        with urllib.request.urlopen(f"{app.base_url}/api/v1/latest", timeout=10) as r:
            latest = json.load(r)
        tally = reconcile(app.store, {"LSA336A": emu}, http_base=app.base_url)
        print("336 over TCP:", tally.line())
        assert tally.produced >= 32 and tally.lost == 0 and tally.foreign == 0, tally.per_series
        assert tally.produced == tally.stored == tally.served_http
        # the heater outputs are counted too: HTR? <n> in the ledger, heater_<n> in the store (red team 336 item 8)
        assert {"LSA336A::heater_1", "LSA336A::heater_2"} <= set(tally.per_series), tally.per_series
        assert {"LSA336A::still_t", "LSA336A::still_r", "LSA336A::heater_1"} <= set(json.dumps(latest).split('"'))
        # the OCS names of the series, as socs' LS336_Agent writes its fields
        poller = app.pollers[0]
        assert poller.acquisition.heater_keys[1].ocs == "Heater_1_Percent"
        assert {p.kelvin.ocs for p in poller.plans.values() if p.kelvin} >= {
            "Still_T",
            "Input_4K_Plate_T",
            "Input_50K_Plate_T",
        }
    finally:
        app.stop()
        emu.stop()


@pytest.mark.parametrize("model", ["336", "350"])
def test_probe_reports_a_336_and_sends_only_queries(model, capsys):
    import argparse

    from appliance.probe import run
    from firmware_host.protocol import parse_message

    emu = Emulator.ls336(seed=51, model=model)
    host, port = emu.listen_tcp("127.0.0.1", 0)
    try:
        args = argparse.Namespace(model=model, host=host, port=port, device=None, resource=None, timeout=2.0)
        assert run(args) == 0
        out = capsys.readouterr().out
        assert f"LSCI,MODEL{model},LSA336A" in out and "'Still'" in out and "outputs (OUTMODE?" in out
        assert "  C " in out and "ohm  status 000 ok" in out
        for line in emu.ledger.heard:
            for part in line.split(";"):
                name, _ = parse_message(part)
                assert not name or name.endswith("?"), f"probe sent a command: {line!r}"
    finally:
        emu.stop()


def test_image_udev_rule_names_the_336_and_350_by_their_usb_ids():
    from pathlib import Path

    from drivers.ls336 import Model336, Model350

    rules = (Path(__file__).parent.parent / "images/sd/overlay/etc/udev/rules.d/99-lakeshore.rules").read_text()
    for model, cls in (("336", Model336), ("350", Model350)):
        pid = f"{cls.usb_product_id:04x}"
        assert f'ATTRS{{idProduct}}=="{pid}", SYMLINK+="lakeshore/{model}-$env{{ID_SERIAL_SHORT}}"' in rules
        assert f"kelvinpi-usb-bind 1fb9 {pid}" in rules
    # the link the config defaults to for a serial 336
    cfg = config.parse(
        instrument_toml(transport="serial", serial_number="LSA336A", host="x").replace('host = "x"\n', "")
    )
    assert cfg.instrument[0].serial_device() == "/dev/lakeshore/336-LSA336A"
