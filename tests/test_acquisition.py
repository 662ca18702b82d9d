"""The poller's model table: every model the config accepts has an acquisition strategy, which
opens its own driver on the configured transport (without talking to it yet)."""

from typing import get_args

from appliance.config import InstrumentConfig
from appliance.health import InstrumentHealth
from appliance.models import REGISTRY, acquisition_for
from drivers.ls240 import Model240
from drivers.ls372 import Model372


def test_every_configurable_model_has_an_acquisition():
    assert set(REGISTRY) == set(get_args(InstrumentConfig.model_fields["model"].annotation))
    for name, spec in REGISTRY.items():
        assert callable(spec.acquisition_class()), name  # the "module:Class" each spec names imports


def test_each_strategy_opens_its_model_on_the_configured_transport():
    c372 = InstrumentConfig(model="372", name="A", transport="tcp", host="192.0.2.7", port=7777)
    c240 = InstrumentConfig(model="240", name="B", transport="serial", device="/dev/ttyNONE", interval=2.5)
    a372 = acquisition_for(c372, InstrumentHealth("A", "372", "tcp"))
    a240 = acquisition_for(c240, InstrumentHealth("B", "240", "serial"))
    assert isinstance(a372.instrument, Model372) and "192.0.2.7:7777" in a372.instrument.transport.description
    assert isinstance(a240.instrument, Model240) and a240.instrument.transport.description == "serial:///dev/ttyNONE"
    assert a240.poll_interval() == (2.5, None)  # no scanner to fit the interval to: no exchange needed
