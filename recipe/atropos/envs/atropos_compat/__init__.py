"""Fixes for atroposlib 0.4.0 in environment processes, so Atropos's environments run unmodified.

Atropos is archived and atroposlib 0.4.0 is final: its helpers were written for transformers 4
and will not change. Applied by `python -m recipe.atropos.envs.run_env` (what the launcher starts for
every environment); `apply()` refuses, loudly, on another atroposlib version.
- `chat_template`: `apply_chat_template(..., tokenize=True)` returns token ids again (transformers 5
  returns a BatchEncoding), so `tokenize_for_trainer` and environments counting or posting
  those ids work.
- `server_configs`: one `APIServerConfig` from `config_init` is a one-server list, so
  `--openai.base_url` applies (atroposlib otherwise calls localhost:9004-9007).
- `trl_credentials`: `--openai.server_type trl` sends `--openai.api_key` as a Bearer header and
  fails on an error answer (its client sent no credentials and read error bodies as completions).
- `single_retry`: a failing chat completion is tried 3 times, not 9 (atroposlib PR #487, unmerged).
- `grpo_std`: GRPO's std of constant float rewards is 0, not complex (atroposlib PR #481, unmerged).
- `combined_reward_weights`: `CombinedReward` applies its sub-rewards' weights (PR #485, unmerged).
- `tool_call_quotes`: a tool call with an apostrophe in its JSON parses (PRs #479/#536, unmerged).
- `trajectory_truncation`: multi-step truncation keeps each alternative's last observation and answer
  (PR #483, unmerged).
- `reward_registry`: a reward loaded by name is the class registered under it (PR #482, unmerged).
- `evicted_item`: a rollout whose item was evicted returns instead of raising (PR #538, unmerged).
"""

from __future__ import annotations

import importlib.metadata
import logging

from recipe.atropos.envs.atropos_compat import (
    chat_template,
    combined_reward_weights,
    evicted_item,
    grpo_std,
    reward_registry,
    server_configs,
    single_retry,
    tool_call_quotes,
    trajectory_truncation,
    trl_credentials,
)

logger = logging.getLogger(__name__)

REQUIRED_ATROPOSLIB = "0.4.0"


def check_atroposlib_version(installed: str | None = None) -> None:
    """Raise ImportError (logged at ERROR) unless atroposlib is the version these fixes are for."""
    installed = installed or importlib.metadata.version("atroposlib")
    if installed != REQUIRED_ATROPOSLIB:
        message = (f"recipe.atropos.envs.atropos_compat: installed atroposlib {installed}, but its fixes are written for "
                   f"atroposlib {REQUIRED_ATROPOSLIB} (the final release). Install atroposlib=={REQUIRED_ATROPOSLIB}; "
                   "the fixes are NOT applied.")
        logger.error(message)
        raise ImportError(message)


def apply() -> dict[str, bool]:
    """Install every fix (idempotent); which ones are active."""
    check_atroposlib_version()
    return {"chat_template": chat_template.install(), "server_configs": server_configs.install(),
            "trl_credentials": trl_credentials.install(), "single_retry": single_retry.install(),
            "grpo_std": grpo_std.install(), "combined_reward_weights": combined_reward_weights.install(),
            "tool_call_quotes": tool_call_quotes.install(), "trajectory_truncation": trajectory_truncation.install(),
            "reward_registry": reward_registry.install(), "evicted_item": evicted_item.install()}
