"""`hf_cpu`: a rollout backend for verl that runs on CPU (verl 0.9.1 has vllm, sglang, trtllm only).

Three pieces, matching verl's async rollout contract:
- `HFCPUServer`: a Ray actor holding a Hugging Face causal LM in float32 on CPU; token-in /
  token-out `generate` (what verl's agent loop calls through the server handle), weight loading,
  and the sleep/wake/abort/KV-cache calls verl makes around weight syncs (no-ops on CPU).
- `HFCPUReplica`: the `RolloutReplica` that launches one server per replica.
- `HFCPUServerAdapter`: the `BaseRollout` living in the training worker; `update_weights`
  drains verl's stream of (name, tensor) pairs and loads them into the server, then records
  the policy version (global step) the server now serves.
Registered by `verl_patches.cpu_mode` under `actor_rollout_ref.rollout.name=hf_cpu`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import ray
import torch

logger = logging.getLogger(__name__)

BACKEND_NAME = "hf_cpu"
ADAPTER_FQN = "verl_patches.hf_cpu_rollout.HFCPUServerAdapter"


# Sampling parameters hf_cpu does not apply: the policy server refuses a request that asks for them
# (policy_server/routes.py) instead of sampling from another distribution than it asked for.
# It applies temperature, top_p, top_k, min_p, max_tokens, min_tokens, stop_token_ids, ignore_eos, seed.
NOT_APPLIED_SAMPLING = ("stop", "repetition_penalty", "presence_penalty", "frequency_penalty")


def server_actor_name(replica_rank: int) -> str:
    return f"{BACKEND_NAME}_server_{replica_rank}_0"


def sample_next_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, top_k: int, generator: torch.Generator,
    min_p: float = 0.0,
) -> torch.Tensor:
    """One token per row of `logits` (rows, vocab) with temperature, top-k, nucleus and min-p
    filtering (vLLM's order); greedy at temperature 0."""
    if temperature <= 0:
        return torch.argmax(logits, dim=-1)
    scores = logits / temperature
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if 0 < top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    probs = torch.softmax(scores, dim=-1)
    if min_p > 0:
        probs = probs.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, 0.0)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def token_logprobs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probs under the temperature-scaled distribution a token was sampled from: what verl's
    actor recomputes for the row (logits divided by its temperature). top-k/top-p filtering is not
    applied (the actor does not apply it either); greedy decoding (temperature 0) reports the
    untempered log-probs."""
    return torch.log_softmax(logits / temperature if temperature > 0 else logits, dim=-1)


class HFCPUServer:
    """The inference server of one replica (a Ray actor; see the module docstring)."""

    def __init__(self, config: Any, model_config: Any, replica_rank: int) -> None:
        from transformers import AutoModelForCausalLM

        self.config = config
        self.replica_rank = replica_rank
        path = getattr(model_config, "local_path", None) or model_config.path
        self.model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
        self.eos_token_ids = self._eos_ids(self.model.generation_config.eos_token_id)
        self.max_model_len = int(
            getattr(config, "max_model_len", None) or (config.prompt_length + config.response_length)
        )
        self.global_steps = 0
        self.weight_updates = 0
        self._lock = threading.Lock()  # one generation or weight load at a time: 2 cores, shared weights
        self._generator = torch.Generator().manual_seed(int(getattr(config, "seed", 0) or 0) + replica_rank)
        torch.set_num_threads(max(1, int(os.environ.get("HF_CPU_ROLLOUT_THREADS", "1"))))

    @staticmethod
    def _eos_ids(eos: int | Iterable[int] | None) -> set[int]:
        if eos is None:
            return set()
        return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}

    def ready(self) -> bool:
        return True

    def get_server_address(self) -> tuple[str, int]:
        # verl's agent loop calls this server through its Ray handle; no HTTP endpoint is served.
        return "127.0.0.1", 0

    def _generate_sync(self, prompt_ids: list[int], sampling_params: dict[str, Any], n: int = 1) -> tuple[int, list[dict[str, Any]]]:
        """`n` completions of one prompt, decoded together as one batch (same prompt: no padding), and
        the policy version (global step) of the weights that produced them."""
        params = dict(sampling_params)
        budget = self.max_model_len - len(prompt_ids)
        if budget < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room within max_model_len={self.max_model_len}")
        max_tokens = params.pop("max_tokens", params.pop("max_new_tokens", None))
        if max_tokens is None:
            max_tokens = min(self.config.response_length, budget)
        max_tokens = max(1, min(int(max_tokens), budget))
        temperature = float(params.get("temperature", 1.0))
        top_p = float(params.get("top_p", 1.0))
        top_k = int(params.get("top_k", -1) or -1)
        min_p = float(params.get("min_p", 0.0) or 0.0)
        min_tokens = int(params.get("min_tokens", 0) or 0)
        want_logprobs = bool(params.get("logprobs", False))
        seed = params.get("seed")
        generator = self._generator if seed is None else torch.Generator().manual_seed(int(seed))
        # As vLLM: ignore_eos keeps decoding past EOS; stop_token_ids end a completion (and are kept).
        stop_ids = set() if params.get("ignore_eos") else set(self.eos_token_ids)
        stop_ids |= {int(t) for t in params.get("stop_token_ids") or ()}

        tokens = torch.empty((n, 0), dtype=torch.long)
        logprobs = torch.empty((n, 0))
        lengths = torch.full((n,), max_tokens, dtype=torch.long)
        finished = torch.zeros(n, dtype=torch.bool)
        eos = torch.tensor(sorted(stop_ids), dtype=torch.long)
        with self._lock, torch.no_grad():
            version = self.global_steps
            input_ids = torch.tensor([prompt_ids] * n, dtype=torch.long)
            past = None
            for step in range(max_tokens):
                out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[:, -1].float()
                sampled_from = logits
                if step < min_tokens and len(eos):  # no stop token before min_tokens
                    sampled_from = logits.index_fill(-1, eos[(eos >= 0) & (eos < logits.shape[-1])], float("-inf"))
                next_tokens = sample_next_tokens(sampled_from, temperature, top_p, top_k, generator, min_p)
                tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
                if want_logprobs:
                    chosen = token_logprobs(logits, temperature).gather(-1, next_tokens[:, None])
                    logprobs = torch.cat([logprobs, chosen], dim=1)
                stopped = ~finished & torch.isin(next_tokens, eos)
                lengths[stopped] = step + 1
                finished |= stopped
                if bool(finished.all()):
                    break
                input_ids = next_tokens[:, None]
        return version, [
            {
                "token_ids": tokens[row, : lengths[row]].tolist(),
                "log_probs": logprobs[row, : lengths[row]].tolist() if want_logprobs else None,
                "stop_reason": "completed" if finished[row] else "length",
            }
            for row in range(n)
        ]

    async def generate(self, request_id: str | None = None, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs: Any):  # noqa: ANN201
        """verl's contract: one completion of `prompt_ids`, tagged with the policy version it came from."""
        return (await self.generate_batch(prompt_ids=prompt_ids, sampling_params=sampling_params, n=1))[0]

    async def generate_batch(self, *, prompt_ids: list[int], sampling_params: dict[str, Any], n: int):  # noqa: ANN201
        """`n` completions of one prompt in one batched decode (what the environments' proxy uses)."""
        from verl.workers.rollout.replica import TokenOutput

        version, results = await asyncio.to_thread(self._generate_sync, list(prompt_ids), sampling_params, int(n))
        return [TokenOutput(**result, extra_fields={"global_steps": version}) for result in results]

    def load_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Load a full or partial state dict; unknown names are an error (they would be silently lost).

        Holds the lock generations hold: a load waits for the completion being decoded and never lands
        inside one. `global_steps` becomes the served version in the same critical section, so no
        completion is tagged with a version its weights are not."""
        with self._lock:
            own = self.model.state_dict()
            unknown = sorted(set(named_tensors) - set(own))
            if unknown:
                raise KeyError(f"{BACKEND_NAME}: weights for unknown parameters {unknown[:5]} (and {max(0, len(unknown) - 5)} more)")
            with torch.no_grad():
                for name, tensor in named_tensors.items():
                    own[name].copy_(tensor.to(own[name].dtype))
            self.weight_updates += 1
            if global_steps is not None:
                self.global_steps = int(global_steps)
        return len(named_tensors)

    def set_global_steps(self, global_steps: int) -> None:
        with self._lock:
            self.global_steps = int(global_steps)

    def stats(self) -> dict[str, int]:
        return {"global_steps": self.global_steps, "weight_updates": self.weight_updates}

    def parameter_checksum(self) -> float:
        with self._lock, torch.no_grad():
            return float(sum(p.double().sum() for p in self.model.parameters()))

    # The calls verl makes around sleep/wake and weight syncs: nothing to free or restore on CPU.
    def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    def sleep(self) -> None:
        return None

    def abort_all_requests(self, reject_request: bool = False) -> None:
        return None

    def resume_generation(self) -> None:
        return None

    def clear_kv_cache(self) -> None:
        return None

    def release_kv_cache(self) -> None:
        return None

    def resume_kv_cache(self) -> None:
        return None

    def start_profile(self, **kwargs: Any) -> None:
        return None

    def stop_profile(self) -> None:
        return None


def _replica_class() -> type:
    from verl.workers.rollout.replica import RolloutReplica

    class HFCPUReplica(RolloutReplica):
        async def launch_servers(self) -> None:
            server_cls = ray.remote(HFCPUServer)
            server = server_cls.options(
                name=server_actor_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency
            ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
            await server.ready.remote()
            self.servers = [server]
            self._server_handle = server
            host, port = await server.get_server_address.remote()
            self._server_address = f"{host}:{port}"

    return HFCPUReplica


def _adapter_base() -> type:
    from verl.workers.rollout.base import BaseRollout

    return BaseRollout


class HFCPUServerAdapter(_adapter_base()):
    """The worker-side handle of the replica's server (see the module docstring)."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        world = self.config.tensor_model_parallel_size * self.config.data_parallel_size * self.config.pipeline_model_parallel_size
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.has_server = rank % world == 0
        self._server = None

    def _server_handle(self):  # noqa: ANN202
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    @torch.no_grad()
    async def update_weights(self, weights, global_steps: int | None = None, wire_format: str = "named_tensors", **kwargs: Any) -> None:  # noqa: ANN001
        if wire_format != "named_tensors":
            raise NotImplementedError(f"{BACKEND_NAME} rollout supports wire_format='named_tensors', got {wire_format!r}")
        from verl.workers.rollout.utils import ensure_async_iterator

        # Every rank drains the stream (it may hold collectives); the server's rank sends it on. The stream
        # is a generator from the actor's engine (colocated) or an async one from a checkpoint engine.
        state = {}
        async for name, tensor in ensure_async_iterator(weights):
            if hasattr(tensor, "full_tensor"):
                tensor = tensor.full_tensor()
            if self.has_server:
                state[name] = tensor.detach().to("cpu", copy=True)
        if not self.has_server:
            return
        server = self._server_handle()
        loaded = await server.load_weights.remote(state, global_steps)
        logger.info("%s: loaded %d tensors into replica %d (global step %s)", BACKEND_NAME, loaded, self.replica_rank, global_steps)


def replica_class() -> type:
    """The HFCPUReplica class (built on first use: verl's replica module is heavy to import)."""
    global _REPLICA_CLASS
    if _REPLICA_CLASS is None:
        _REPLICA_CLASS = _replica_class()
    return _REPLICA_CLASS


_REPLICA_CLASS: type | None = None
