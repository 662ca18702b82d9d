"""A share that cannot listen costs the log nothing (red team, issue 26): the port taken by another
program, or a bind address the Pi does not have, leaves that share out, named in the health and on
record, while the instrument is polled and stored as usual."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import start_appliance, wait_for

pytestmark = pytest.mark.slow  # an appliance against the emulator (about 2 s)


@pytest.mark.parametrize("bind", ["127.0.0.1", "192.0.2.1"])  # the port taken; an address this host lacks
def test_a_share_that_cannot_listen_leaves_the_instrument_logging(tmp_path, emu372, bind):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    host, eport = emu372.tcp.address
    app = start_appliance(
        f'[[instrument]]\nmodel = "372"\nname = "LSA23JD"\ntransport = "tcp"\nhost = "{host}"\nport = {eport}\n'
        f'timeout = 1.0\ninterval = 0.2\n[instrument.share]\nenabled = true\nbind = "{bind}"\nport = {port}\n'
        f'[store]\npath = "{tmp_path / "k.db"}"\ncommit_interval = 0.2\n[web]\nbind = "127.0.0.1"\nport = 0\n'
    )
    try:
        assert app.shares == [] and "not started" in app.share_errors["LSA23JD"]
        assert app.health()["share_errors"] == app.share_errors
        wait_for(lambda: app.store.latest(), 20, what="readings stored with the share down")
        assert any(e["kind"] == "share_failed" for e in app.store.events(node="LSA23JD"))
        assert getattr(app.pollers[0].instrument, "observer", None) is None  # nothing of the share left on the link
    finally:
        app.stop()
        taken.close()
