"""`kelvinpi check-config` checks what `kelvinpi run` checks (issue 21 items 8 and 9, issue 27 item 4).

The golden cases in tests/config_cases/ hold the messages; these tests hold the parts a golden file
cannot: that `run` refuses what check-config refuses and logs the same secret-file lines, and that
the fields config predicts for named channels are the ones the real poller writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from appliance import config
from appliance.service import Appliance
from tests.conftest import ROOT, appliance_config, free_port, wait_for

CASES = ROOT / "tests" / "config_cases"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_run_refuses_a_rule_on_a_field_that_cannot_exist():
    """The same parse: `run` exits 2 before starting anything, with check-config's lines."""
    case = CASES / "alarm_fields"
    check = _cli("check-config", "kelvinpi.toml", cwd=case)
    run = _cli("run", "--config", "kelvinpi.toml", cwd=case)
    assert check.returncode == 1 and run.returncode == 2
    assert run.stderr == check.stderr
    assert "alarm[0].field: LSA23JD::mxc_temp matches no series; LSA23JD has mxc_t, mxc_r," in run.stderr


@pytest.mark.slow
def test_run_logs_the_secret_problems_check_config_reports(tmp_path):
    """A missing URL file and a 0644 one: check-config fails with two lines; `run` starts, and its log
    holds the same two lines, each saying what starts disabled. Stopped by its own pid."""
    good = tmp_path / "good.url"
    good.write_text("http://127.0.0.1:9/hook\n")
    good.chmod(0o600)
    loose = tmp_path / "loose.url"
    loose.write_text("http://127.0.0.1:9/hook\n")
    loose.chmod(0o644)
    cfg = tmp_path / "kelvinpi.toml"
    cfg.write_text(
        f'[[instrument]]\nmodel = "372"\nname = "LSA23JD"\ntransport = "tcp"\nhost = "127.0.0.1"\n'
        f"port = {free_port()}\ntimeout = 0.5\n"
        f'[store]\npath = "{tmp_path / "kelvinpi.db"}"\n'
        f'[web]\nbind = "127.0.0.1"\nport = 0\n'
        f'[[notify]]\nkind = "webhook"\nname = "ok"\nurl_file = "{good}"\n'
        f'[[notify]]\nkind = "webhook"\nname = "pager"\nurl_file = "{tmp_path / "missing.url"}"\n'
        f'[[notify]]\nkind = "slack"\nname = "chat"\nurl_file = "{loose}"\n'
    )
    check = _cli("check-config", str(cfg), cwd=tmp_path)
    assert check.returncode == 1
    lines = check.stderr.splitlines()
    assert lines == [
        f"{cfg}:20: notify[pager].url_file: cannot read secret file {tmp_path / 'missing.url'}: "
        "No such file or directory",
        f"{cfg}:24: notify[chat].url_file: secret file {loose} is readable by others (mode 0644); "
        f"run: chmod 600 {loose}",
    ]
    assert _cli("check-config", "--no-secrets", str(cfg), cwd=tmp_path).returncode == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("notify target chat not started" in line for line in log), 30, what="targets built")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    text = "".join(log)
    assert f"{lines[0]}: notify target 'pager' starts disabled" in text
    assert f"{lines[1]}: notify target 'chat' starts disabled" in text
    assert "notify target ok not started" not in text and "notify[ok]" not in text
    assert "http://127.0.0.1:9/hook" not in text  # a URL is a secret: never logged


def test_read_secret_names_the_key_whatever_the_failure(tmp_path):
    """A directory or a non-UTF-8 file in place of a secret: a PermissionError naming the key (as the
    start-up code catches), not an IsADirectoryError or UnicodeDecodeError that ends start-up."""
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    with pytest.raises(PermissionError, match=r"^notify\[x\]\.url_file: secret file .*dir is not a regular file"):
        config.read_secret(d, "notify[x].url_file")
    b = tmp_path / "bin"
    b.write_bytes(b"\xff\xfe\x00")
    b.chmod(0o600)
    with pytest.raises(PermissionError, match=r"^control\.token_file: secret file .* is not UTF-8 text"):
        config.read_secret(b, "control.token_file")


def test_strict_types_keep_what_toml_writes_as_such():
    """Strictness refuses strings for numbers, not what TOML writes natively: an integer where a float
    is wanted, and every path key as a string."""
    cfg = config.parse(
        '[[instrument]]\nmodel = "372"\nname = "X"\ntransport = "tcp"\nhost = "h"\ntimeout = 2\ninterval = 1\n'
        '[store]\npath = "x.db"\nmax_size_mb = 100\n[web]\nport = 8080\nstale_after = 30\n'
        '[control]\nenabled = true\ntoken_file = "/etc/kelvinpi/token"\nmax_setpoint_kelvin = 1\n'
    )
    assert cfg.instrument[0].timeout == 2.0 and isinstance(cfg.instrument[0].timeout, float)
    assert cfg.store.path == Path("x.db") and cfg.control.token_file == Path("/etc/kelvinpi/token")
    assert cfg.web.port == 8080


