"""`ray`: a checkpoint engine for verl that pushes weights through Ray's object store.

verl 0.9.1's checkpoint engines for separated rollout replicas (nccl, hccl, nixl, mooncake, kimi)
all need an accelerator's transport; on CPU none registers, and `naive` only serves rollouts that
live inside the actor's own worker. This one needs nothing but Ray, on any device and across nodes:

- the actor's rank 0 (verl's `is_master`) fills buckets of full tensors up to
  `update_weights_bucket_megabytes` (a tensor is never split), `ray.put`s each and posts the
  reference on a `WeightBoard` actor; the other ranks only drain the stream (FSDP gathers each tensor collectively);
- every rollout worker reads the board in order and yields (name, tensor) to its server adapter;
- `finalize` clears the board, which drops the last references: the store frees the buckets.

Select it with `actor_rollout_ref.rollout.checkpoint_engine.backend=ray` and
`...checkpoint_engine.custom_backend_module=verl_patches.ray_checkpoint_engine` (verl imports the
module wherever it builds an engine). `engine_kwargs.ray.timeout_s` bounds each wait for a bucket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import ray
import torch
from verl.checkpoint_engine.base import CheckpointEngine, CheckpointEngineRegistry
from verl.workers.rollout.utils import ensure_async_iterator

logger = logging.getLogger(__name__)

BACKEND_NAME = "ray"
BOARD_NAME = "atropos_ray_checkpoint_engine_board"
DEFAULT_TIMEOUT_S = 600.0


class WeightBoard:
    """The buckets of one weight push, in order, for every receiver to read (a Ray actor)."""

    def __init__(self) -> None:
        self._buckets: list[list[ray.ObjectRef]] = []
        self._closed = False
        self._changed = asyncio.Condition()

    async def reset(self) -> None:
        async with self._changed:
            self._buckets, self._closed = [], False
            self._changed.notify_all()

    async def post(self, bucket: list[ray.ObjectRef]) -> None:
        """`bucket` is a one-element list: Ray resolves a bare reference passed as an argument."""
        async with self._changed:
            self._buckets.append(bucket)
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def bucket(self, index: int, timeout_s: float) -> list[ray.ObjectRef] | None:
        """Bucket `index`, waiting up to `timeout_s` for it; None once the push ended before it."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: index < len(self._buckets) or self._closed),
                                       timeout_s)
            except asyncio.TimeoutError:
                raise TimeoutError(f"checkpoint engine '{BACKEND_NAME}': bucket {index} of the weight push did not "
                                   f"arrive within {timeout_s:.0f} s (the actor's rank 0 posts them)") from None
            return self._buckets[index] if index < len(self._buckets) else None


def weight_board() -> Any:
    """The run's board: one named actor in the job's namespace, created by the first caller."""
    board_cls = ray.remote(num_cpus=0, max_concurrency=64)(WeightBoard)
    return board_cls.options(name=BOARD_NAME, get_if_exists=True).remote()


@CheckpointEngineRegistry.register(BACKEND_NAME)
class RayObjectStoreCheckpointEngine(CheckpointEngine):
    """Weights from the actor's rank 0 to every rollout worker through Ray's object store (module docstring)."""

    def __init__(self, bucket_size: int, is_master: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.bucket_size = int(bucket_size)
        self.is_master = is_master
        self.timeout_s = float(timeout_s)
        self.board: Any = None

    def prepare(self) -> dict[str, Any]:
        return {}

    @classmethod
    def build_topology(cls, actor_wg_world_size: int, rollout_world_size: int,
                       metadata: list[dict]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        board = weight_board()
        ray.get(board.reset.remote())
        return {"board": [board] * actor_wg_world_size}, {"board": [board] * rollout_world_size}

    def init_process_group(self, board: Any) -> None:
        self.board = board

    def finalize(self) -> None:
        if self.is_master and self.board is not None:
            self.board.reset.remote()  # drops the buckets' references; the next push waits for it anyway
        self.board = None

    async def send_weights(self, weights: Iterable[tuple[str, torch.Tensor]],
                           global_steps: int | None = None) -> dict[str, float]:
        """Rank 0 posts the buckets and returns what it sent (verl adds it to the step's metrics)."""
        bucket: dict[str, torch.Tensor] = {}
        size = tensors = buckets = total_bytes = 0
        async for name, tensor in ensure_async_iterator(weights):
            if hasattr(tensor, "full_tensor"):  # every rank takes part in gathering a sharded tensor
                tensor = tensor.full_tensor()
            if not self.is_master:
                continue
            bucket[name] = tensor.detach().to("cpu", copy=True)
            size += bucket[name].nbytes
            total_bytes += bucket[name].nbytes
            tensors += 1
            if size >= self.bucket_size:
                await self._post(bucket)
                bucket, size, buckets = {}, 0, buckets + 1
        if not self.is_master:
            return {}
        if bucket:
            await self._post(bucket)
            buckets += 1
        await self.board.close.remote()
        logger.info("%s: posted %d tensors in %d buckets (global step %s)", BACKEND_NAME, tensors, buckets, global_steps)
        return {"checkpoint_engine/tensors": float(tensors), "checkpoint_engine/buckets": float(buckets),
                "checkpoint_engine/payload_mbytes": total_bytes / (1 << 20)}

    async def _post(self, bucket: dict[str, torch.Tensor]) -> None:
        await self.board.post.remote([ray.put(bucket)])

    async def receive_weights(self, global_steps: int | None = None) -> AsyncIterator[tuple[str, torch.Tensor]]:
        index = 0
        while True:
            posted = await self.board.bucket.remote(index, self.timeout_s)
            if posted is None:
                return
            for name, tensor in (await posted[0]).items():
                yield name, tensor
            index += 1
