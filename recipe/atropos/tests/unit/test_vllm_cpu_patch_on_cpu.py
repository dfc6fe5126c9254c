"""verl_patches.vllm_cpu on vLLM's own CPU linear method: after a load, the weight parameter is kept
(with its weight_loader), and a second load, as verl's per-step weight sync does it, changes what the
layer computes. Runs in .venv-vllm; skipped where vllm-cpu 0.32.0 is not installed."""

import pytest
import torch

from verl_patches.vllm_cpu import SUPPORTED_VLLM_CPU, install, installed_vllm_cpu

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(installed_vllm_cpu() != SUPPORTED_VLLM_CPU,
                       reason=f"needs vllm-cpu {SUPPORTED_VLLM_CPU} (scripts/setup.sh vllm, then run from .venv-vllm)"),
]


def loaded_linear(weight: torch.Tensor) -> torch.nn.Module:
    """A layer as vLLM's UnquantizedLinearMethod creates it: a weight parameter that knows its loader."""
    from vllm.model_executor.utils import set_weight_attrs

    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
    set_weight_attrs(layer.weight, {"weight_loader": lambda param, loaded: param.data.copy_(loaded)})
    layer.bias = None
    return layer


def test_a_second_weight_load_reaches_vllms_packed_cpu_linear():
    assert install()
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    method = UnquantizedLinearMethod()
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randn(64, 32, generator=generator) for _ in range(2))
    x = torch.randn(3, 32, generator=generator)
    layer = loaded_linear(first)
    method.process_weights_after_loading(layer)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ first.T, rtol=1e-4, atol=1e-4)

    # verl's weight sync: load_weights through the parameter's loader, then process the weights again.
    assert layer.weight.shape == (64, 32)  # vLLM alone leaves an empty parameter without a loader here
    layer.weight.weight_loader(layer.weight, second)
    method.process_weights_after_loading(layer)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ second.T, rtol=1e-4, atol=1e-4)
