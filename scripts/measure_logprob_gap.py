"""Where the sampler/trainer log-prob gap at policy lag 0 comes from: vLLM (CPU build, fp32) samples
SmolLM2-135M-Instruct at T=0.7 on math prompts with verl's logprobs_mode (processed_logprobs) and with
raw_logprobs; the same weights recompute log_softmax(logits / T), as verl's actor does, in fp32 and
under bf16 autocast (verl's default mixed precision). One JSON line per pair; figures in docs/cpu_runs.md.

    VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind .venv-vllm/bin/python scripts/measure_logprob_gap.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPERATURE = 0.7
Sample = tuple[list[int], list[int], list[float]]  # prompt ids, completion ids, the sampler's log-probs


def sampled(model_dir: str, prompts: list[str], logprobs_mode: str) -> list[Sample]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=512, logprobs_mode=logprobs_mode,
              seed=0)
    outputs = llm.generate(prompts, SamplingParams(temperature=TEMPERATURE, max_tokens=48, logprobs=0, n=2, seed=0))
    return [(list(out.prompt_token_ids), list(c.token_ids), [next(iter(d.values())).logprob for d in c.logprobs])
            for out in outputs for c in out.outputs]


def recomputed(model, prompt: list[int], completion: list[int], bf16: bool) -> list[float]:
    """The completion's log-probs at TEMPERATURE from one forward pass (what verl's actor computes)."""
    import torch

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(torch.tensor([prompt + completion])).logits[0].float()
    positions = range(len(prompt) - 1, len(prompt) - 1 + len(completion))
    return [float(torch.log_softmax(logits[p] / TEMPERATURE, -1)[t]) for p, t in zip(positions, completion)]


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipe.atropos.envs.math_env import math_items
    from recipe.atropos.examples.smollm2_model import prepare_smollm2

    model_dir = str(prepare_smollm2())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": item.prompt}], tokenize=False,
                                             add_generation_prompt=True)
               for item in math_items(8, seed=0, preset="two_digit_add_sub")]
    samples = {mode: sampled(model_dir, prompts, mode) for mode in ("processed_logprobs", "raw_logprobs")}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for mode, rows in samples.items():
        for bf16 in (False, True):
            gaps = [abs(a - b) for prompt, completion, logprobs in rows
                    for a, b in zip(logprobs, recomputed(model, prompt, completion, bf16))]
            print(json.dumps({"vllm_logprobs_mode": mode, "recompute": "bf16 autocast" if bf16 else "fp32",
                              "tokens": len(gaps), "gap_max": max(gaps), "gap_mean": sum(gaps) / len(gaps)}))


if __name__ == "__main__":
    main()
