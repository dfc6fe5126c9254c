"""Client settings: one source of defaults (the YAML), clear errors for bad keys and values."""

import pytest
from omegaconf import OmegaConf

from recipe.atropos.data.client_config import AtroposClientConfig


def test_the_defaults_keep_the_recipes_promises():
    """What the defaults promise users: a popped batch is waited for at least 120 s whatever the poll
    budget, a cut prompt drops its group, the group buffer is bounded, fallback and prefetch are on."""
    config = AtroposClientConfig.from_mapping()
    assert config.batch_read_timeout >= 120.0
    assert config.allow_prompt_truncation is False
    assert config.max_buffer_age_steps is not None and config.max_buffered_groups is not None
    assert config.fallback_to_grpo is True and config.prefetch == "sync"


def test_overrides_merge_onto_defaults():
    config = AtroposClientConfig.from_mapping(OmegaConf.create({"api_url": "http://127.0.0.1:9", "timeout": 2.5}))
    assert (config.api_url, config.timeout, config.retry_attempts) == ("http://127.0.0.1:9", 2.5, 5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_urll": "http://x"}, "unknown keys \\['api_urll'\\]"),
        ({"api_url": "localhost:8000"}, "api_url must start with http"),
        ({"retry_attempts": 0}, "retry_attempts must be >= 1"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"batch_read_timeout": -1}, "batch_read_timeout must be > 0"),
        ({"max_buffer_age_steps": 0}, "max_buffer_age_steps must be >= 1 or null"),
        ({"poll_interval": 3.0, "max_poll_interval": 1.0}, "max_poll_interval must be >= poll_interval"),
    ],
)
def test_bad_settings_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        AtroposClientConfig.from_mapping(overrides)


@pytest.mark.parametrize(("value", "mode"), [("sync", "sync"), ("step", "step"), ("off", "off"), (True, "sync"), (False, "off")])
def test_prefetch_modes_and_booleans(value, mode):
    assert AtroposClientConfig.from_mapping({"prefetch": value}).prefetch == mode


def test_unknown_prefetch_mode_is_named():
    with pytest.raises(ValueError, match="trainer.atropos.prefetch must be one of"):
        AtroposClientConfig.from_mapping({"prefetch": "later"})
