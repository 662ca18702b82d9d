"""What polling means for each model: one acquisition strategy per Lake Shore model.

The poller (``appliance.poller``) runs the life cycle every instrument shares: connect, name the
series, snapshot, poll cycles with control requests served between them, reconnect with
backoff, health counters. What differs between a 372 and a 240 lives here, behind the small
``Acquisition`` protocol:

* opening the driver on the configured transport (the constructor);
* which inputs to read, and under which channel names (``discover_inputs``, after each connect);
* how often to poll (``poll_interval``: the 372's scanner may need it shorter than configured);
* the configuration snapshot (``configuration``);
* one poll cycle (``cycle``): a 240 reads every input; a 372 reads the one input its scanner
  is on (once past the change pause), the control input A and the sample heater, and keeps the
  scanner's state in ``InstrumentHealth.scan`` for the front panel and the alarms.

The poller picks its strategy once, from ``cfg.model``, through the model registry
(``appliance.models.REGISTRY``: each model's spec names its acquisition class).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from drivers.base import Instrument
from drivers.ls240 import SENSOR_UNITS, Model240
from drivers.ls370 import Model370
from drivers.ls372 import MEASUREMENT_CHANNELS, InputSetup, Model372
from drivers.pfeiffer import CHANNELS as GAUGES
from drivers.pfeiffer import TPG256A, TPG366, PfeifferGauge
from drivers.readings import Reading
from drivers.transport import TcpTransport

from .config import ChannelConfig, InstrumentConfig
from .health import InstrumentHealth
from .naming import SeriesKey
from .samples import Sample


@dataclass
class ChannelPlan:
    """What to read on one input and under which series names."""

    number: str
    name: str
    kelvin: SeriesKey | None
    sensor: SeriesKey | None


@dataclass
class Input:
    """An input found to read: its channel name (before collisions are resolved) and sensor units."""

    name: str
    sensor_units: str
    config: ChannelConfig | None  # its [[instrument.channel]] entry, if it has one


def samples_of(plan: ChannelPlan, r: Reading, flags: int) -> list[Sample]:
    """The samples one reading gives under a plan (the kelvin and/or the sensor series)."""
    out = []
    if plan.kelvin:
        out.append(Sample(plan.kelvin, r.t, r.kelvin, r.status | flags))
    if plan.sensor:
        out.append(Sample(plan.sensor, r.t, r.sensor, r.status | flags))
    return out


def required(cfg: InstrumentConfig, key: str) -> str:
    """A key the transport needs: the config check refuses a config without it, so this only types it."""
    value = getattr(cfg, key)
    if not value:
        raise ValueError(f"instrument {cfg.name}: transport {cfg.transport!r} needs {key}")
    return value


def configured_channels(cfg: InstrumentConfig) -> dict[str, ChannelConfig]:
    return {str(c.number): c for c in cfg.channel}


class Acquisition(Protocol):
    """The model-specific half of a poller; every call runs on the poller's own thread."""

    @property
    def instrument(self) -> Instrument:
        """The driver; the poller connects and closes it and runs control requests on it."""
        ...

    def discover_inputs(self) -> dict[str, Input]:
        """After a connect: the inputs to read, by channel, in the order their names claim series."""
        ...

    def poll_interval(self) -> tuple[float, str | None]:
        """Seconds between cycles for the inputs just discovered, and why that is not the configured
        interval (None when it is)."""
        ...

    def configuration(self, channels: list[str]) -> dict:
        """The instrument's configuration of ``channels``, for the snapshot."""
        ...

    def connected(self) -> None:
        """The link was (re)opened: forget what the last one saw."""
        ...

    def cycle(self, plans: dict[str, ChannelPlan], flags: int, out: list[Sample]) -> None:
        """One poll cycle; samples are appended to ``out`` as each exchange succeeds."""
        ...


