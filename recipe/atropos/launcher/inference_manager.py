"""UnifiedInferenceManager: the one place that knows verl's inference endpoint and hands it to environments.

verl starts the inference servers (its rollout replicas) inside the trainer; the trainer serves
them to environments and writes the address to an endpoint file (`policy_server/service.py`). This
waits for that file and for `GET /health`, then turns the endpoint into the `--openai.*` flags of
an Atropos environment. This hand-over is what "registering the inference endpoint with Atropos"
means with the real Atropos API, which has no endpoint for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from recipe.atropos.net import direct_http
from recipe.atropos.policy_server.environment_paths import environment_path


class InferenceNotReadyError(RuntimeError):
    """The trainer's policy server did not come up in time, or the trainer stopped first."""


class UnifiedInferenceManager:
    def __init__(self, endpoint_file: str | Path) -> None:
        self.endpoint_file = Path(endpoint_file)
        self.endpoint: dict[str, Any] | None = None

    def reset(self) -> None:
        """Forget an endpoint left by an earlier run (call before starting the trainer)."""
        self.endpoint_file.unlink(missing_ok=True)
        self.endpoint = None

    def wait_ready(self, timeout: float, alive: Callable[[], bool] = lambda: True, poll_s: float = 0.5) -> dict[str, Any]:
        """The endpoint record once the file exists and the server answers `/health`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive():
                raise InferenceNotReadyError("the trainer exited before its policy server was ready")
            record = self._read()
            if record is not None and self._healthy(record["base_url"]):
                self.endpoint = record
                return record
            time.sleep(poll_s)
        raise InferenceNotReadyError(f"no healthy policy server announced in {self.endpoint_file} within {timeout:.0f}s")

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.endpoint_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _healthy(base_url: str) -> bool:
        try:
            return direct_http.get(f"{base_url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def environment_args(self, name: str) -> list[str]:
        """The `--openai.*` flags pointing Atropos environment `name` at verl's policy server, under its
        own path (policy_server/environment_paths.py: admission control knows it by that)."""
        if self.endpoint is None:
            raise InferenceNotReadyError("wait_ready() first")
        return ["--openai.base_url", f"{self.endpoint['base_url']}{environment_path(name)}/v1",
                "--openai.model_name", self.endpoint["model_name"]]
