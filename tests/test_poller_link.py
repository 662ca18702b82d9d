"""The poller's link as a lock (issue 26): owning the link is holding ``Poller.link``.

The poller's thread holds it for everything (connecting, its cycle, each control request, the
backoff) except while it waits idle between cycles; only then does ``Poller.try_link`` give it to
another thread (a share client's), never waiting. The poller takes it back before its next request
or cycle, and a link error met by the other holder is the poller's own (``Poller.link_failed``):
one reconnect. The real appliance against the emulated 372 on loopback.
"""

from __future__ import annotations

import threading
import time

import pytest

from appliance import config as _config
from appliance.service import Appliance
from drivers.errors import ConnectionLost
from tests.conftest import appliance_config, wait_for

pytestmark = pytest.mark.slow  # the appliance's poller in real time, a few seconds each


@pytest.fixture
def app(tmp_path, emu372):
    a = Appliance(_config.parse(appliance_config(tmp_path, emu372, None)))
    a.start()
    try:
        wait_for(lambda: all(p.health.connected for p in a.pollers), 20, what="connected")
        yield a
    finally:
        a.stop()


def from_another_thread(fn):
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(r=fn()))
    t.start()
    t.join(10)
    return got["r"]


def take_when_idle(poller, timeout: float = 10.0) -> None:
    """Take the link from this thread at a moment the poller is idle (bounded)."""
    wait_for(poller.try_link, timeout, 0.001, "the poller idle between cycles")


def test_the_link_is_lent_only_while_the_poller_is_idle(app):
    poller = app.pollers[0]
    # during the poller's cycle and during a control request another thread cannot take the link
    in_cycle: list[bool] = []
    orig = poller.cycle

    def cycle(out) -> None:
        in_cycle.append(from_another_thread(poller.try_link))
        orig(out)

    poller.cycle = cycle
    wait_for(lambda: len(in_cycle) >= 3, 10, 0.01, "three cycles")
    poller.cycle = orig
    assert not any(in_cycle), in_cycle
    in_request = poller.call(lambda inst: from_another_thread(poller.try_link), "probe")
    assert in_request is False
    # between cycles it can, and while it holds the link the poller's cycles wait for it
    take_when_idle(poller)
    try:
        cycles = poller.health.cycles
        time.sleep(3 * poller.interval + 0.2)
        assert poller.health.cycles == cycles, "a cycle ran while another thread held the link"
        assert not poller.try_link(), "two holders at once"
    finally:
        poller.link.release()
    wait_for(lambda: poller.health.cycles > cycles, 10, 0.01, "the poller cycles again")


def test_a_control_request_runs_on_the_poller_after_the_holder_lets_go(app):
    poller = app.pollers[0]
    take_when_idle(poller)
    got: dict = {}
    t = threading.Thread(
        target=lambda: got.update(r=poller.call(lambda inst: (time.monotonic(), threading.current_thread().name), "x"))
    )
    t.start()
    time.sleep(0.3)
    assert not got, "the request ran while another thread held the link"
    released = time.monotonic()
    poller.link.release()
    t.join(10)
    started, thread = got["r"]
    assert started >= released and thread == poller.name
    assert poller.health.connected


def test_a_link_error_met_by_another_holder_is_one_reconnect_of_the_poller(app):
    poller = app.pollers[0]
    h = poller.health
    since, connects, errors = time.time() - 0.01, h.reconnects, sum(h.errors.values())
    take_when_idle(poller)
    try:
        poller.link_failed(ConnectionLost("the holder's exchange lost the connection"))
        poller.link_failed(ConnectionLost("a second report of it"))  # the first one is the one handled
    finally:
        poller.link.release()
    wait_for(lambda: h.reconnects == connects + 1 and h.connected, 15, 0.02, "one reconnect")
    time.sleep(1.0)  # a second failure path would have run by now
    assert h.reconnects == connects + 1 and sum(h.errors.values()) == errors + 1, (h.reconnects, h.errors)
    assert "lost the connection" in h.last_error
    downs = app.store.events(since, 100, app.pollers[0].cfg.name, ("disconnected",))
    assert len(downs) == 1, downs
