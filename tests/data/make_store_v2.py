"""Writes tests/data/store-v2.db with the v2 store (commit 2b64605): `git archive 2b64605 appliance drivers | tar -x -C /tmp/oldcode`, then run this (it imports from /tmp/oldcode)."""
import sys, random
sys.path.insert(0, "/tmp/oldcode")
from appliance.store import Store, SCHEMA_VERSION
from appliance.naming import SeriesKey
from appliance.samples import Sample
assert SCHEMA_VERSION == 2
K = SeriesKey("LSA23JD", "mxc_t", "K", "mxc"); R = SeriesKey("LSA23JD", "mxc_r", "Ohm", "mxc")
rng = random.Random(3)
t0 = 1_700_000_000.0 // 86400 * 86400 + 1234.5
s = Store(sys.argv[1])
batch = []
for i in range(4 * 86400 // 60):
    t = t0 + i * 60 + rng.random() * 0.01
    batch += [Sample(K, t, 0.01 + rng.random() * 1e-3, 0), Sample(R, t, 1e5 + rng.random(), 0)]
    if len(batch) >= 4000:
        s.write(batch); batch = []
s.write(batch)
s.event("connected", "LSA23JD", "test fixture")
s.seal(now=t0 + 5 * 86400, budget=60)
s.flush()
s.close()
