"""Config validation: golden cases in Telegraf's manner (tests/config_cases/<case>/{kelvinpi.toml,expected.err})."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import config

CASES = sorted(p for p in (Path(__file__).parent / "config_cases").iterdir() if p.is_dir())
ROOT = Path(__file__).resolve().parent.parent


def _prepare(case: Path) -> list[str]:
    """A case's extra command-line arguments (its ``args`` file) after setting the modes its ``modes``
    file lists (``<file> <octal mode>`` a line: git keeps no permissions but the executable bit)."""
    modes = case / "modes"
    for line in modes.read_text().splitlines() if modes.exists() else []:
        name, mode = line.split()
        os.chmod(case / name, int(mode, 8))
    args = case / "args"
    return args.read_text().split() if args.exists() else []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case):
    """`kelvinpi check-config` output equals the golden file; exit 0 only when it is empty."""
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "check-config", "kelvinpi.toml", *_prepare(case)],
        cwd=case,
        capture_output=True,
        text=True,
        timeout=60,
    )
    expected = (case / "expected.err").read_text()
    assert proc.stderr == expected
    assert (proc.returncode == 0) == (expected == "")


def test_every_error_has_a_line():
    for case in CASES:
        for line in (case / "expected.err").read_text().splitlines():
            assert line.startswith("kelvinpi.toml:") and line.split(":")[1].isdigit(), line


def test_sample_and_demo_configs_validate(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "sample-config"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "[[instrument]]" in out
    cfg = config.parse(out, "sample")
    assert [i.model for i in cfg.instrument] == ["372", "240", "336", "cpa", "bluefors-logs", "370"]
    assert cfg.instrument[3].port == 502  # the CPA's Modbus port when none is given
    demo = config.load(ROOT / "appliance" / "demo.toml")
    assert demo.web.bind == "127.0.0.1"


def test_defaults_are_safe():
    cfg = config.parse('[[instrument]]\nmodel="372"\nname="X"\ntransport="tcp"\nhost="h"\n')
    assert cfg.control.enabled is False and cfg.uplink == []


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(config.ConfigError, match="UTF-8"):
        config.load(bad)


def test_secret_file_permissions(tmp_path):
    f = tmp_path / "secret"
    f.write_text("s3cret\n")
    os.chmod(f, 0o644)
    with pytest.raises(PermissionError, match="readable by others.*chmod 600"):
        config.read_secret(f, "uplink[0]")
    os.chmod(f, 0o600)
    assert config.read_secret(f, "uplink[0]") == "s3cret"
    os.chmod(f, stat.S_IRUSR)
    assert config.read_secret(f, "x") == "s3cret"


# -- the configuration declared once: reference and sample generated from the models ---------------
def test_every_key_and_table_has_a_description():
    """A key without a description would be a hole in docs/config.md and in the sample."""
    from appliance import config_doc

    assert config_doc.missing_descriptions() == []


def test_a_missing_description_is_found():
    """The check above can fail: a model with an undescribed key (and no docstring) is caught."""
    from pydantic import BaseModel, Field

    from appliance import config_doc

    class Inner(config.Strict):
        """Described."""

        a: int = Field(1, description="described")
        b: int = 2

    class Outer(config.Strict):
        inner: Inner = Field(Inner(), description="described")

    holes = config_doc.missing_descriptions(Outer)
    assert any("Outer has no docstring" in h for h in holes)
    assert any(h.endswith("b: no description") for h in holes) and not any(" a: " in h for h in holes)
    assert issubclass(Outer, BaseModel)


def test_committed_reference_is_up_to_date():
    """docs/config.md is what `make config-doc` writes now: regenerate it after changing a key."""
    from appliance import config_doc

    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == config_doc.reference(), "docs/config.md is stale: run `make config-doc`"
    for s in config_doc.sections():
        for name, _ in config_doc.scalar_fields(s):
            assert f"| `{name}` |" in committed, (s.header, name)


def _sample() -> str:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "sample-config"], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def test_sample_holds_every_key():
    """Every key of every table appears in `kelvinpi sample-config`, set or as a commented default."""
    from appliance import config_doc

    text = _sample()
    assert text == config_doc.sample()
    keys = {line.lstrip("# ").split(" = ")[0] for line in text.splitlines() if " = " in line and "##" not in line}
    for s in config_doc.sections():
        for name, info in config_doc.scalar_fields(s):
            assert name in keys, (s.header, name)
            if not info.is_required() and info.default not in (None, ""):
                assert f"# {name} = {config_doc._toml(info.default)}" in text or f"{name} = " in text, name


def test_sample_with_everything_uncommented_validates(tmp_path):
    """The commented defaults and examples are valid values: uncomment every key and every uplink
    (InfluxDB 1.x only: 2.x's bucket/org/token_file exclude database; remote write with basic auth,
    not a token too) and the file still validates."""
    out, block = [], ""
    for line in _sample().splitlines():
        if line.startswith("# [[") or line.startswith("["):
            block = line.lstrip("# ")
        if line.startswith("# kind = "):
            block = line
        key = line[2:].split(" = ")[0] if line.startswith("# ") and " = " in line else None
        if (
            key
            and not ("influxdb" in block and key in ("bucket", "org", "token_file"))
            and not ("remote_write" in block and key == "token_file")
            and not ("instrument" in block and key in config.FOLDER_KEYS)  # bluefors-logs' keys: not on a 372
        ):  # basic auth or a token, not both
            line = line[2:]
        elif line.startswith("# [["):
            line = line[2:]
        out.append(line)
    text = "\n".join(out) + "\n"
    cfg = config.parse(text, "uncommented")
    assert [u.kind for u in cfg.uplink] == ["sisock", "ocs", "influxdb", "remote_write"]
    assert cfg.instrument[0].serial_number == "LSA23JD" and cfg.control.token_file is not None
    assert cfg.uplink[2].database == "kelvinpi" and cfg.uplink[2].bucket is None


def test_suggestions_for_unknown_names_are_bounded(monkeypatch):
    """200 instruments and 300 alarms each naming an unknown instrument: the "did you mean" ranking is
    done for a few of them, not for every alarm against every name (60 000 difflib comparisons, 21 s of
    CPU for this 44 KB file; 219 KB took about 9 minutes on first boot). Counted, not timed."""
    import difflib

    compared = 0
    original = difflib.SequenceMatcher.set_seq1

    def counting(self, a):
        nonlocal compared
        compared += 1
        return original(self, a)

    monkeypatch.setattr(difflib.SequenceMatcher, "set_seq1", counting)
    text = "".join(f'[[instrument]]\nname="{f"n{i:05d}".ljust(64, "q")}"\n' for i in range(200))
    text += "".join(f'[[alarm]]\ninstrument="{f"z{j:05d}".ljust(64, "q")}"\n' for j in range(300))
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "k.toml")
    unknown = [p for p in e.value.problems if "no instrument named" in p[2]]
    assert len(unknown) == 300  # each still reported, with its line and some names
    assert all("(instruments: n00" in p[2] and "(200 in all)" in p[2] for p in unknown), unknown[-1]
    assert compared < 3000, f"{compared} difflib comparisons (was 60 000)"


@pytest.mark.parametrize("section", ["alarm", "instrument"])
def test_a_name_ending_in_a_newline_is_refused(section):
    """Red-team (issue 21): ``re.match`` with ``$`` let "mxc-warm\\n" through as a rule name (an
    instrument's name likewise): a label in metrics and the panel with a newline in it."""
    node = "N\\n" if section == "instrument" else "N"
    text = f'[[instrument]]\nmodel = "372"\nname = "{node}"\ntransport = "tcp"\nhost = "h"\n'
    if section == "alarm":
        text += '[[alarm]]\nkind = "above"\nname = "mxc-warm\\n"\nfield = "N::mxc_t"\nthreshold = 0.05\n'
    with pytest.raises(config.ConfigError) as e:
        config.parse(text)
    assert f"{section}[0].name" in str(e.value), str(e.value)


def test_a_new_kinds_keys_document_themselves_with_field_examples():
    """A key without a default shows the example declared beside it (Field(examples=[...])), so a new
    kind's model needs no entry in config_doc.EXAMPLES; with neither, generation still refuses it."""
    from typing import Literal

    from pydantic import Field

    from appliance import config_doc
    from appliance.config import UplinkModel

    class CarrierPigeonUplink(UplinkModel):
        kind: Literal["pigeon"] = Field(description='"pigeon"')
        loft: str = Field(description="where the birds fly to", examples=["roof-2"])

    section = config_doc.Section("uplink", CarrierPigeonUplink, True, "pigeon")
    lines = config_doc._key_lines(section, {"kind": "pigeon"}, full=True, live=False)
    assert '# loft = "roof-2"' in lines

    class Undocumented(UplinkModel):
        kind: Literal["x"] = Field(description='"x"')
        loft: str = Field(description="no example")

    with pytest.raises(ValueError, match=r"loft: no default and no example"):
        config_doc._key_lines(config_doc.Section("uplink", Undocumented, True, "x"), {"kind": "x"}, full=True)
