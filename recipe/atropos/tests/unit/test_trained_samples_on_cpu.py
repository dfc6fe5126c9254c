"""A few trained groups per step as text, from groups that passed through the real run-api: one record
per row with its environment, policy version, score and advantage, the prompt and response decoded
from the trained tokens, the environment's messages where it sent them; in the JSONL file always, in
a wandb table (offline run) when wandb is a logger."""

import json
from pathlib import Path

import numpy as np
import torch
import wandb
from transformers import AutoTokenizer

from recipe.atropos.atropos_core_algos import AtroposGRPOComputer
from recipe.atropos.data.to_dataproto import scored_data_to_dataproto
from recipe.atropos.data.trained_samples import COLUMNS, WANDB_KEY, TrainedSampleLog, sample_records
from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.tests.helpers.api_helpers import GROUP, started_trainer


def text_group(tokenizer, prompt: str, answers: list[str], scores: list[float], messages: bool) -> dict:
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    tokens, masks = [], []
    for answer in answers:
        answer_ids = tokenizer.encode(answer, add_special_tokens=False)
        tokens.append(prompt_ids + answer_ids)
        masks.append([-100] * len(prompt_ids) + answer_ids)
    group = {"tokens": tokens, "masks": masks, "scores": scores}
    if messages:
        group["messages"] = [[{"role": "user", "content": prompt}, {"role": "assistant", "content": a}] for a in answers]
    return group


def test_trained_groups_are_recorded_as_text_with_their_scores(run_api, tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    client = started_trainer(run_api.url, batch_size=2 * GROUP)
    env_id = register_env(run_api.url, name="arith", weight=1.0, group_size=GROUP, max_token_length=64)
    answers = [" 4", " 5", " four", " 22"]
    post_groups(run_api.url, [text_group(tokenizer, "What is 2+2?", answers, [1.0, 0.0, 1.0, 0.0], messages=True),
                              text_group(tokenizer, "What is 3+3?", [" 6"] * GROUP, [1.0] * GROUP, messages=False)],
                env_id=env_id)
    batch = client.poll_batch()
    assert batch is not None and len(batch.groups) == 2
    data = scored_data_to_dataproto(batch.groups, pad_token_id=tokenizer.pad_token_id, max_prompt_length=16,
                                    max_response_length=8)
    AtroposGRPOComputer().compute(data)
    data.reorder(torch.from_numpy(np.random.default_rng(0).permutation(len(data))))  # as verl may reorder rows
    versions = {batch.groups[0].uid: 3, batch.groups[1].uid: None}
    records = sample_records(7, batch.groups, data, tokenizer, {env_id: "arith"}, versions, groups_per_step=2)

    by_prompt = {}
    for record in records:
        by_prompt.setdefault(record["prompt"], []).append(record)
    asked = by_prompt["What is 2+2?"]
    assert [r["response"] for r in asked] == answers  # in the group's row order, whatever the batch order
    assert [r["score"] for r in asked] == [1.0, 0.0, 1.0, 0.0]
    assert asked[0]["advantage"] > 0 > asked[1]["advantage"]  # GRPO: right answers above the mean
    assert {(r["step"], r["environment"], r["policy_version"]) for r in asked} == {(7, "arith", 3)}
    assert asked[2]["messages"][1] == {"role": "assistant", "content": " four"}
    same = by_prompt["What is 3+3?"]
    assert [r["advantage"] for r in same] == [0.0] * GROUP and all(r["messages"] is None for r in same)

    run = wandb.init(mode="offline", dir=str(tmp_path), project="samples-test")
    try:
        TrainedSampleLog(tmp_path / "atropos_samples.jsonl", loggers=["console", "wandb"]).log(records)
        (table_file,) = Path(run.dir).glob(f"media/table/{WANDB_KEY}_*.table.json")  # the offline run's table
    finally:
        run.finish()
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(COLUMNS) and len(table["data"]) == 2 * GROUP
    assert [row[COLUMNS.index("response")] for row in table["data"][:GROUP]] == answers
    written = [json.loads(line) for line in (tmp_path / "atropos_samples.jsonl").read_text().splitlines()]
    assert written == records