class Ls372Acquisition:
    """Lake Shore 372: 16 scanned inputs and the control input A, over TCP, serial or VISA.

    The scanner measures one input at a time; with autoscan on it visits every enabled input
    for its change pause plus dwell. A cycle reads only the input the scanner is on, and only
    once the pause since the switch has passed: inside it the 372 repeats the old value.
    """

    driver: type[Model372] | type[Model370] = Model372
    heater_ocs = "sample_heater"  # the OCS field name of the sample heater series

    def __init__(self, cfg: InstrumentConfig, health: InstrumentHealth) -> None:
        self.cfg, self.health = cfg, health
        expected = cfg.expect_serial or cfg.serial_number
        driver = self.driver
        self.instrument: Model372 | Model370
        if cfg.transport == "tcp":
            self.instrument = driver(
                TcpTransport(required(cfg, "host"), cfg.port), timeout=cfg.timeout, expected_serial=expected
            )
        elif cfg.transport == "serial":
            self.instrument = driver.serial(cfg.serial_device(), timeout=cfg.timeout, expected_serial=expected)
        else:
            self.instrument = driver.visa(required(cfg, "resource"), timeout=cfg.timeout, expected_serial=expected)
        self.pauses: dict[str, int] = {}  # channel -> change pause (s): readings inside it are skipped
        self.rotation: list[list] = []  # [channel, pause, dwell] of each enabled input, in scan order
        self.heater_key: SeriesKey | None = None
        self._active: str | None = None  # the channel the scanner was on at the last cycle
        self._switched = 0.0  # monotonic time the scanner was first seen on it

    def discover_inputs(self) -> dict[str, Input]:
        inst, cfg = self.instrument, self.cfg
        configured = configured_channels(cfg)
        found: dict[str, Input] = {}
        candidates = list(MEASUREMENT_CHANNELS)
        if cfg.read_control_input and self.driver.has_control_input:
            candidates = ["A"] + candidates
        setups: dict[str, InputSetup] = {}
        for ch in candidates:
            c = configured.get(ch)
            if c is not None and not c.enabled:
                continue
            if configured and c is None and ch != "A":
                continue
            setup = setups[ch] = inst.input_setup(ch)
            self.pauses[ch] = setup.pause
            if c is None and ch != "A" and not setup.enabled:
                continue
            name = (c.name if c is not None and c.name else None) or inst.input_name(ch) or f"Channel {ch}"
            found[ch] = Input(name, "Ohm", c)
        # the autoscan visits every enabled input for its pause + dwell: how long until a
        # scanned channel is read again (the front panel's and the alarms' idea of fresh)
        self.rotation = []
        for ch in MEASUREMENT_CHANNELS:
            setup = setups.get(ch) or inst.input_setup(ch)
            if setup.enabled:
                self.rotation.append([ch, setup.pause, setup.dwell])
        if cfg.read_heater:
            self.heater_key = SeriesKey(
                cfg.name, "sample_heater", "%", "sample_heater", "sample heater output", ocs=self.heater_ocs
            )
        return found

    def poll_interval(self) -> tuple[float, str | None]:
        """Poll at least once per shortest change pause of the scanned channels.

        With autoscan on, a poll interval longer than the shortest pause could miss a switch away
        from a channel and back, and then keep the stale readings the 372 repeats inside the new
        pause. The effective interval is shortened to that pause (and the poller records why).
        """
        inst, configured = self.instrument, self.cfg.interval
        if not inst.scan().autoscan:
            return configured, None
        pauses = []
        for n in MEASUREMENT_CHANNELS:
            setup = inst.input_setup(n)
            if setup.enabled:
                self.pauses[n] = setup.pause
                pauses.append(setup.pause)
        shortest = min(pauses, default=None)
        if shortest is None or configured <= shortest:
            return configured, None
        interval = float(shortest)
        return interval, (
            f"poll interval {configured:g} s is longer than the shortest scanner pause "
            f"({shortest} s): polling every {interval:g} s instead, so no channel switch is missed"
        )

    def configuration(self, channels: list[str]) -> dict:
        return self.instrument.configuration(channels)

    def connected(self) -> None:
        self._active = None

    def cycle(self, plans: dict[str, ChannelPlan], flags: int, out: list[Sample]) -> None:
        inst, health = self.instrument, self.health
        scan = inst.scan()
        now = time.monotonic()
        if scan.channel != self._active:
            self._active, self._switched = scan.channel, now
            health.active_channel = scan.channel
            health.scan = {
                "autoscan": scan.autoscan,
                "channel": scan.channel,
                "switched": time.time(),
                "rotation": self.rotation,
            }
        elif health.scan is not None and health.scan["autoscan"] != scan.autoscan:
            health.scan = dict(health.scan, autoscan=scan.autoscan)
        plan = plans.get(scan.channel)
        # Inside the change pause the 372 repeats the channel's old value: skip it (socs PR #28).
        if plan is not None and now - self._switched >= self.pauses.get(scan.channel, 3):
            out.extend(samples_of(plan, inst.read(scan.channel), flags))
        if "A" in plans:
            out.extend(samples_of(plans["A"], inst.read("A"), flags))
        if self.heater_key is not None:
            v = inst.sample_heater_output()
            out.append(Sample(self.heater_key, time.time(), v, flags))


class Ls370Acquisition(Ls372Acquisition):
    """Lake Shore 370: the 372's scanned acquisition (its ancestor scans the same way: a channel
    repeats its old reading through the change pause, socs' 370 agent skips it too), without an
    input A, over RS-232 or GPIB."""

    driver = Model370
    heater_ocs = "sample_heater_out"  # socs' LS370_Agent: '{heater}_heater_out' (agent.py l.636-637)


