"""A newly configured uplink's first cursor: from the moment the service built it, not the moment it started.

The service builds its uplinks, starts the pollers, then starts the uplinks. On a loaded box a CPA
(one Modbus block read on connect) stored its first reading in between, and the OCS uplink, whose
start came later than InfluxDB's, never sent it: every CPA series one reading short on the OCS feed
(tests/test_fridge_plant.py, tests/test_cpa_uplinks.py under ``make test``).
"""

from __future__ import annotations

import time

from appliance.naming import SeriesKey
from appliance.samples import Sample
from appliance.store import Store
from appliance.uplinks.outbox import Outbox

OLD = SeriesKey("ptc1", "cpatempwi", "F", "cpatempwi", ocs="Coolant_In_Temp")


def test_a_reading_stored_between_build_and_start_is_sent(tmp_path):
    s = Store(tmp_path / "k.db")
    try:
        now = time.time()
        s.write([Sample(OLD, now - 60 + i, 70.0, 0) for i in range(3)])  # before this uplink was configured
        box = Outbox(s, "ocs:ws://127.0.0.1:1/ws:observatory", {"ptc1"})  # Service.add_uplinks
        s.write([Sample(OLD, now, 71.0, 0)])  # the pollers started: the CPA's connect reading
        box.start_from_now()  # Service.start: the uplinks start after the pollers
        s.write([Sample(OLD, now + 1, 72.0, 0)])
        batch = box.take()
        assert [v for rows in batch.rows.values() for _, v, _ in rows] == [71.0, 72.0]
        box.ack(batch)
        assert box.backlog() == 0 and len(box.take()) == 0
    finally:
        s.close()
