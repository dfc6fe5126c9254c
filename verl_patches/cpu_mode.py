"""verl on CPU, only when asked for with `VERL_PLATFORM=cpu` (in the driver and every Ray worker).

- the `cpu` platform (verl_patches.cpu_platform);
- `initialize_global_process_group_ray` defaults to plain gloo (verl's default would name the
  cpu device twice: "cpu:gloo,cpu:gloo");
- the FSDP engine registry is keyed by (device, vendor) and has no CPU entry: look up the CUDA
  one (`VERL_ENGINE_DEVICE=cuda`, `VERL_ENGINE_VENDOR=nvidia`); its code runs on CPU tensors.
"""

from __future__ import annotations

import functools
import logging
import os
from types import ModuleType

from verl_patches.post_import import when_imported

logger = logging.getLogger(__name__)

DISTRIBUTED_MODULE = "verl.utils.distributed"


def requested() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu"


def _default_gloo(module: ModuleType) -> None:
    original = module.initialize_global_process_group_ray
    if getattr(original, "__atropos_cpu__", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):  # noqa: ANN001, ANN202
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_global_process_group_ray.__atropos_cpu__ = True
    module.initialize_global_process_group_ray = initialize_global_process_group_ray


def apply() -> bool:
    """Apply the CPU patches when VERL_PLATFORM=cpu; returns whether they were applied."""
    if not requested():
        return False
    from verl_patches import cpu_platform

    cpu_platform.register()
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    os.environ.setdefault("VERL_ENGINE_VENDOR", "nvidia")
    when_imported(DISTRIBUTED_MODULE, _default_gloo)
    logger.info("verl_patches: CPU mode (VERL_PLATFORM=cpu)")
    return True
