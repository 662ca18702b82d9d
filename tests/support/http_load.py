"""Many HTTP clients reading the panel's API and the Grafana datasource, as a process of their own.

Run by tests as ``python -m tests.support.http_load PORT SECONDS CLIENTS TARGET...``; prints one
JSON object: each request kind's latencies (s) and every failed answer. A process of its own, as
the browsers and Grafana servers it stands for are: 50 client threads inside the appliance's
process took its interpreter lock from the emulated instruments too, and on a loaded CI host a
reply came after the poller's 1 s timeout (a "lost" reading the appliance had never been sent).

Each client starts a request every ``PERIOD`` s at most (5 a second, a busy dashboard's rate; 250/s
for 50): unpaced, they kept the server's workers, and with them the process the emulated
instruments share, busy all the time, however fast the host. Throughput is ``make bench-web``'s.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time

PERIOD = 0.2


def run(port: int, seconds: float, clients: int, targets: list[str]) -> dict:
    latencies: dict[str, list[float]] = {"latest": [], "grafana": []}
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        while time.monotonic() < deadline:
            i += 1
            started = time.monotonic()
            kind = "grafana" if i % 4 == 0 else "latest"
            t = time.perf_counter()
            try:
                if kind == "latest":
                    conn.request("GET", "/api/v1/latest")
                else:
                    body = json.dumps(
                        {
                            "range": {"from": repr(time.time() - 30 * 86400), "to": repr(time.time())},
                            "maxDataPoints": 1000,
                            "targets": [{"target": name} for name in targets],
                        }
                    )
                    conn.request("POST", "/grafana/query", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = json.loads(r.read())
                ok = r.status == 200 and (
                    len(data) >= len(targets) if kind == "latest" else all(len(s["datapoints"]) >= 500 for s in data)
                )
            except Exception as exc:  # counted, then the connection is replaced
                ok, r = False, None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                data = repr(exc)
            dt = time.perf_counter() - t
            with lock:
                latencies[kind].append(dt)
                if not ok:
                    failures.append(f"{kind}: {getattr(r, 'status', None)} {str(data)[:120]}")
            time.sleep(max(0.0, min(started + PERIOD, deadline) - time.monotonic()))
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:  # one deadline for all: a request's own timeout is 30 s
        t.join(max(0.0, deadline + 40 - time.monotonic()))
    with lock:
        return {"latencies": latencies, "failures": failures, "unfinished": sum(t.is_alive() for t in threads)}


if __name__ == "__main__":
    port, seconds, clients, *names = sys.argv[1:]
    print(json.dumps(run(int(port), float(seconds), int(clients), names)))
