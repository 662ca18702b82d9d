"""The CPA through the WAMP uplinks, against the real crossbar router: its OCS feed is named as
socs' agent names it (``ptc_status``, agent class ``CryomechCPAAgent``, socs' keys), and sisock
serves its fields (``cpatempwi`` ...); each carries every stored reading."""

from __future__ import annotations

import time

import pytest

from drivers.cpa import FIELDS, QUANTITIES
from firmware_host.cpa_server import CpaEmulator

from .conftest import start_appliance, wait_for
from .support.reconcile import stored
from .support.routers import CROSSBAR, FeedListener
from .test_cpa_appliance import CFG
from .test_uplinks import uplink_config

pytestmark = [
    pytest.mark.skipif(not CROSSBAR.exists(), reason="crossbar venv missing: run `make test`"),
    pytest.mark.crossbar,
    pytest.mark.slow,
]


def test_ocs_feed_and_sisock_fields_as_socs_names_them(tmp_path, router, hub, consumer, wamp_loop):
    listener = FeedListener(wamp_loop, router, feed="ptc_status")  # socs agent.py:45
    assert listener.joined.wait(20)
    emu = CpaEmulator()
    _, port = emu.listen_tcp("127.0.0.1", 0)
    app = start_appliance(CFG.format(port=port, interval=0.25, db=tmp_path / "k.db") + uplink_config(router, tmp_path))
    try:
        wait_for(lambda: listener.samples().get("observatory.ptc1.Coolant_In_Temp"), 30, what="the ptc_status feed")
        blocks, feed = listener.messages[-1]
        assert feed["feed_name"] == "ptc_status" and feed["agent_class"] == "CryomechCPAAgent"
        assert feed["address"] == "observatory.ptc1.feeds.ptc_status"
        # the sisock node is another session than the OCS feed's: wait for it and for its fields
        wait_for(lambda: "ptc1" in {n["name"] for n in consumer.nodes()}, 30, what="the ptc1 data node")
        fields, _timelines = wait_for(
            lambda: (ft := consumer.get_fields("ptc1", 1, 0)) and set(FIELDS) <= set(ft[0]) and ft,
            30,
            what="every CPA field listed",
        )
        assert set(FIELDS) <= set(fields) and fields["cpatempwi"]["units"] == "F"
        emu.control("mute on")  # nothing new from here: every delivered reading must reach both readers
        produced = sum(map(len, emu.ledger.snapshot().values()))
        wait_for(lambda: sum(len(stored(app.store, f"ptc1::{f}")) for f in FIELDS) == produced, 10, what="stored")
        for q in QUANTITIES:
            rows = stored(app.store, f"ptc1::{q.field}")
            want = [round(t, 3) for t, _ in rows]
            name = f"observatory.ptc1.{q.ocs}"
            wait_for(lambda n=name, w=want: sorted(round(t, 3) for t, _ in listener.samples().get(n, [])) == w, 30,
                     what=f"{name}: every stored reading on the OCS feed")  # fmt: skip
        t0, t1 = stored(app.store, "ptc1::cparun")[0][0] - 1, time.time() + 1
        got = consumer.get_data("ptc1", list(FIELDS), t0, t1)
        assert sum(len(v) for v in got["data"].values()) == produced
    finally:
        app.stop()
        emu.stop()
