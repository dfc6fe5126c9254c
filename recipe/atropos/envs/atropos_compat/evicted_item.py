"""A rollout whose item was evicted returns instead of failing (atroposlib pull request #538, never
merged).

`BaseEnv.handle_env` subscripts `running_items.get(uuid)` before its None check, so a worker whose
item was taken back meanwhile (the backlog requeues stale items) dies with a TypeError in the
environment's log instead of logging and returning.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from atroposlib.envs.base import BaseEnv

from recipe.atropos.envs.atropos_compat.replace_once import replace_once

logger = logging.getLogger(__name__)


def _checking_the_item(original: Any) -> Any:
    @functools.wraps(original)
    async def handle_env(self: BaseEnv, item_uuid: str) -> Any:
        if self.running_items.get(item_uuid) is None:
            logger.warning("item %s is no longer running (evicted); its rollout is skipped", item_uuid)
            return None
        return await original(self, item_uuid)

    return handle_env


def install() -> bool:
    """Wrap `BaseEnv.handle_env`; True when active."""
    return replace_once(BaseEnv, "handle_env", _checking_the_item)
