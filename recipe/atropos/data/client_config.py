"""Typed Atropos client settings (trainer.atropos); defaults come from config/atropos_client.yaml."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recipe.atropos.structured_config import load_section

DEFAULTS_FILE = Path(__file__).parents[1] / "config" / "atropos_client.yaml"
PREFETCH_MODES = ("sync", "step", "off")


@dataclasses.dataclass(frozen=True)
class AtroposClientConfig:
    api_url: str
    require_token: bool
    use_advantages: bool
    distill_loss_coef: float
    sft_loss_coef: float
    use_env_ref_logprobs: bool
    env_ref_logprobs_only: bool
    sample_groups_per_step: int
    fallback_to_grpo: bool
    fallback_before_api_reached: bool
    retry_attempts: int
    retry_delay: float
    timeout: float
    batch_read_timeout: float
    max_wait_time: float
    poll_interval: float
    max_poll_interval: float
    max_unusable_batches: int
    max_policy_lag: int | None
    drop_unknown_version_groups: bool
    env_names_file: str | None
    gzip_batches: bool
    prefetch: str  # "sync", "step" or "off" (true/false read as "sync"/"off")
    allow_prompt_truncation: bool
    allow_response_truncation: bool
    max_buffer_age_steps: int | None
    max_buffered_groups: int | None

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any] | DictConfig | None = None) -> AtroposClientConfig:
        """Defaults from the YAML, then `overrides`; unknown keys and bad values raise ValueError."""
        if isinstance(overrides, DictConfig):
            overrides = OmegaConf.to_container(overrides, resolve=True)
        if overrides is not None and isinstance(overrides.get("prefetch"), bool):
            overrides = {**overrides, "prefetch": "sync" if overrides["prefetch"] else "off"}
        config = load_section(cls, DEFAULTS_FILE, overrides, "trainer.atropos")
        config.validate()
        return config

    def validate(self) -> None:
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"trainer.atropos.api_url must start with http:// or https://, got {self.api_url!r}")
        if self.retry_attempts < 1:
            raise ValueError(f"trainer.atropos.retry_attempts must be >= 1, got {self.retry_attempts}")
        for name in ("retry_delay", "timeout", "batch_read_timeout", "max_wait_time", "poll_interval", "max_poll_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"trainer.atropos.{name} must be > 0, got {getattr(self, name)}")
        for name in ("distill_loss_coef", "sft_loss_coef"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise ValueError(f"trainer.atropos.{name} must be a number >= 0 (0: the field is ignored), "
                                 f"got {getattr(self, name)}")
        if self.sample_groups_per_step < 0:
            raise ValueError(f"trainer.atropos.sample_groups_per_step must be >= 0 (0: no samples), "
                             f"got {self.sample_groups_per_step}")
        if self.max_unusable_batches < 1:
            raise ValueError(f"trainer.atropos.max_unusable_batches must be >= 1, got {self.max_unusable_batches}")
        if self.max_policy_lag is not None and self.max_policy_lag < 0:
            raise ValueError(f"trainer.atropos.max_policy_lag must be >= 0 or null, got {self.max_policy_lag}")
        if self.drop_unknown_version_groups and self.max_policy_lag is None:
            raise ValueError("trainer.atropos.drop_unknown_version_groups=true needs trainer.atropos.max_policy_lag "
                             "(it drops groups whose lag cannot be known); set max_policy_lag or turn it off")
        for name in ("max_buffer_age_steps", "max_buffered_groups"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"trainer.atropos.{name} must be >= 1 or null, got {getattr(self, name)}")
        if self.prefetch not in PREFETCH_MODES:
            raise ValueError(f"trainer.atropos.prefetch must be one of {PREFETCH_MODES} (or true/false), got {self.prefetch!r}")
        if self.max_poll_interval < self.poll_interval:
            raise ValueError("trainer.atropos.max_poll_interval must be >= poll_interval")
