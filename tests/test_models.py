"""Model-keyed facts live on the driver classes, and each fact shared by two paths is written once."""

from __future__ import annotations

import pytest

from appliance import models
from appliance.bluefors.facts import BlueforsLogs
from appliance.health import ERROR_KINDS
from appliance.naming import OTHER_UNITS_METRIC, UNITS_METRICS, ocs_names
from appliance.web.common import status_names
from drivers import errors
from drivers.cpa import CryomechCPA
from drivers.ls240 import Model240
from drivers.ls336 import Model336, Model350
from drivers.ls370 import Model370
from drivers.ls372 import Model372
from drivers.pfeiffer import TPG256A, TPG366


def test_the_models_table_finds_the_driver_classes_and_their_facts():
    assert {
        "372": Model372,
        "240": Model240,
        "tpg366": TPG366,
        "maxigauge": TPG256A,
        "370": Model370,
        "336": Model336,
        "350": Model350,
        "cpa": CryomechCPA,
    }.items() <= models.MODELS.items()  # others add their own
    assert models.MODELS["bluefors-logs"] is BlueforsLogs
    # every "module:Class" the registry names resolves (a typo would otherwise show only when polled)
    for name, spec in models.REGISTRY.items():
        assert spec.driver_class() is models.MODELS[name] and callable(spec.acquisition_class()), name
    # the manuals' bits, read from each model's one status table (372 p.174, 240 p.49)
    assert models.limit_bits("372") == models.LimitBits(over=64, under=128)
    assert models.limit_bits("240") == models.LimitBits(over=32, under=16)
    assert models.limit_bits(None) == models.limit_bits("372")  # unknown: decoded as a 372, as before
    assert status_names(32 | 1, "240") == ["INVALID", "T_OVER"]
    assert status_names(64, "372") == ["T_OVER"] and status_names(64, None) == ["T_OVER"]
    assert Model372.OCS_AGENT_CLASS == "Lakeshore372Agent" and Model240.OCS_AGENT_CLASS == "Lakeshore240Agent"
    # a compressor has no curve to run past; its status bits say warning, alarm, stopped
    assert models.limit_bits("cpa") == models.LimitBits(over=0, under=0)
    assert status_names(2 | 4, "cpa") == ["ALARM", "STOPPED"]
    assert CryomechCPA.OCS_AGENT_CLASS == "CryomechCPAAgent"  # socs agent.py:204


@pytest.mark.parametrize(
    "model,channel,name,want",
    [
        ("372", "5", "Channel 05", ("Channel_05_T", "Channel_05_R")),
        ("372", "A", "control", ("control_T", "control_R")),
        ("372", "3", "  mixing chamber (RuOx) ", ("mixing_chamber_RuOx_T", "mixing_chamber_RuOx_R")),
        ("372", "7", "4K", ("Channel_4K_T", "Channel_4K_R")),
        ("372", "9", "§§", ("Channel_09_T", "Channel_09_R")),
        ("240", "2", "anything", ("Channel_2_T", "Channel_2_V")),
        ("cpa", "cpatempwi", "cpatempwi", ("Coolant_In_Temp", "Coolant_In_Temp")),  # socs drivers.py:118
    ],
)
def test_ocs_names_come_from_the_driver_class(model, channel, name, want):
    assert ocs_names(model, channel, name) == want == models.MODELS[model].ocs_names(channel, name)


def test_units_metrics_and_error_kinds_are_one_table_each():
    """Remote write sends a series under the name /metrics exposes it; /metrics lists every driver error kind."""
    from appliance.uplinks import remote_write

    assert {u: m.name for u, m in UNITS_METRICS.items()} == remote_write.METRIC_BY_UNITS
    assert OTHER_UNITS_METRIC.name == remote_write.OTHER_METRIC
    kinds = {c.kind for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DriverError)}
    assert set(ERROR_KINDS) == (kinds - {"error"}) | {"internal"}


def test_tpg366_default_port_is_the_drivers():
    """The registry writes the TPG 366's port as a literal (so models.py imports no driver): the driver's."""
    assert models.REGISTRY["tpg366"].port == TPG366.DEFAULT_PORT


def test_the_config_check_imports_only_the_configured_models_drivers():
    """Parsing a config with a 372 and a 240 imports neither the compressor's, the gauges', the 336's nor
    the 370's driver (start-up time: the config check at every boot); ``MODELS`` imports one when asked."""
    import subprocess
    import sys

    code = """
import sys
import appliance.config
appliance.config.parse('''
[[instrument]]
model = "372"
name = "LSA23JD"
transport = "tcp"
host = "10.0.2.2"
[[instrument]]
model = "240"
name = "LSA24AZ"
transport = "serial"
device = "/dev/ttyS0"
''', "test")
unwanted = ("drivers.cpa", "drivers.pfeiffer", "drivers.ls336", "drivers.ls370")
print(sorted(m for m in unwanted if m in sys.modules))
from appliance import models
assert models.MODELS["cpa"].OCS_AGENT_CLASS == "CryomechCPAAgent"
print("drivers.cpa" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]
