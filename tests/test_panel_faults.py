"""The panel under partial faults (headless Chromium, a misbehaving proxy on loopback in front of the
appliance): one endpoint failing or hanging while the other answers, an answer missing a key, answers
replayed frozen by a middlebox, a browser clock that is off, slow plot data. None may leave a page
that looks alive and says nothing."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .test_front_panel import (
    page,  # noqa: F401 - the Chromium fixture
    pytestmark,  # noqa: F401 - skipped without Debian's chromium
)
from .test_panel_alarms import alarmed  # noqa: F401 - the appliance with an active alarm


class FaultProxy:
    """A reverse proxy on loopback; ``rules`` maps a path prefix to a fault: ``("status", 500)``,
    ``("hang", seconds)`` (no answer, then the connection closed), ``("slow", seconds)`` (the real
    answer, late), ``("drop", key)`` (a key removed from the JSON answer), ``("replay", None)`` (the
    last real answer for that path, headers and all, again and again). ``hits`` counts requests per
    faulted prefix."""

    def __init__(self, upstream_port: int) -> None:
        self.rules: dict[str, tuple[str, object]] = {}
        self.hits: dict[str, int] = {}
        self.kept: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def _forward(self) -> None:
                prefix = next((p for p in outer.rules if self.path.startswith(p)), None)
                rule = outer.rules.get(prefix) if prefix else None
                if prefix:
                    outer.hits[prefix] = outer.hits.get(prefix, 0) + 1
                base = self.path.split("?")[0]
                if rule and rule[0] == "status":
                    return self._send(int(rule[1]), [("Content-Type", "text/plain")], b"broken\n")  # type: ignore[arg-type]
                if rule and rule[0] == "hang":
                    outer.stopping.wait(float(rule[1]))  # type: ignore[arg-type]
                    self.close_connection = True
                    return
                if rule and rule[0] == "replay" and base in outer.kept:
                    return self._send(*outer.kept[base])
                if rule and rule[0] == "slow":
                    outer.stopping.wait(float(rule[1]))  # type: ignore[arg-type]
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                up = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
                    up.request(self.command, self.path, body=body, headers=headers)
                    r = up.getresponse()
                    data = r.read()
                    hdrs = [
                        (k, v)
                        for k, v in r.getheaders()
                        if k.lower() not in ("connection", "transfer-encoding", "content-length")
                    ]
                finally:
                    up.close()
                if rule and rule[0] == "drop" and r.status == 200:
                    d = json.loads(data)
                    d.pop(str(rule[1]), None)
                    data = json.dumps(d).encode()
                if r.status == 200:
                    outer.kept[base] = (r.status, hdrs, data)
                self._send(r.status, hdrs, data)

            def _send(self, status: int, hdrs: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for k, v in hdrs:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward  # noqa: N815 - http.server's names

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def _live(page, url: str) -> None:  # noqa: F811
    page.goto(url)
    page.wait_for_selector('[data-channel="LSA23JD::mxc_control"]', timeout=15000)
    page.wait_for_function("document.querySelector('#updated').textContent.startsWith('updated')", timeout=15000)
    assert not page.locator("#nocontact").is_visible()
    assert not page.locator("#alarms-unknown").is_visible()


def _health_lost_is_loud(page, proxy: FaultProxy, rule: tuple[str, object]) -> None:  # noqa: F811
    """/latest keeps answering, /health does not: within two health refreshes (3 s each, plus one
    request deadline for a hang) the page says NO CONTACT and that the alarms are unknown."""
    _live(page, proxy.url + "/?kiosk")
    proxy.rules = {"/api/v1/health": rule}
    cut = time.monotonic()
    page.wait_for_selector("#nocontact", state="visible", timeout=25000)
    took = time.monotonic() - cut
    hits = proxy.hits.get("/api/v1/health", 0)
    assert hits <= 3, f"NO CONTACT only after {hits} failed health refreshes ({took:.1f} s)"
    assert page.locator("#nocontact .big").inner_text().startswith("NO CONTACT with the appliance since ")
    unknown = page.locator("#alarms-unknown")
    assert unknown.is_visible()  # the alarm area must not look like "no alarms"
    text = unknown.inner_text()
    assert "ALARMS UNKNOWN" in text and "health unknown since " in text, text
    why = page.locator("#nocontact .why").inner_text()
    assert ("HTTP 500" in why) if rule[0] == "status" else ("no answer within" in why), why
    assert "health unknown since" in page.evaluate("document.querySelector('#instruments').dataset.unknown || ''")
    # back: everything clears
    proxy.rules = {}
    page.wait_for_selector("#nocontact", state="hidden", timeout=15000)
    assert not unknown.is_visible()


def test_health_500_while_latest_answers_is_no_contact(running_appliance, page):  # noqa: F811
    proxy = FaultProxy(running_appliance.web_address[1])
    try:
        _health_lost_is_loud(page, proxy, ("status", 500))
    finally:
        proxy.stop()


def test_health_hanging_while_latest_answers_is_no_contact(running_appliance, page):  # noqa: F811
    proxy = FaultProxy(running_appliance.web_address[1])
    try:
        _health_lost_is_loud(page, proxy, ("hang", 30))
    finally:
        proxy.stop()


def test_health_missing_a_key_still_shows_the_alarm_and_says_panel_error(alarmed, page):  # noqa: F811
    """A health answer without ``store``: the drawing of the store pill fails, the alarm banner is
    drawn anyway (it goes first), and a visible "panel error" line names what broke."""
    proxy = FaultProxy(alarmed.web_address[1])
    proxy.rules = {"/api/v1/health": ("drop", "store")}
    try:
        page.goto(proxy.url + "/?kiosk")
        row = page.locator('#alarms [data-alarm="mxc-cold"]')
        row.wait_for(timeout=15000)
        assert page.locator("#alarms").is_visible() and "CRITICAL" in row.inner_text()
        err = page.locator("#panel-error")
        err.wait_for(state="visible", timeout=10000)
        assert err.inner_text().startswith("panel error: ") and "store" in err.inner_text()
        # a health answer that cannot be drawn is not contact: the page says so
        page.wait_for_selector("#nocontact", state="visible", timeout=15000)
        # the answer whole again: the error line goes
        proxy.rules = {}
        err.wait_for(state="hidden", timeout=15000)
        page.wait_for_selector("#nocontact", state="hidden", timeout=15000)
    finally:
        proxy.stop()


def test_frozen_replayed_answers_are_no_contact(running_appliance, page):  # noqa: F811
    """A middlebox replaying the same 200 answers (the appliance's time in them stands still)."""
    proxy = FaultProxy(running_appliance.web_address[1])
    try:
        _live(page, proxy.url + "/?kiosk")
        proxy.rules = {"/api/v1/latest": ("replay", None), "/api/v1/health": ("replay", None)}
        page.wait_for_selector("#nocontact", state="visible", timeout=20000)
        assert "answers stopped changing" in page.locator("#nocontact .why").inner_text()
        proxy.rules = {}
        page.wait_for_selector("#nocontact", state="hidden", timeout=15000)
    finally:
        proxy.stop()


def test_plots_use_the_appliance_clock_not_the_browser(running_appliance, page):  # noqa: F811
    """The browser's clock 10 minutes behind the Pi's: the last 10 minutes still show the readings."""
    page.add_init_script(
        """(() => { const RealDate = Date, off = -600000;
        class OffDate extends RealDate {
          constructor(...a) { if (a.length === 0) super(RealDate.now() + off); else super(...a); }
          static now() { return RealDate.now() + off; } }
        globalThis.Date = OffDate; })();"""
    )
    page.goto(running_appliance.base_url + "/")
    page.wait_for_selector('.plot[data-plot="temperatures"] canvas', timeout=15000)
    assert abs(page.evaluate("Date.now()") / 1000 + 600 - time.time()) < 30  # the browser's clock is off
    page.select_option("#range", "600")
    time.sleep(2)
    page.evaluate("refreshPlots()")
    shown = page.evaluate(
        """() => { const u = window.kelvinpi.temperatures, x = u.data[0];
           return {n: x.length, inView: x.filter(t => t >= u.scales.x.min && t <= u.scales.x.max).length}; }"""
    )
    assert shown["n"] > 0 and shown["inView"] >= shown["n"] * 0.9, shown


def test_slow_plot_data_is_not_no_contact_and_still_draws(running_appliance, page):  # noqa: F811
    """/api/v1/data taking 5 s (a long range on a Pi): the appliance is live, the plot draws late."""
    proxy = FaultProxy(running_appliance.web_address[1])
    proxy.rules = {"/api/v1/data": ("slow", 5)}
    try:
        page.add_init_script(
            """window.__sawNoContact = false; new MutationObserver(() => {
                 const b = document.querySelector('#nocontact'); if (b && !b.hidden) window.__sawNoContact = true;
               }).observe(document, {subtree: true, attributes: true, attributeFilter: ['hidden']});"""
        )
        page.goto(proxy.url + "/")
        page.wait_for_selector('.plot[data-plot="temperatures"] canvas', timeout=30000)
        assert proxy.hits.get("/api/v1/data", 0) >= 1
        assert not page.evaluate("window.__sawNoContact")
        assert page.locator("#plots-note").inner_text() == ""
    finally:
        proxy.stop()
