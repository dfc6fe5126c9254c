"""Serves the policy API (`routes.py`) from a background thread of the trainer process.

The trainer owns verl's replica handles, so the proxy runs beside it: uvicorn on its own event
loop in a daemon thread. The trainer's thread closes and opens the proxy's gate through
`pause`/`resume`, which run on that loop. Once listening, the address is written to an endpoint
file (atomically), which is how the launcher learns that inference is ready.

Each environment calls it under its own path (`/env-<name>/...`, environment_paths.py). Every
route but `GET /health` needs the run's token (environments send it as their OpenAI
`api_key`: a Bearer header); bodies are capped; without a token the server binds loopback only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import uvicorn

from recipe.atropos.auth.asgi_guard import TokenGuard
from recipe.atropos.auth.bind_check import check_bind
from recipe.atropos.net.addresses import advertised_host, http_url
from recipe.atropos.policy_server.admission import AdmissionControl
from recipe.atropos.policy_server.environment_paths import EnvironmentPaths
from recipe.atropos.policy_server.routes import PolicyApi, RequestLimits, build_app
from recipe.atropos.policy_server.proxy import Completion, InferenceProxy
from recipe.atropos.policy_server.settings import InferenceConfig
from recipe.atropos.source.policy_versions import PolicyVersionRegistry

logger = logging.getLogger(__name__)


HEALTH_PATH = "/health"
_REFUSAL_REASONS = {401: "unauthorized", 403: "forbidden", 413: "too_large"}


def write_endpoint_file(path: str, record: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(record, handle)
    os.replace(tmp, path)


class InferenceService:
    """Owns the uvicorn thread serving `proxy` (see the module docstring)."""

    def __init__(self, proxy: InferenceProxy, tokenizer: Any, model_name: str, host: str = "127.0.0.1", port: int = 0,
                 *, token: str | None = None, limits: RequestLimits = RequestLimits(),
                 max_body_bytes: int = 16 * 1024**2, advertise_host: str | None = None) -> None:
        check_bind(host, token, "trainer.atropos_inference.host")
        # What environments are told, found before anything starts (a loopback one for other nodes stops here).
        self.advertised_host = advertised_host(host, advertise_host, bind_setting="trainer.atropos_inference.host",
                                               advertise_setting="trainer.atropos_inference.advertise_host")
        self.proxy = proxy
        self.model_name = model_name
        self.host = host
        self.api = PolicyApi(proxy, tokenizer, model_name, limits)
        self.app = EnvironmentPaths(TokenGuard(build_app(self.api), token, max_body_bytes=max_body_bytes,
                                               open_paths=(HEALTH_PATH,), on_refused=self._count_refused))
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))  # bound here, so a taken port fails in the trainer's thread with its name
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off"))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """Root URL of the server (`/generate`, `/health`); OpenAI clients append `/v1`."""
        return http_url(self.advertised_host, self.port)

    def start(self, timeout: float = 30.0) -> str:
        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._server.serve(sockets=[self._sock]))

        self._thread = threading.Thread(target=serve, name="atropos-inference-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"inference proxy did not start listening on {self.host}:{self.port} within {timeout}s")
            time.sleep(0.02)
        logger.info("inference proxy for Atropos environments: %s (/generate, /health, /v1/*)", self.base_url)
        return self.base_url

    def endpoint_record(self, **extra: Any) -> dict[str, Any]:
        """What the endpoint file says: URLs, model name, replicas, pid, and `extra` (e.g. the tokenizer)."""
        return {
            **extra,
            "base_url": self.base_url,
            "openai_base_url": f"{self.base_url}/v1",
            "model_name": self.model_name,
            "replicas": len(self.proxy.servers),
            "pid": os.getpid(),
        }

    def _count_refused(self, status: int, _path: str) -> None:
        self.api.refused[_REFUSAL_REASONS.get(status, str(status))] += 1

    def metrics(self) -> dict[str, float]:
        """`atropos/inference/*`: the version served and the proxy's counters since it started, with
        the requests refused (`refused_requests/<reason>`: unauthorized, too_large, over_limit)."""
        stats = self.proxy.stats
        refused = {f"atropos/inference/refused_requests/{reason}": float(count)
                   for reason, count in self.api.refused.items()}
        return {
            **refused,
            "atropos/inference/refused_requests": float(sum(self.api.refused.values())),
            "atropos/inference/policy_version": float(self.proxy.policy_version),
            "atropos/inference/requests": float(stats.requests),
            "atropos/inference/completions": float(stats.completions),
            "atropos/inference/completion_tokens": float(stats.completion_tokens),
            "atropos/inference/drain_timeouts": float(stats.drain_timeouts),
            "atropos/inference/straddled_completions": float(stats.straddled_completions),
            "atropos/inference/cache_resets": float(stats.cache_resets),
            "atropos/inference/rejected_requests": float(stats.rejected_requests),
            "atropos/inference/last_drain_s": float(stats.last_drain_s),
            **(self._run(self.proxy.admission.metrics(), timeout=30.0) if self.proxy.admission is not None else {}),
        }

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        if self._loop is None:
            raise RuntimeError("inference service is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], n: int = 1,
                 timeout: float | None = None) -> list[Completion]:
        """`n` completions through the proxy (its gate, round-robin and version tags), from the trainer's thread."""
        return self._run(self.proxy.generate(prompt_ids, sampling_params, n, through_admission=False), timeout)

    def pause(self, drain_timeout: float, wait: bool = True) -> bool:
        """Close the gate and drain (bounded); False when requests were still in flight at the timeout.
        `wait=False`: close the gate only (InferenceProxy.pause)."""
        return self._run(self.proxy.pause(drain_timeout, wait), timeout=drain_timeout + 30.0)

    def resume(self, policy_version: int | None = None) -> None:
        self._run(self._resume(policy_version), timeout=30.0)

    async def _resume(self, policy_version: int | None) -> None:
        if self.proxy.admission is not None and policy_version is not None:
            await self.proxy.admission.advance(policy_version)
        await self.proxy.resume(policy_version)

    def delivered(self, sequences: list[tuple[str | None, int | None]]) -> None:
        """The trainer pulled sequences of (environment name, policy version): admission control's
        window has room for as many again."""
        if self.proxy.admission is not None:
            self._run(self.proxy.admission.delivered(sequences), timeout=30.0)

    def trainer_waiting(self, waiting: bool) -> None:
        """The trainer waits for its next batch, or has it (admission control's starvation rule)."""
        if self.proxy.admission is not None:
            self._run(self.proxy.admission.trainer_waiting(waiting), timeout=30.0)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()


