"""Typed view of trainer.atropos_inference; defaults come from config/atropos_inference.yaml."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recipe.atropos.policy_server.routes import RequestLimits
from recipe.atropos.structured_config import load_section

DEFAULTS_FILE = Path(__file__).parents[1] / "config" / "atropos_inference.yaml"


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    enable: bool
    host: str
    advertise_host: str | None
    port: int
    endpoint_file: str | None
    model_name: str
    weight_sync: bool
    drain_timeout: float
    request_wait_timeout: float
    hold_during_validation: bool
    admission_control: bool
    admission_starved_grace_s: float
    admission_shares: dict[str, float] | None
    sync_check_tokens: int
    sync_check_max_gap: float | None
    max_n: int | None
    max_tokens: int | None
    max_body_mb: float

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any] | DictConfig | None = None) -> InferenceConfig:
        """Defaults from the YAML, then `overrides`; unknown keys and bad values raise ValueError."""
        config = load_section(cls, DEFAULTS_FILE, overrides, "trainer.atropos_inference")
        if not 0 <= config.port < 65536:
            raise ValueError(f"trainer.atropos_inference.port must be in [0, 65535], got {config.port}")
        for name in ("drain_timeout", "request_wait_timeout", "admission_starved_grace_s"):
            if getattr(config, name) <= 0:
                raise ValueError(f"trainer.atropos_inference.{name} must be > 0, got {getattr(config, name)}")
        for name in ("max_n", "max_tokens"):
            if getattr(config, name) is not None and getattr(config, name) < 1:
                raise ValueError(f"trainer.atropos_inference.{name} must be >= 1 or null, got {getattr(config, name)}")
        if config.admission_shares is not None and (
                not config.admission_shares or any(not share > 0 for share in config.admission_shares.values())):
            raise ValueError("trainer.atropos_inference.admission_shares must give every environment a share > 0, got "
                             f"{config.admission_shares}")
        if config.max_body_mb <= 0:
            raise ValueError(f"trainer.atropos_inference.max_body_mb must be > 0, got {config.max_body_mb}")
        if config.sync_check_tokens < 0:
            raise ValueError(f"trainer.atropos_inference.sync_check_tokens must be >= 0 (0: off), got {config.sync_check_tokens}")
        if config.sync_check_max_gap is not None and config.sync_check_max_gap <= 0:
            raise ValueError(f"trainer.atropos_inference.sync_check_max_gap must be > 0 or null, got {config.sync_check_max_gap}")
        if config.sync_check_tokens and not config.enable:
            raise ValueError("trainer.atropos_inference.sync_check_tokens checks what the policy server serves: it needs "
                             "trainer.atropos_inference.enable=true")
        if config.sync_check_max_gap is not None and not config.sync_check_tokens:
            raise ValueError("trainer.atropos_inference.sync_check_max_gap is set but the check is off: "
                             "set trainer.atropos_inference.sync_check_tokens > 0")
        return config

    def request_limits(self, rollout_n: int, max_response_length: int, allow_response_truncation: bool,
                       backend: str = "", not_applied: tuple[str, ...] = ()) -> RequestLimits:
        """The caps of one request: the settings, or what the run trains on (`rollout_n` completions per
        prompt, `max_response_length` tokens; no token cap when longer responses are cut, not dropped);
        `not_applied`: sampling keys the `backend` rollout ignores, refused unless neutral."""
        max_tokens = self.max_tokens
        if max_tokens is None and not allow_response_truncation:
            max_tokens = max_response_length
        return RequestLimits(max_n=self.max_n if self.max_n is not None else rollout_n, max_tokens=max_tokens,
                             not_applied=not_applied, backend=backend)

    def endpoint_path(self, default_local_dir: str) -> str:
        return self.endpoint_file or os.path.join(default_local_dir, "inference_endpoint.json")
