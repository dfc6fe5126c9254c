"""Helpers shared by the tests that talk to a real run-api: a client with short retries, and a
registered trainer whose first `/batch` has opened the API to environments."""

from __future__ import annotations

from recipe.atropos.auth.run_token import auth_headers, run_token
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient

GROUP = 4


def token_headers() -> dict[str, str]:
    """The test session's token as our clients send it (conftest sets ATROPOS_RUN_TOKEN)."""
    return auth_headers(run_token())


def fast_client(url: str, **overrides) -> AtroposEnvironmentClient:
    config = {"api_url": url, "retry_delay": 0.05, "timeout": 5.0, "max_wait_time": 5.0, **overrides}
    return AtroposEnvironmentClient(config)


def started_trainer(url: str, batch_size: int = 2 * GROUP) -> AtroposEnvironmentClient:
    client = fast_client(url)
    client.register(batch_size=batch_size, max_token_len=64, num_steps=10)
    assert client.get_batch() is None  # the first /batch opens /register-env
    return client
