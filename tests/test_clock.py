"""The clock check runs every few seconds for the life of the appliance: it must cost no process."""

import subprocess

from appliance import clock


def test_repeated_clock_checks_spawn_no_process(monkeypatch):
    monkeypatch.delenv("KELVINPI_ASSUME_CLOCK_SYNC", raising=False)
    clock.clock_synchronised()  # the first check may look libc up
    spawned = []
    real = subprocess.Popen.__init__

    def counting(self, *args, **kw):
        spawned.append(args[0] if args else kw.get("args"))
        real(self, *args, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", counting)
    results = {clock.clock_synchronised() for _ in range(50)}
    assert spawned == [] and results <= {True, False, None}
