"""The Bluefors log folder on the uplinks: the OCS feed socs' Bluefors agent publishes, and sisock.

produced (the emulated writer's ledger) = stored = served on the OCS feed (``...feeds.bluefors``,
as socs' ``BlueforsAgent`` names it, with socs' field names) and by sisock's ``get_data``.
"""

from __future__ import annotations

import time
from collections import Counter
from zoneinfo import ZoneInfo

from firmware_host.bluefors_writer import BlueforsWriter

from .conftest import sisock_uplink, start_appliance, wait_for, wait_nodes
from .support.reconcile import windows
from .support.routers import FeedListener
from .test_bluefors_appliance import LIGHT, NODE, produced, section, stored

TZ = ZoneInfo("Europe/Helsinki")


def test_bluefors_feed_and_data_node_serve_every_line_once(tmp_path, router, hub, consumer, wamp_loop):
    listener = FeedListener(wamp_loop, router, feed="bluefors")
    assert listener.joined.wait(20)
    logs = tmp_path / "logs"
    logs.mkdir()
    w = BlueforsWriter(logs, TZ, time.time() - 1500, periods=LIGHT)
    w.advance(900)
    text = section(logs) + (
        f'[store]\npath = "{tmp_path / "k.db"}"\ncommit_interval = 0.1\n[web]\nbind = "127.0.0.1"\nport = 0\n'
        + sisock_uplink(router, tmp_path)
        + f'\n[[uplink]]\nkind = "ocs"\nurl = "{router.ws_url}"\n'
    )
    app = start_appliance(text)
    try:
        want = produced(w)
        n = sum(want.values())
        wait_for(lambda: sum(stored(app.store).values()) >= n, 20, what="every line stored")
        assert stored(app.store) == want

        def on_feed() -> Counter:
            got: Counter = Counter()
            for key, points in listener.samples().items():
                if key.startswith(f"observatory.{NODE}."):
                    for t, v in points:
                        got[(key.removeprefix(f"observatory.{NODE}."), t, v)] += 1
            return got

        wait_for(lambda: sum(on_feed().values()) >= n, 30, what="every line on the OCS feed")
        assert on_feed() == want
        blocks, feed = listener.messages[-1]
        assert feed["feed_name"] == "bluefors" and feed["agent_class"] == "BlueforsAgent"
        assert feed["address"] == f"observatory.{NODE}.feeds.bluefors"
        wait_nodes(consumer, (NODE,))
        fields = [f.field for f in app.store.fields() if f.node == NODE]
        lo, hi = min(t for _, t, _ in want) - 1, max(t for _, t, _ in want) + 1
        served = 0
        for a, b in windows(lo, hi, 3000):
            got = consumer.get_data(NODE, fields, a, b)
            served += sum(len(v) for v in got["data"].values())
        assert served == n
    finally:
        app.stop()
