"""The environment side of the Atropos API: `/register-env` and `/scored_data_list`.

Real environments do this through `atroposlib.envs.BaseEnv`; these helpers serve tools and tests
that post prepared groups (replays, fault injection, the interim demo), with the run's token
from ATROPOS_RUN_TOKEN.
"""

from __future__ import annotations

import json
from typing import Any

from recipe.atropos.auth.run_token import auth_headers, run_token
from recipe.atropos.net import direct_http


def register_env(
    api_url: str, *, name: str, weight: float, group_size: int, max_token_length: int, timeout: float = 10.0
) -> int:
    """`POST /register-env`; returns the env_id. The trainer must have called `/batch` once before."""
    response = direct_http.post(
        f"{api_url.rstrip('/')}/register-env",
        json={"max_token_length": max_token_length, "desired_name": name, "weight": weight, "group_size": group_size},
        timeout=timeout, headers=auth_headers(run_token()),
    )
    response.raise_for_status()
    payload = response.json()
    if payload.get("status") != "success":
        raise RuntimeError(f"/register-env refused {name!r}: {payload}")
    return int(payload["env_id"])


def post_groups(api_url: str, groups: list[dict[str, Any]], *, env_id: int | None = None, timeout: float = 30.0) -> dict:
    """`POST /scored_data_list` with `env_id` set on every group (when given).

    Serialised as BaseEnv does (`json.dumps`, NaN and Infinity allowed), so what a careless
    environment sends reaches the server as it would in a real run.
    """
    body = [{**group, "env_id": env_id} if env_id is not None else group for group in groups]
    response = direct_http.post(
        f"{api_url.rstrip('/')}/scored_data_list",
        data=json.dumps(body),
        headers={"Content-Type": "application/json", **auth_headers(run_token())},
        timeout=timeout,
    )
    response.raise_for_status()
    return response.json()
