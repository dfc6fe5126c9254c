"""Runtime patches of verl for the Atropos recipe.

Loaded in the driver and in every Ray worker on `import verl`, through the `verl.plugins` entry
point this project installs (or `VERL_USE_EXTERNAL_MODULES=verl_patches`). verl swallows plugin
exceptions at debug level, so a refusal is also logged at ERROR here, and `patches_applied()`
lets the trainer check that the patches really are in place.
"""

from __future__ import annotations

import logging

from verl_patches.version_check import check_verl_version

logger = logging.getLogger(__name__)

check_verl_version()

from verl_patches import advantage_patch, cpu_mode, trainer_cls_patch  # noqa: E402

advantage_patch.install()
trainer_cls_patch.install()
_cpu_mode = cpu_mode.apply()


def patches_applied() -> dict[str, bool]:
    """Which patches are active in this process."""
    return {
        "grpo_advantage_overrides": advantage_patch.is_active(),
        "trainer_cls": trainer_cls_patch.is_active(),
        "cpu_mode": _cpu_mode,
    }
