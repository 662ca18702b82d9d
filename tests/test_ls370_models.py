"""The Model 370 in the appliance's registries: model, acquisition, config checks, names, status bits."""

from __future__ import annotations

import pytest

from appliance import config
from appliance.acquisition import Ls370Acquisition
from appliance.health import InstrumentHealth
from appliance.models import MODELS, REGISTRY, acquisition_for, limit_bits
from appliance.naming import ocs_names
from appliance.web.common import status_names
from drivers.ls370 import Model370


def cfg_text(extra: str = "", transport: str = 'transport = "serial"\ndevice = "/dev/ttyUSB0"') -> str:
    return f'[[instrument]]\nmodel = "370"\nname = "LS370X"\n{transport}\n{extra}'


def test_registered_once():
    assert MODELS["370"] is Model370 and REGISTRY["370"].acquisition_class() is Ls370Acquisition
    assert limit_bits("370").over == 64 and limit_bits("370").under == 128  # 370 manual p.6-34


def test_status_names_on_the_panel_are_the_manuals():
    assert status_names(1 | 16 | 64, "370") == ["CS_OVL", "R_OVER", "T_OVER"]


def test_ocs_names_follow_socs_ls370_agent():
    assert ocs_names("370", "12", "whatever the config calls it") == ("Channel_12_T", "Channel_12_R")


def test_config_takes_a_370_on_serial_and_builds_its_driver():
    cfg = config.parse(cfg_text("read_heater = true"))
    inst = cfg.instrument[0]
    acq = acquisition_for(inst, InstrumentHealth(inst.name, inst.model, inst.transport))
    assert isinstance(acq.instrument, Model370) and acq.instrument.transport.framing == "9600 7O1"
    gpib = config.parse(cfg_text(transport='transport = "visa"\nresource = "GPIB0::12::INSTR"')).instrument[0]
    assert acquisition_for(gpib, InstrumentHealth("g", "370", "visa")).instrument.transport.description == (
        "visa://GPIB0::12::INSTR"
    )


def test_config_refuses_tcp_naming_the_key():
    with pytest.raises(config.ConfigError, match=r"instrument\[0\]\.transport.*Model 370 has no Ethernet port"):
        config.parse(cfg_text(transport='transport = "tcp"\nhost = "10.0.0.9"'))


def test_config_refuses_input_a_naming_the_channel():
    with pytest.raises(config.ConfigError, match=r"channel\[0\]\.number.*370 .* has channels 1-16, not A"):
        config.parse(cfg_text('[[instrument.channel]]\nnumber = "A"\nname = "x"'))


def test_configured_fields_include_the_heater():
    inst = {"model": "370", "read_heater": True, "channel": [{"number": 5, "name": "MXC"}]}
    assert config.configured_fields(inst) == {"mxc_t", "mxc_r", "sample_heater"}