NAMED = """
[[instrument.channel]]
number = "A"
name = "Control"
keep = ["sensor"]
[[instrument.channel]]
number = 1
name = "4K Plate"
[[instrument.channel]]
number = 2
name = "Still"
keep = ["kelvin"]
[[instrument.channel]]
number = 3
name = "Cold plate"
enabled = false
"""

NAMED_240 = """
[[instrument.channel]]
number = 1
name = "50K stage"
[[instrument.channel]]
number = 2
name = "Magnet"
keep = ["sensor"]
"""


def test_configured_fields_are_what_the_poller_writes(tmp_path, emu372, emu240):
    """The fields config predicts for named channels (and so accepts in rules) are exactly those
    the real pollers plan against the emulators, the 372's heater included."""
    text = appliance_config(tmp_path, emu372, emu240)
    head, sep, rest = text.partition('[[instrument]]\nmodel = "240"')
    polling = rest.index("[polling]")
    text = head + NAMED + "\n" + sep + rest[:polling] + NAMED_240 + "\n" + rest[polling:]
    raw = tomllib.loads(text)
    predicted = {i["name"]: config.configured_fields(i) for i in raw["instrument"]}
    assert predicted == {
        "LSA23JD": {"control_r", "4k_plate_t", "4k_plate_r", "still_t", "sample_heater"},
        "LSA24AZ": {"50k_stage_t", "50k_stage_r", "magnet_r"},
    }
    app = Appliance(config.parse(text))
    app.start()
    try:
        wait_for(lambda: all(p.health.connected for p in app.pollers), 30, what="both connected")
        for p in app.pollers:
            planned = {k.field for plan in p.plans.values() for k in (plan.kelvin, plan.sensor) if k}
            heater = getattr(p.acquisition, "heater_key", None)
            if heater is not None:
                planned.add(heater.field)
            assert planned == predicted[p.cfg.name], p.cfg.name
    finally:
        app.stop()
    assert config.configured_fields(raw["instrument"][0] | {"channel": raw["instrument"][0]["channel"][1:]}) is None


def _notify_cfg(tmp_path, body: str) -> config.Config:
    return config.parse(f'[[instrument]]\nmodel = "372"\nname = "N"\ntransport = "tcp"\nhost = "127.0.0.1"\n{body}')


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999/hook", "http:///hook", "http://127.0.0.1/a b"],
    ids=["port-99999", "no-host", "space"],
)
def test_check_config_refuses_the_url_files_run_refuses_with_the_same_words(tmp_path, url):
    """Red-team (issue 21): check-config said ok to URL files that `run` then refused (it only looked at
    the scheme). The same parse now: check-config's message is the sender's, and neither quotes the URL."""
    from appliance.notify import sender_for

    f = tmp_path / "url"
    f.write_text(url + "\n")
    f.chmod(0o600)
    cfg = _notify_cfg(tmp_path, f'[[notify]]\nkind = "webhook"\nname = "hook"\nurl_file = "{f}"\n')
    problems = [p.message for p in config.file_problems(cfg)]
    with pytest.raises(PermissionError) as refused:
        sender_for(cfg.notify[0])
    assert problems == [str(refused.value)], problems
    assert "127.0.0.1" not in problems[0]


def _bounded(fn, seconds: float = 5.0):
    """Run ``fn`` in a thread; its result or exception, or a failure if it blocks past ``seconds``."""
    out: dict = {}

    def call():
        try:
            out["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - what it raised is the result
            out["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"blocked for more than {seconds} s"
    return out


def test_a_fifo_as_a_secret_file_is_refused_without_blocking(tmp_path):
    """A 0600 FIFO as url_file: check-config and `kelvinpi run` both hung in read() waiting for a writer.
    (The reading threads of the old code are left blocked: daemon threads, released below.)"""
    fifo = tmp_path / "url"
    os.mkfifo(fifo, 0o600)
    cfg = _notify_cfg(tmp_path, f'[[notify]]\nkind = "webhook"\nname = "hook"\nurl_file = "{fifo}"\n')
    try:
        got = _bounded(lambda: [p.message for p in config.file_problems(cfg)])
        assert got.get("value") == [f"notify[hook].url_file: secret file {fifo} is not a regular file"], got
        got = _bounded(lambda: config.read_secret(fifo, "notify[hook].url_file"))
        assert isinstance(got.get("error"), PermissionError) and "not a regular file" in str(got["error"]), got
    finally:  # release any reader left blocked (before the fix): open for writing, without blocking here
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_an_email_ca_file_that_is_not_pem_is_refused(tmp_path):
    """check-config said ok to a ca_file holding no certificate; every mail then failed at STARTTLS."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a pem\n")
    cfg = _notify_cfg(
        tmp_path,
        f'[[notify]]\nkind = "email"\nname = "mail"\nhost = "127.0.0.1"\nsender = "a@b.c"\nto = ["x@y.z"]\n'
        f'ca_file = "{ca}"\n',
    )
    problems = [p.message for p in config.file_problems(cfg)]
    assert len(problems) == 1 and problems[0].startswith(f"notify[mail].ca_file: CA file {ca} holds no certificate")
