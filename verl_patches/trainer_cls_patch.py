"""The `trainer_cls` key for `python -m verl.trainer.main_ppo`.

verl's legacy `TaskRunner.run` builds `RayPPOTrainer(...)` by name and `main()` imports
`TaskRunner` from `verl.trainer.main_ppo_v0` when it runs. This patch replaces that TaskRunner
with a subclass whose `run`, when the config names `trainer_cls`, rebinds `RayPPOTrainer` in the
globals verl's own `run` uses, inside the task-runner actor, for the duration of the call. Ray
pickles the runner class by value, so rebinding the module attribute from the driver would not
reach it; the rebinding happens where `run` executes. Without `trainer_cls` it is verl's runner.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from verl_patches.post_import import when_imported

logger = logging.getLogger(__name__)

TARGET_MODULE = "verl.trainer.main_ppo_v0"
TRAINER_NAME = "RayPPOTrainer"
_PATCH_MARK = "__atropos_trainer_cls__"


def load_trainer_class(fqn: str) -> type:
    """`package.module.ClassName` -> the class; clear errors for bad names."""
    module_name, _, class_name = fqn.rpartition(".")
    if not module_name:
        raise ValueError(f"trainer_cls must be a dotted path like 'pkg.module.Class', got {fqn!r}")
    try:
        trainer_cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"trainer_cls={fqn!r} cannot be imported: {exc}") from exc
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, RayPPOTrainer)):
        raise ValueError(f"trainer_cls={fqn!r} is not a subclass of verl's RayPPOTrainer")
    return trainer_cls


@contextlib.contextmanager
def rebound(namespace: dict[str, Any], name: str, value: Any) -> Iterator[None]:
    previous = namespace[name]
    namespace[name] = value
    try:
        yield
    finally:
        namespace[name] = previous


def trainer_cls_of(config: Any) -> str | None:
    return config.get("trainer_cls", None) if hasattr(config, "get") else None


def _patch(module: ModuleType) -> None:
    import ray

    stock = module.TaskRunner
    if getattr(stock, _PATCH_MARK, False):
        return
    stock_class = stock.__ray_actor_class__

    class TaskRunner(stock_class):
        """verl's TaskRunner, building `config.trainer_cls` instead of RayPPOTrainer when set."""

        def run(self, config):  # noqa: ANN001, ANN201
            fqn = trainer_cls_of(config)
            if not fqn:
                return super().run(config)
            trainer_cls = load_trainer_class(fqn)
            logger.warning("trainer_cls: building %s instead of %s", fqn, TRAINER_NAME)
            with rebound(stock_class.run.__globals__, TRAINER_NAME, trainer_cls):
                return super().run(config)

    TaskRunner.__qualname__ = TaskRunner.__name__ = "TaskRunner"
    patched = ray.remote(TaskRunner)
    setattr(patched, _PATCH_MARK, True)
    module.TaskRunner = patched


def install() -> None:
    when_imported(TARGET_MODULE, _patch)


def is_active() -> bool:
    import sys

    module = sys.modules.get(TARGET_MODULE)
    return module is not None and getattr(module.TaskRunner, _PATCH_MARK, False)
