"""Many HTTP clients reading the panel's API and the Grafana datasource, as a process of their own.

Run by tests as ``python -m tests.support.http_load PORT SECONDS CLIENTS TARGET...``; prints one
JSON object: each request kind's latencies (s) and every failed answer. A process of its own, as
the browsers and Grafana servers it stands for are: 50 client threads inside the appliance's
process took its interpreter lock from the emulated instruments too, and on a loaded CI host a
reply came after the poller's 1 s timeout (a "lost" reading the appliance had never been sent).
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time


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
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    with lock:
        return {"latencies": latencies, "failures": failures, "unfinished": sum(t.is_alive() for t in threads)}


if __name__ == "__main__":
    port, seconds, clients, *names = sys.argv[1:]
    print(json.dumps(run(int(port), float(seconds), int(clients), names)))
