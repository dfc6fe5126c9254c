"""What the policy wrote and how it was scored: a few trained groups per step as text.

Each step, the first `groups_per_step` groups of the trained batch, one record per row: the step,
the environment, the policy version that generated the group, its uid, the row's score and
advantage, the prompt and response decoded from the tokens that were trained, and the environment's
`messages` for the row where it sent one conversation per sequence. Records go to `<trainer.default_local_dir>/
atropos_samples.jsonl` always, to a wandb table (`atropos/samples`) when wandb is a logger, and a
one-line excerpt per group to the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from verl import DataProto

from recipe.atropos.data.scored_group import ScoredGroup
from recipe.atropos.data.to_dataproto import ROW_IN_GROUP

logger = logging.getLogger(__name__)

COLUMNS = ("step", "environment", "policy_version", "uid", "row", "score", "advantage", "prompt", "response", "messages")
WANDB_KEY = "atropos/samples"
WANDB_ROWS_KEPT = 512  # the table keeps the latest rows (wandb logs the whole table each time)
EXCERPT_CHARS = 160


def sample_records(step: int, groups: Sequence[ScoredGroup], data: DataProto, tokenizer: Any,
                   env_names: Mapping[int, str], versions: Mapping[str, int | None],
                   groups_per_step: int) -> list[dict[str, Any]]:
    """One record per row of the first `groups_per_step` groups, in the group's row order, read from the
    trained batch `data` (rows found by uid and their index in the group: verl may reorder rows)."""
    batch, uids, row_in_group = data.batch, data.non_tensor_batch["uid"], data.non_tensor_batch[ROW_IN_GROUP]
    records = []
    for group in groups[:groups_per_step]:
        rows = sorted((int(row_in_group[i]), int(i)) for i in (uids == group.uid).nonzero()[0])
        for position, row in rows:
            response_mask = batch["response_mask"][row].bool()
            prompt_ids = batch["prompts"][row][batch["attention_mask"][row, : batch["prompts"].shape[1]].bool()]
            response_ids = batch["responses"][row][: int(batch["attention_mask"][row, batch["prompts"].shape[1]:].sum())]
            advantage = batch["advantages"][row][response_mask] if "advantages" in batch.keys() else torch.zeros(0)
            messages = group.messages[position] if group.messages is not None else None
            records.append({
                "step": step,
                "environment": env_names.get(group.env_id, str(group.env_id)),
                "policy_version": versions.get(group.uid),
                "uid": group.uid,
                "row": position,
                "score": float(batch["token_level_scores"][row].sum()),
                "advantage": float(advantage.mean()) if advantage.numel() else 0.0,
                "prompt": tokenizer.decode(prompt_ids.tolist()),
                "response": tokenizer.decode(response_ids.tolist()),
                "messages": messages,
            })
    return records


class TrainedSampleLog:
    """Where the records go (module docstring)."""

    def __init__(self, path: str | Path, loggers: Sequence[str]) -> None:
        self.path = Path(path)
        self.to_wandb = "wandb" in loggers
        self.table_rows: list[list[Any]] = []

    def log(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as out:
            for record in records:
                out.write(json.dumps(record, default=str) + "\n")
        for record in (r for r in records if r["row"] == 0):
            logger.info("sample step %d, %s (policy v%s): score %.3g, advantage %+.3g | %s -> %s", record["step"],
                        record["environment"], record["policy_version"], record["score"], record["advantage"],
                        _excerpt(record["prompt"]), _excerpt(record["response"]))
        if self.to_wandb:
            self._log_table(records)

    def _log_table(self, records: Sequence[dict[str, Any]]) -> None:
        import wandb

        if wandb.run is None:
            return
        self.table_rows.extend([[_cell(r[column]) for column in COLUMNS] for r in records])
        self.table_rows = self.table_rows[-WANDB_ROWS_KEPT:]
        # A new table each time: wandb does not show rows added to a table after it was logged.
        wandb.log({WANDB_KEY: wandb.Table(columns=list(COLUMNS), data=self.table_rows)}, step=records[0]["step"])


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value
