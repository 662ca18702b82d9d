"""[instrument.share] is validated like every table: an error names the key and the bad input."""

from __future__ import annotations

import pytest

from appliance import config

BASE = """
[[instrument]]
model = "372"
name = "LSA23JD"
transport = "tcp"
host = "127.0.0.1"
[instrument.share]
enabled = true
{share}
"""


def test_share_is_off_by_default_and_reads_only():
    cfg = config.parse(BASE.replace("enabled = true", "").format(share=""))
    share = cfg.instrument[0].share
    assert (share.enabled, share.policy, share.max_clients, share.max_queued) == (False, "read", 4, 16)
    # a place of a 4-client share is not held for an hour by a client that went away without closing
    assert (share.idle_timeout, share.max_wait) == (300.0, 1.5)
    cfg = config.parse(BASE.format(share="idle_timeout = 30\nmax_wait = 4"))
    assert (cfg.instrument[0].share.idle_timeout, cfg.instrument[0].share.max_wait) == (30.0, 4.0)


@pytest.mark.parametrize(
    "share, words",
    [
        ('policy = "allow"', 'policy "allow" needs allow_commands and allow_clients'),
        ('policy = "allow"\nallow_commands = ["SCAN"]\nallow_clients = ["10.0.0.300"]', "'10.0.0.300' is not an IP"),
        ('policy = "allow"\nallow_commands = ["SCAN?"]\nallow_clients = ["10.0.0.3"]', "'SCAN?' is not a setting"),
        ('policy = "write"', "'read', 'allow' or 'full' (got 'write')"),
        ("port = 8080", "web server's"),
        ("max_clients = 0", "max_clients"),
        ("idle_timeout = 0", "idle_timeout"),
        ("max_wait = 100", "max_wait"),
    ],
)
def test_bad_share_settings_are_named(share, words):
    with pytest.raises(config.ConfigError) as err:
        config.parse(BASE.format(share=share))
    text = err.value.render()
    assert words in text and "share" in text, text


def test_two_instruments_cannot_share_one_port():
    text = BASE.format(share="port = 7000") + BASE.replace("LSA23JD", "LSB").format(share="port = 7000")
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert "port 7000 already shared by instrument[0]" in err.value.render()


def test_a_share_on_a_model_without_a_lake_shore_dialect_is_refused():
    text = BASE.replace('model = "372"', 'model = "tpg366"').replace(
        'host = "127.0.0.1"', 'host = "127.0.0.1"\nport = 8000'
    )
    with pytest.raises(config.ConfigError) as err:
        config.parse(text.format(share=""))
    assert "model 'tpg366' has no share" in err.value.render()
