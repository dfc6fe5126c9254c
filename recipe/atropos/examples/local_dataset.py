"""A local GSM8K-style dataset in verl's RL parquet format, made from a seeded generator.

verl's standard GRPO path (the fallback when Atropos is unavailable) reads `data.train_files`;
this writes one without any hub: `data_source` "openai/gsm8k" so verl's default reward function
(`####`-answer matching) scores it.
"""

from __future__ import annotations

import random
from pathlib import Path

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
TEMPLATES = (
    ("{name} has {a} apples and buys {b} more. How many apples does {name} have now?", lambda a, b: a + b),
    ("{name} had {a} marbles and gave away {b}. How many marbles are left?", lambda a, b: a - b),
    ("A box holds {a} pencils. {name} fills {b} boxes. How many pencils is that?", lambda a, b: a * b),
    ("{name} reads {a} pages a day for {b} days. How many pages in total?", lambda a, b: a * b),
)
NAMES = ("Natalia", "Weng", "Betty", "Julie", "James", "Mark", "Albert", "Ken")


def arithmetic_rows(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        template, answer_of = rng.choice(TEMPLATES)
        a, b = rng.randint(5, 60), rng.randint(1, 5)
        question = template.format(name=rng.choice(NAMES), a=a, b=b)
        rows.append(
            {
                "data_source": "openai/gsm8k",
                "prompt": [{"role": "user", "content": f"{question} {INSTRUCTION}"}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(answer_of(a, b))},
                "extra_info": {"split": split, "index": index, "question": question},
            }
        )
    return rows


def write_arithmetic_parquet(path: str | Path, n: int = 64, seed: int = 0, split: str = "train") -> Path:
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(arithmetic_rows(n, seed, split)).to_parquet(path)
    return path
