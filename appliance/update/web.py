"""``POST /api/v1/update``: an update bundle uploaded to the appliance, then the command line's path.

Gated exactly as the control routes are (``ControlAccess``: off unless ``control.enabled``, then the
bearer token; 403/401 otherwise) and audited as they are (two ``control`` events under the node
``update``: who asked, from the socket's peer address, and how it ended). The server admits the
body only after the same token check (``large_body``: a client without it never gets a byte kept),
spools it on the data partition and stops it at ``[update] max_upload_mb`` (413). The bundle is
then copied into ``state_dir`` (streamed), checked (a refusal is 400 with RAUC's reason, and
nothing changed), installed, and the appliance reboots into its try a second after answering 202.
From the 202 on, another upload is 409 (audited): the appliance is rebooting into the first, and
while a marker written on this boot waits for its try, ``Installer.refuse_if_busy`` refuses too.
The data partition holds the bundle twice while it is checked and installed (the server's spool,
which has no name to hand RAUC, and the copy): ``[update] max_upload_mb`` bounds both.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from bottle import Bottle, HTTPError, request, response

from ..control import ControlRefused
from ..web.common import API
from ..web.server import LargeBody
from .bundle import BundleRefused
from .install import Installer, InstallFailed, UpdateBusy, UpdateCommands

if TYPE_CHECKING:
    from ..config import UpdateConfig
    from ..control import Control
    from ..web.control import ControlAccess

PATH = f"{API}/update"
CHUNK = 1024 * 1024
UPLOAD_SECONDS = 3600.0  # an admitted upload's deadline: 1 GiB at 0.3 MB/s (a slow Wi-Fi link)
REBOOT_AFTER = 1.0  # seconds between the answer and the try reboot (the answer gets out first)
DISABLED = "updates over the network are off with instrument control"


def limit_bytes(cfg: UpdateConfig) -> int:
    return int(cfg.max_upload_mb * 1024 * 1024)


def large_body(control: Control | None, control_error: str | None, cfg: UpdateConfig) -> dict[str, LargeBody]:
    """The server's rule for this route: the token checked on the request's head, the cap, the spool."""
    from ..web.control import token_problem

    def admit(header: str | None) -> tuple[int, str] | None:
        if control is None:
            return 403, f"{DISABLED}: {token_problem(control_error)}"
        try:
            control.authorize(header)
        except ControlRefused as exc:
            return exc.status, f"{DISABLED} unless authorised: {exc}" if exc.status == 403 else str(exc)
        return None

    return {f"POST {PATH}": LargeBody(limit_bytes(cfg), admit, Path(cfg.state_dir), UPLOAD_SECONDS)}


def install(app: Bottle, *, access: ControlAccess, cfg: UpdateConfig, record: Callable[[str, str], None]) -> None:
    installer = Installer(UpdateCommands.of(cfg), record)
    state_dir, cap = Path(cfg.state_dir), limit_bytes(cfg)
    busy = threading.Lock()  # one update at a time
    rebooting = threading.Event()  # set from the 202 until the try reboot: no second upload in between

    @app.post(PATH)
    def upload():
        try:
            ctl = access.authorize(DISABLED)
        except ControlRefused as exc:
            raise HTTPError(exc.status, str(exc)) from None
        length = request.content_length
        if length <= 0:
            raise HTTPError(400, "send the bundle as the request body (Content-Length > 0)")
        if length > cap:
            raise HTTPError(413, f"request body of {length} bytes is over the limit of {cap} bytes")
        what = f"install an update bundle of {length} bytes"
        if not busy.acquire(blocking=False):
            _refused(ctl, access, what, "another update is being installed")
        try:
            if rebooting.is_set():
                _refused(ctl, access, what, "an update is installed and the appliance is rebooting into it")
            req = ctl.audit.begin("update", access.who(), what, "no update")
            bundle = state_dir / f"upload-{int(time.time())}-{os.getpid()}.raucb"
            try:
                installer.refuse_if_busy()
                _receive(request.environ["wsgi.input"], bundle, length, cap)
                info = installer.check(bundle)
                pending = installer.install(info)
            except BundleRefused as exc:
                ctl.audit.end(req, "refused", exc.reason)
                raise HTTPError(400, f"refused the uploaded bundle: {exc.reason}") from None
            except UpdateBusy as exc:
                ctl.audit.end(req, "refused", str(exc))
                raise HTTPError(409, str(exc)) from None
            except (InstallFailed, OSError) as exc:
                ctl.audit.end(req, "failed", str(exc))
                # its words say what RAUC left: nothing written, or the slot written and no try pending
                raise HTTPError(503, f"the update did not go through: {exc}") from None
            finally:
                with contextlib.suppress(OSError):
                    bundle.unlink()
            ctl.audit.end(req, "applied", f"version {info.version} into slot {pending.to_slot}; rebooting into it once")
            rebooting.set()  # before busy goes: the next upload finds it
        finally:
            busy.release()
        threading.Timer(REBOOT_AFTER, _reboot, (installer, rebooting)).start()
        response.status = 202
        return {
            "installed": {"version": info.version, "from_slot": pending.from_slot, "to_slot": pending.to_slot},
            "rebooting": f"into slot {pending.to_slot} once; it commits when healthy (GET {API}/health: update)",
        }


def _refused(ctl: Control, access: ControlAccess, what: str, why: str) -> NoReturn:
    """A 409 for an upload that came while another is installed or rebooted into: audited too."""
    req = ctl.audit.begin("update", access.who(), what, "no update")
    ctl.audit.end(req, "refused", why)
    raise HTTPError(409, why)


def _receive(stream, path: Path, length: int, cap: int) -> None:  # type: ignore[no-untyped-def]
    """Copy exactly ``length`` bytes of the body into ``path`` (created 0600), streamed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    got = 0
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        while got < length:
            chunk = stream.read(min(CHUNK, length - got))
            if not chunk:
                break
            got += len(chunk)
            if got > cap:
                raise HTTPError(413, f"request body is over the limit of {cap} bytes")
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    if got != length:
        raise HTTPError(400, f"the body ended after {got} of {length} bytes")


def _reboot(installer: Installer, rebooting: threading.Event) -> None:
    """The try reboot. If it cannot be asked for, uploads are taken again (the marker from this boot
    still refuses them until the appliance reboots: ``Installer.refuse_if_busy`` says how)."""
    import logging

    try:
        installer.reboot_into_try()
    except InstallFailed as exc:
        logging.getLogger("kelvinpi.update").error("%s", exc)
        rebooting.clear()


def openapi_paths(ok: Callable[..., dict], errors: Callable[..., dict]) -> dict:
    """The route for /api/v1/openapi.json (``ok``/``errors`` are openapi.py's helpers)."""
    return {
        PATH: {
            "post": {
                "summary": "install a signed RAUC update bundle (the body) into the other slot and reboot into it "
                "once; the health gate commits it or the old slot comes back (needs the control token; "
                "off with control; the body is at most [update] max_upload_mb)",
                "security": [{"controlToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": {
                    "202": {
                        "description": "installed; the appliance reboots into the new slot in a second",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **errors(400, 401, 403, 409, 411, 413, 503),
                },
            }
        }
    }
