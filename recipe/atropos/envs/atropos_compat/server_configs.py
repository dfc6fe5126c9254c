"""One `APIServerConfig` from `config_init` is a list of one server.

atroposlib 0.4.0's CLI merges `--openai.*` into that config, but `ServerManager` treats anything
that is not a list as a `ServerBaseline` and builds servers at localhost:9004-9007 instead, so
requests hang on dead ports until a 600 s timeout (Atropos's GSM8K environment does this). A bare
`ServerBaseline` (no URL of its own) keeps atroposlib's behaviour.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from atroposlib.envs.server_handling.server_baseline import APIServerConfig
from atroposlib.envs.server_handling.server_manager import ServerManager

from recipe.atropos.envs.atropos_compat.replace_once import replace_once

logger = logging.getLogger(__name__)


def _single_config_as_list(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self: ServerManager, configs: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(configs, APIServerConfig):
            logger.info("atropos_compat: one APIServerConfig (%s) used as a one-server list", configs.base_url)
            configs = [configs]
        original(self, configs, *args, **kwargs)

    return __init__


def install() -> bool:
    """Wrap `ServerManager.__init__`; True when active."""
    return replace_once(ServerManager, "__init__", _single_config_as_list)
