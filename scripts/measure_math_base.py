"""Base accuracy of SmolLM2-135M-Instruct on candidate `basic_arithmetic` settings (how the math demo's
task was chosen: a base accuracy between 10% and 60%). vLLM offline on CPU, the math environment's
prompt and scoring rule; greedy and sampled. Run from .venv-vllm:

    .venv-vllm/bin/python scripts/measure_math_base.py [--problems 100]

Prints one JSON line per (setting, temperature); figures in docs/cpu_runs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

BASIC = {"min_terms": 2, "max_terms": 2, "allow_negation": False, "allow_parentheses": False}
CANDIDATES = {
    "add_sub_1digit": {**BASIC, "min_digits": 1, "max_digits": 1, "operators": ("+", "-")},
    "add_sub_mul_1digit": {**BASIC, "min_digits": 1, "max_digits": 1, "operators": ("+", "-", "*")},
    "add_sub_1to2digit (preset two_digit_add_sub)": {**BASIC, "min_digits": 1, "max_digits": 2, "operators": ("+", "-")},
    "add_sub_2digit": {**BASIC, "min_digits": 2, "max_digits": 2, "operators": ("+", "-")},
    "add_sub_1digit_3terms": {**BASIC, "min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1,
                              "operators": ("+", "-")},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    import reasoning_gym
    from vllm import LLM, SamplingParams

    from recipe.atropos.envs.answer_scoring import score_answer
    from recipe.atropos.envs.math_env import SYSTEM_PROMPT
    from recipe.atropos.examples.smollm2_model import prepare_smollm2

    llm = LLM(str(prepare_smollm2()), dtype="float32", max_model_len=512, enforce_eager=True)
    for name, settings in CANDIDATES.items():
        problems = list(reasoning_gym.create_dataset("basic_arithmetic", size=args.problems, seed=args.seed, **settings))
        chats = [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": p["question"]}]
                 for p in problems]
        for temperature, samples in ((0.0, 1), (0.7, 1), (1.0, 4)):
            started = time.monotonic()
            # No seed: with one and n > 1, vLLM's CPU sampler failed here ("CPU Generator does not use offset").
            outputs = llm.chat(chats, SamplingParams(temperature=temperature, n=samples, max_tokens=128), use_tqdm=False)
            scores = [score_answer(o.text, str(p["answer"])) for p, out in zip(problems, outputs) for o in out.outputs]
            print(json.dumps({"setting": name, "temperature": temperature, "accuracy": round(sum(scores) / len(scores), 4),
                              "answers": len(scores), "distinct_problems": len({p["question"] for p in problems}),
                              "seconds": round(time.monotonic() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
