"""The front panel shows an instrument's share: its port and policy, and each client's address,
command rate and wait (issue 26), in Debian's headless Chromium."""

from __future__ import annotations

import pytest

from tests.test_front_panel import CHROMIUM, page  # noqa: F401  (the fixture)
from tests.test_share import LineClient, port_of, sharing

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed")


def test_the_instrument_card_shows_each_share_client(tmp_path, emu372, page):  # noqa: F811
    with sharing(tmp_path, emu372) as app:
        c = LineClient(port_of(app))
        for _ in range(20):
            c.msg("KRDG? A")
        page.goto(app.base_url + "/")
        card = page.locator('[data-node="LSA23JD"]')
        card.locator(".share-client").wait_for(timeout=15000)
        head = card.locator(".share").inner_text()
        assert f"shared on port {port_of(app)} (policy read) · 1 client(s)" in head
        client = card.locator(".share-client").inner_text()
        local = c.sock.getsockname()
        assert client.startswith(f"client {local[0]}:{local[1]} · ") and "lines/s" in client and "wait" in client
        page.screenshot(path=str(tmp_path / "share-panel.png"))
        c.close()
