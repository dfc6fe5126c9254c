"""The temperature each row was sampled at, carried to verl's log-prob recomputation.

Environments sample at their own temperature and may say so in three places of a ScoredData
group. The PPO ratio and the rollout importance-sampling correction are only right when the actor
recomputes each row's log-probs at the temperature that row was sampled at, so the rows carry it
as a `temperature` column (verl's FSDP engine accepts a per-row tensor under that key).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from verl import DataProto

from recipe.atropos.data.errors import InvalidGroupError

TEMPERATURE = "temperature"


def _given(source: Any) -> Any:
    return source.get(TEMPERATURE) if isinstance(source, Mapping) else None


def _checked(value: Any, group_index: int, env_id: object, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidGroupError(
            group_index, env_id, field,
            f"{where}temperature {value!r} is not a positive finite number: the log-probs cannot be recomputed "
            "at the temperature the rows were sampled at", category="temperature")
    return float(value)


def sampling_temperatures(
    n: int,
    overrides: Sequence[Any] | None,
    generation_params: Mapping[str, Any] | None,
    group_overrides: Mapping[str, Any] | None,
    *,
    group_index: int,
    env_id: object,
) -> np.ndarray:
    """Each row's sampling temperature (float64, NaN where the group does not say).

    Precedence: `overrides[i]["temperature"]`, then `generation_params["temperature"]`, then
    `group_overrides["temperature"]`; the caller fills NaN with the rollout default. A value that is
    not a positive finite number raises InvalidGroupError naming the field."""
    group_value = np.nan
    for field, source in (("group_overrides", group_overrides), ("generation_params", generation_params)):
        value = _given(source)
        if value is not None:
            group_value = _checked(value, group_index, env_id, field, "")
    temperatures = np.full(n, group_value, dtype=np.float64)
    for i, item in enumerate(overrides or ()):
        value = _given(item)
        if value is not None:
            temperatures[i] = _checked(value, group_index, env_id, "overrides", f"overrides[{i}]: ")
    return temperatures


class RowTemperatureBatch(DataProto):
    """A DataProto whose `temperature` column reaches verl's workers as the per-row temperature.

    verl's legacy `RayPPOTrainer._update_actor` sets `meta_info["temperature"]` to the rollout
    default before `to_tensordict`, which refuses a key that is both a column and meta. Here the
    column wins; when every row shares one temperature it travels as the scalar instead (what
    verl's fused kernels require)."""

    @classmethod
    def view(cls, data: DataProto) -> DataProto:
        """`data` itself when it has no temperature column; otherwise a view sharing its tensors and
        meta_info (so what verl writes into meta_info lands on `data` as before)."""
        if data.batch is None or TEMPERATURE not in data.batch.keys():
            return data
        return cls(batch=data.batch, non_tensor_batch=data.non_tensor_batch, meta_info=data.meta_info)

    def to_tensordict(self):  # noqa: ANN201 (a TensorDict, as verl's)
        temperatures = self.batch[TEMPERATURE]
        meta = {key: value for key, value in self.meta_info.items() if key != TEMPERATURE}
        tensors = self.batch
        if bool((temperatures == temperatures[0]).all()):
            meta[TEMPERATURE] = float(temperatures[0])
            tensors = self.batch.exclude(TEMPERATURE)
        return DataProto(batch=tensors, non_tensor_batch=self.non_tensor_batch, meta_info=meta).to_tensordict()
