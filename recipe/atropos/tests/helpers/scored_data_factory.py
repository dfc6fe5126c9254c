"""Random ScoredData groups shaped like what Atropos environments post (raw JSON dicts)."""

from __future__ import annotations

import numpy as np

PROMPT_LABEL = -100


def make_group(
    rng: np.random.Generator,
    *,
    group_size: int,
    with_advantages: bool = False,
    with_logprobs: bool = False,
    zero_rows: tuple[int, ...] = (),
    env_id: int | None = None,
    prompt_len: tuple[int, int] = (1, 12),
    response_len: tuple[int, int] = (1, 12),
    vocab: int = 1000,
    interior_prompt_labels: bool = False,
) -> dict:
    """One group: each sequence is a prompt (mask -100) then a completion (mask = token id).

    With `interior_prompt_labels`, some completion positions after the first carry -100 (as tool
    output inside a multi-turn completion does).
    """
    tokens, masks, advantages, logprobs = [], [], [], []
    for _ in range(group_size):
        p = int(rng.integers(prompt_len[0], prompt_len[1] + 1))
        r = int(rng.integers(response_len[0], response_len[1] + 1))
        seq = rng.integers(0, vocab, size=p + r).tolist()
        mask = [PROMPT_LABEL] * p + seq[p:]
        if interior_prompt_labels and r > 2:
            for j in rng.choice(np.arange(p + 1, p + r), size=min(2, r - 1), replace=False):
                mask[int(j)] = PROMPT_LABEL
        tokens.append(seq)
        masks.append(mask)
        advantages.append(rng.normal(size=p + r).round(4).tolist())
        logprobs.append([1.0] * p + (-rng.random(r)).round(4).tolist())
    group = {
        "tokens": tokens,
        "masks": masks,
        "scores": rng.choice([0.0, 1.0, 0.5, -1.0], size=group_size).tolist(),
        "advantages": advantages if with_advantages else None,
        "inference_logprobs": logprobs if with_logprobs else None,
        "overrides": [{"set_advantage_to_zero": i in zero_rows} for i in range(group_size)] if zero_rows else None,
        "env_id": env_id,
    }
    return group
