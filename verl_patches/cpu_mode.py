"""verl on CPU, only when asked for with `VERL_PLATFORM=cpu` (in the driver and every Ray worker).

- the `cpu` platform (verl_patches.cpu_platform);
- `initialize_global_process_group_ray` defaults to plain gloo (verl's default would name the
  cpu device twice: "cpu:gloo,cpu:gloo");
- the `hf_cpu` rollout backend (verl_patches.hf_cpu_rollout), `actor_rollout_ref.rollout.name=hf_cpu`;
- `get_device_id()` returns the CPU device: verl passes it to `.to(...)`, where the int 0 it
  returns elsewhere means "accelerator 0"; modules already imported hold their own binding;
- FSDP2's CPU offload policy (verl gives it to the reference model) pins memory, which needs an
  accelerator; on CPU there is nothing to offload to, so the engine gets no offload policy;
- the FSDP engine registry is keyed by (device, vendor) and has no CPU entry: look up the CUDA
  one (`VERL_ENGINE_DEVICE=cuda`, `VERL_ENGINE_VENDOR=nvidia`); its code runs on CPU tensors;
- verl's vLLM rollout on vLLM's CPU build, where one is installed (verl_patches.vllm_cpu).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from types import ModuleType

import torch

from verl_patches.post_import import when_imported

logger = logging.getLogger(__name__)

DISTRIBUTED_MODULE = "verl.utils.distributed"
FSDP_ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"
REPLICA_MODULE = "verl.workers.rollout.replica"
ROLLOUT_BASE_MODULE = "verl.workers.rollout.base"
HF_CPU_BACKEND = "hf_cpu"
HF_CPU_ADAPTER = "verl_patches.hf_cpu_rollout.HFCPUServerAdapter"


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


def cpu_device_id() -> torch.device:
    return torch.device("cpu")


def _patch_get_device_id() -> None:
    device_module = sys.modules["verl.utils.device"]
    original = device_module.get_device_id
    for name, module in list(sys.modules.items()):
        if (name == "verl" or name.startswith("verl.")) and getattr(module, "get_device_id", None) is original:
            module.get_device_id = cpu_device_id


def _no_cpu_offload_policy(*args: object, **kwargs: object) -> None:
    return None


def _drop_cpu_offload_policy(module: ModuleType) -> None:
    module.CPUOffloadPolicy = _no_cpu_offload_policy


def _register_replica(module: ModuleType) -> None:
    def load() -> type:
        from verl_patches.hf_cpu_rollout import replica_class

        return replica_class()

    module.RolloutReplicaRegistry.register(HF_CPU_BACKEND, load)


def _register_adapter(module: ModuleType) -> None:
    module._ROLLOUT_REGISTRY[(HF_CPU_BACKEND, "async")] = HF_CPU_ADAPTER


def apply() -> bool:
    """Apply the CPU patches when VERL_PLATFORM=cpu; returns whether they were applied."""
    if not requested():
        return False
    from verl_patches import cpu_platform

    cpu_platform.register()
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    os.environ.setdefault("VERL_ENGINE_VENDOR", "nvidia")
    _patch_get_device_id()
    when_imported(DISTRIBUTED_MODULE, _default_gloo)
    when_imported(FSDP_ENGINE_MODULE, _drop_cpu_offload_policy)
    when_imported(REPLICA_MODULE, _register_replica)
    when_imported(ROLLOUT_BASE_MODULE, _register_adapter)
    from verl_patches import vllm_cpu

    vllm_cpu.install()
    logger.info("verl_patches: CPU mode (VERL_PLATFORM=cpu)")
    return True
