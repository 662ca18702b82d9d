"""The web server and a share listen on the Pi's own LAN address before the Pi has it.

kelvinpi.service does not wait for network-online (a fridge is logged and its panel shown with the
lab's cable out), so a lab's ``[web] bind`` or ``[instrument.share] bind`` of the Pi's address is often
missing when the service starts: without IP_FREEBIND the web server failed to start (EADDRNOTAVAIL,
restarted every 5 s) and the share was dropped for the whole run. In a network namespace made by the
test: both listen on an address no interface has, the address comes, and a client gets through.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import urllib.request

import pytest

from appliance.config import WebConfig
from appliance.share.listener import Listener
from appliance.web.server import Server

from .conftest import wait_for
from .support.routers import in_netns
from .test_controlroom_netns import ip, netns_allowed

ADDRESS = "10.251.7.1"  # exists only inside the test's namespace, once the test adds it


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"kelvinpi"]


@pytest.mark.timeout(120)
def test_a_bind_address_that_comes_after_the_start_is_listened_on(caplog):
    why = netns_allowed()
    if why:
        pytest.skip(why)  # as the control-room test does; CI and the development machine can
    ns = f"kp-fb-{secrets.token_hex(3)}"
    ip("netns", "add", ns)
    server = listener = None
    admitted: list[tuple] = []
    try:
        ip("-n", ns, "link", "set", "lo", "up")

        def listen():
            probe = socket.socket()
            try:  # the fault this fixes: a plain bind of an address the machine lacks
                with pytest.raises(OSError) as plain:
                    probe.bind((ADDRESS, 0))
            finally:
                probe.close()
            web = Server(hello, WebConfig(bind=ADDRESS, port=0))
            share = Listener(ADDRESS, 0, "LSA23JD", lambda conn, peer: admitted.append(peer) or True)
            return plain.value.errno, web, share

        with caplog.at_level(logging.WARNING, logger="kelvinpi.net"):
            errno_plain, server, listener = in_netns(ns, listen)
        import errno

        assert errno_plain == errno.EADDRNOTAVAIL
        assert server.bind_addr[0] == ADDRESS and listener.address[0] == ADDRESS
        warned = [r.getMessage() for r in caplog.records]
        assert f"the web server: {ADDRESS} is not an address of this machine yet" in warned[0]
        assert f"the share of LSA23JD: {ADDRESS} is not an address of this machine yet" in warned[1]
        threading.Thread(target=server.serve, daemon=True).start()
        listener.start()
        ip("-n", ns, "addr", "add", f"{ADDRESS}/24", "dev", "lo")  # the DHCP lease arrives

        def get():
            with urllib.request.urlopen(f"http://{ADDRESS}:{server.bind_addr[1]}/", timeout=5) as r:
                return r.status, r.read()

        def connect_share():
            with socket.create_connection((ADDRESS, listener.address[1]), timeout=5):
                pass
            return True

        assert in_netns(ns, get) == (200, b"kelvinpi")
        assert in_netns(ns, connect_share)
        wait_for(lambda: admitted, 5, what="the share admitted the client")
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.stop()
        ip("netns", "del", ns)


def test_the_wildcard_and_a_local_address_warn_of_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="kelvinpi.net"):
        for bind in ("0.0.0.0", "127.0.0.1"):
            server = Server(hello, WebConfig(bind=bind, port=0))
            server.close()
    assert caplog.records == []
