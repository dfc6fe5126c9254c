"""A reward loaded by name is the class registered under that name (atroposlib pull request #482,
never merged).

`registry.create("r1")` imports `r1_reward.py`, whose `@registry.register` decorators register each
of its classes under its own name, and then overwrites "r1" with the module's alphabetically first
reward class: AccuracyXReward, not R1Reward, so the environment trains on another reward than it
named. The decorator's registration is kept; modules that do not register themselves load as before.
"""

from __future__ import annotations

import functools
from typing import Any

from atroposlib.envs.reward_fns.registry import RewardRegistry

from recipe.atropos.envs.atropos_compat.replace_once import replace_once


def _keeping_the_decorated_class(original: Any) -> Any:
    @functools.wraps(original)
    def _load_reward_function(self: RewardRegistry, name: str) -> None:
        registered_before = name in self._registry

        def register_unless_decorated(registered_name: str, function: Any) -> None:
            if registered_name == name and name in self._registry and not registered_before:
                return  # importing the module registered `name` through its decorator
            RewardRegistry.register_function(self, registered_name, function)

        self.register_function = register_unless_decorated
        try:
            original(self, name)
        finally:
            del self.register_function

    return _load_reward_function


def install() -> bool:
    """Wrap `RewardRegistry._load_reward_function`; True when active."""
    return replace_once(RewardRegistry, "_load_reward_function", _keeping_the_decorated_class)