class Ls240Acquisition:
    """Lake Shore 240: 2 or 8 inputs measured continuously, over USB serial or VISA; a cycle reads them all."""

    def __init__(self, cfg: InstrumentConfig, health: InstrumentHealth) -> None:
        self.cfg, self.health = cfg, health
        expected = cfg.expect_serial or cfg.serial_number
        if cfg.transport == "serial":
            self.instrument = Model240.serial(cfg.serial_device(), timeout=cfg.timeout, expected_serial=expected)
        else:
            self.instrument = Model240.visa(required(cfg, "resource"), timeout=cfg.timeout, expected_serial=expected)

    def discover_inputs(self) -> dict[str, Input]:
        inst = self.instrument
        configured = configured_channels(self.cfg)
        found: dict[str, Input] = {}
        for n in range(1, inst.channel_count + 1):
            ch = str(n)
            c = configured.get(ch)
            if (c is not None and not c.enabled) or (configured and c is None):
                continue
            itype = inst.input_type(n)
            if c is None and not itype.enabled:
                continue
            name = (c.name if c is not None and c.name else None) or inst.input_name(n) or f"Channel {n}"
            found[ch] = Input(name, SENSOR_UNITS.get(itype.sensor, "V"), c)
        return found

    def poll_interval(self) -> tuple[float, str | None]:
        return self.cfg.interval, None

    def configuration(self, channels: list[str]) -> dict:
        return self.instrument.configuration([int(c) for c in channels])

    def connected(self) -> None:
        pass

    def cycle(self, plans: dict[str, ChannelPlan], flags: int, out: list[Sample]) -> None:
        inst = self.instrument
        for plan in plans.values():
            out.extend(samples_of(plan, inst.read(int(plan.number), plan.sensor.units if plan.sensor else "V"), flags))


class PfeifferAcquisition:
    """A Pfeiffer gauge controller (TPG 366 over TCP or VISA; TPG 256 A over serial or VISA ASRL):
    six gauges, read together each cycle, each into ``<node>::p<n>`` (the Bluefors and socs names).

    A gauge without a sensor (``TID`` says ``noSen``) is read only when the config lists it. A
    reading that is not a measurement (underrange, overrange, sensor error or off, ...) is a
    sample with value None and the status code's bit: stored as NULL with its status.
    """

    def __init__(self, cfg: InstrumentConfig, health: InstrumentHealth) -> None:
        self.cfg, self.health = cfg, health
        cls: type[PfeifferGauge] = TPG366 if cfg.model == "tpg366" else TPG256A
        if cfg.transport == "tcp":
            port = cfg.port  # the model's own (8000) when the file gives none: InstrumentConfig._model_port
            self.instrument: PfeifferGauge = cls(TcpTransport(required(cfg, "host"), port), timeout=cfg.timeout)
        elif cfg.transport == "serial":
            self.instrument = cls.serial(cfg.serial_device(), timeout=cfg.timeout)
        else:
            self.instrument = cls.visa(required(cfg, "resource"), timeout=cfg.timeout)

    def discover_inputs(self) -> dict[str, Input]:
        configured = configured_channels(self.cfg)
        found: dict[str, Input] = {}
        for n in range(1, GAUGES + 1):
            ch, c = str(n), configured.get(str(n))
            if (c is not None and not c.enabled) or (configured and c is None):
                continue
            kind = self.instrument.gauge_ids[n - 1] if self.instrument.gauge_ids else ""
            if c is None and kind.lower() == "nosen":
                continue
            name = (c.name if c is not None and c.name else None) or f"P{n}"
            found[ch] = Input(name, self.instrument.units, c)
        return found

    def plan_for(self, ch: str, name: str, units: str) -> ChannelPlan:
        """``p<n>`` whatever the gauge's name (the name labels it); OCS: socs' ``pressure_ch<n>``."""
        _, ocs = self.instrument.ocs_names(ch, name)
        kind = self.instrument.gauge_ids[int(ch) - 1] if self.instrument.gauge_ids else "gauge"
        desc = f"{self.cfg.model} gauge {ch} ({name}, {kind})"
        return ChannelPlan(ch, name, None, SeriesKey(self.cfg.name, f"p{ch}", units, f"p{ch}", desc, ocs=ocs))

    def poll_interval(self) -> tuple[float, str | None]:
        return self.cfg.interval, None

    def configuration(self, channels: list[str]) -> dict:
        return self.instrument.configuration(channels)

    def connected(self) -> None:
        pass

    def cycle(self, plans: dict[str, ChannelPlan], flags: int, out: list[Sample]) -> None:
        for r in self.instrument.read_gauges():
            plan = plans.get(str(r.channel))
            if plan is not None and plan.sensor is not None:
                out.append(Sample(plan.sensor, r.t, r.pressure, r.status | flags))
