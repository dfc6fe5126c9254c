"""Routes verl's GRPO advantage computation through AtroposGRPOComputer for Atropos batches.

verl's legacy `RayPPOTrainer.fit` calls the module-level `ray_trainer.compute_advantage`, whose
GRPO branch passes only rewards, mask and uid to `core_algos`: the per-row override fields never
reach the estimator. So the wrapper sits on `compute_advantage` itself: batches carrying the
override fields (made by `scored_data_to_dataproto`) go to AtroposGRPOComputer, every other call
goes to verl's original function unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
from types import ModuleType

from verl_patches.post_import import when_imported

logger = logging.getLogger(__name__)

TARGET_MODULE = "verl.trainer.ppo.ray_trainer"
_PATCH_MARK = "__atropos_patched__"


def _is_grpo(adv_estimator: object) -> bool:
    return str(getattr(adv_estimator, "value", adv_estimator)) == "grpo"


def make_patched_compute_advantage(original):  # noqa: ANN001, ANN201
    """Wrap verl's `compute_advantage` (same signature) with the Atropos GRPO rule."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def compute_advantage(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        from recipe.atropos.atropos_core_algos import META_USE_ADVANTAGES, AtroposGRPOComputer, carries_atropos_fields

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        data = bound.arguments["data"]
        if not (_is_grpo(bound.arguments["adv_estimator"]) and carries_atropos_fields(data)):
            return original(*args, **kwargs)
        computer = AtroposGRPOComputer(
            norm_adv_by_std_in_grpo=bound.arguments["norm_adv_by_std_in_grpo"],
            use_advantages=bool(data.meta_info.get(META_USE_ADVANTAGES, True)),
        )
        return computer.compute(data)

    setattr(compute_advantage, _PATCH_MARK, True)
    compute_advantage.__wrapped_original__ = original
    return compute_advantage


def _patch(module: ModuleType) -> None:
    current = module.compute_advantage
    if getattr(current, _PATCH_MARK, False):
        return
    module.compute_advantage = make_patched_compute_advantage(current)
    logger.info("verl_patches: %s.compute_advantage routes Atropos batches to AtroposGRPOComputer", TARGET_MODULE)


def install() -> None:
    """Patch now if verl's trainer module is loaded, else right after it is first imported."""
    when_imported(TARGET_MODULE, _patch)


def is_active() -> bool:
    import sys

    module = sys.modules.get(TARGET_MODULE)
    return module is not None and getattr(module.compute_advantage, _PATCH_MARK, False)
