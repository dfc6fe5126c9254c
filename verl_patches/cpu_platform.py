"""A CPU platform for verl (which has none: it falls back to CUDA/NCCL).

Registered as `cpu` in verl's PlatformRegistry and selected with `VERL_PLATFORM=cpu`: tensors on
"cpu", collectives over gloo, and Ray's "GPU" resource kept as the placement unit so verl's
resource pools work unchanged with `ray_init.num_gpus` standing in for CPU worker slots.
"""

from __future__ import annotations

import contextlib
import os
from types import ModuleType, SimpleNamespace
from typing import Any

import torch


def _memory_info() -> tuple[int, int]:
    """(free, total) bytes of host memory, as `torch.cuda.mem_get_info` reports for a GPU."""
    pages = os.sysconf("SC_PHYS_PAGES")
    free_pages = os.sysconf("SC_AVPHYS_PAGES")
    size = os.sysconf("SC_PAGE_SIZE")
    return free_pages * size, pages * size


class _NullStream:
    def synchronize(self) -> None:
        return None

    def wait_stream(self, other: object) -> None:
        return None


class _NullEvent:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, stream: object = None) -> None:
        return None

    def synchronize(self) -> None:
        return None

    def wait(self, stream: object = None) -> None:
        return None


def _device_module() -> ModuleType:
    """What verl calls on `get_torch_device()`: torch.cpu's functions plus no-op memory/stream APIs."""
    noop = lambda *args, **kwargs: None  # noqa: E731
    zero = lambda *args, **kwargs: 0  # noqa: E731
    namespace = SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 1,
        current_device=lambda: 0,
        set_device=noop,
        synchronize=noop,
        empty_cache=noop,
        ipc_collect=noop,
        set_per_process_memory_fraction=noop,
        reset_peak_memory_stats=noop,
        memory_allocated=zero,
        max_memory_allocated=zero,
        memory_reserved=zero,
        max_memory_reserved=zero,
        mem_get_info=lambda *args, **kwargs: _memory_info(),
        get_device_name=lambda *args, **kwargs: "cpu",
        get_rng_state=lambda *args, **kwargs: torch.get_rng_state(),
        set_rng_state=lambda state, *args, **kwargs: torch.set_rng_state(state),
        manual_seed=torch.manual_seed,
        manual_seed_all=torch.manual_seed,
        current_stream=lambda *args, **kwargs: _NullStream(),
        Stream=lambda *args, **kwargs: _NullStream(),
        stream=lambda *args, **kwargs: contextlib.nullcontext(),
        Event=_NullEvent,
    )
    return namespace  # type: ignore[return-value]


def register() -> None:
    """Register the platform with verl under the name `cpu`."""
    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import PlatformRegistry

    @PlatformRegistry.register(platform="cpu")
    class PlatformCPU(PlatformBase):
        _module = _device_module()

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def vendor_name(self) -> str:
            return "cpu"

        @property
        def device_module(self) -> ModuleType:
            return self._module

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check: bool = False) -> bool:
            return False  # never auto-detected: only VERL_PLATFORM=cpu selects it

        def current_device(self) -> int:
            return 0

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index: int | None = None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextlib.contextmanager
        def nvtx_range(self, msg: str):  # noqa: ANN201
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self) -> Any:
            return None
