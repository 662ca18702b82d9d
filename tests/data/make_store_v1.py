"""Writes tests/data/store-v1.db with the v1 store (kelvinpi 0.1.0, commit ca9f0ff): `git show ca9f0ff:appliance/store.py > appliance/store_v1.py` beside it, then run this."""
import sys, random
from appliance.store_v1 import Store
from appliance.naming import SeriesKey
from appliance.samples import Sample
path = sys.argv[1]
s = Store(path)
K = SeriesKey("LSA23JD", "mxc_t", "K", "mxc", "372 input 1 (MXC)", ocs="mxc_T")
R = SeriesKey("LSA23JD", "mxc_r", "Ohm", "mxc", "372 input 1 (MXC)", ocs="mxc_R")
H = SeriesKey("LSA24AZ", "plate_t", "K", "plate", "240 input 1 (plate)", ocs="Channel_1_T")
rng = random.Random(7)
t0 = 1_780_000_000.0
batch = []
for i in range(3 * 3600):
    t = t0 + i + rng.uniform(-0.003, 0.003)
    batch.append(Sample(K, t, float(f"{0.0123 + 1e-4 * rng.random():.6g}"), 0))
    batch.append(Sample(R, t, None if i % 997 == 5 else float(f"{1.2e5 + rng.random() * 100:.6g}"), 64 if i % 997 == 5 else 0))
    if i % 2 == 0:
        batch.append(Sample(H, t + 0.5, float(f"{3.9 + 1e-3 * rng.random():.6g}"), 0))
    if len(batch) > 3000:
        s.write(batch); batch = []
s.write(batch)
s.event("connected", "LSA23JD", "LSC372 fw 1.0")
s.snapshot("LSA23JD", {"channels": {"1": {"name": "MXC"}}})
# uplink cursors: influx has sent LSA23JD up to 1 h in, nothing of LSA24AZ; ocs has sent mxc_t up to 2 h
ids = {f.name: f.id for f in s.fields()}
conn = s._wconn
def pos(sid, t): return conn.execute("SELECT max(t) FROM raw WHERE series=? AND t<=?", (sid, int(t * 1000))).fetchone()[0]
rows = [("influx:x", ids[K.name], pos(ids[K.name], t0 + 3600)), ("influx:x", ids[R.name], pos(ids[R.name], t0 + 3600)),
        ("ocs:y", ids[K.name], pos(ids[K.name], t0 + 7200))]
conn.executemany("INSERT INTO cursor(name, series, position, updated) VALUES (?,?,?,0)", rows)
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
s.close()