def serve_replicas(server_handles: list, tokenizer: Any, settings: InferenceConfig, *, batched: bool,
                   registry: PolicyVersionRegistry, policy_version: int, endpoint_path: str,
                   tokenizer_path: str, token: str | None, limits: RequestLimits,
                   replica_addresses: list[str] | None = None,
                   admission: AdmissionControl | None = None) -> InferenceService:
    """The policy server over verl's rollout replica handles, started, its endpoint file written.

    `batched`: the replicas take one request for all `n` completions (hf_cpu); otherwise `n`
    concurrent calls. Served completions are recorded in `registry` with their policy version.
    `replica_addresses` (verl's own servers' host:port, e.g. vLLM's OpenAI server) go into the
    endpoint file for diagnostics and benchmarks; environments use the proxy. `token`: the run's
    secret every request but `/health` must carry (None: none, loopback only); `limits`: the most
    completions and tokens one request may ask for; `admission`: environments' requests held so that
    nothing is trained stale (admission.py; None: off)."""
    proxy = InferenceProxy(server_handles, batched=batched, request_wait_timeout=settings.request_wait_timeout,
                           registry=registry, admission=admission)
    proxy.policy_version = policy_version
    if admission is not None:
        admission.version = policy_version
    service = InferenceService(proxy, tokenizer, settings.model_name, settings.host, settings.port, token=token,
                               limits=limits, max_body_bytes=int(settings.max_body_mb * 1024**2),
                               advertise_host=settings.advertise_host)
    service.start()
    write_endpoint_file(endpoint_path, service.endpoint_record(tokenizer=tokenizer_path,
                                                               replica_addresses=list(replica_addresses or [])))
    logger.info("policy server for environments at %s (endpoint file %s)", service.base_url, endpoint_path)
    return service
