"""What training did to the student, seen from outside the run: its log-probability of one token after
fixed contexts, from the initial model or from the actor's weights in a checkpoint verl saved (one
rank: its DTensors hold the whole tensors). Used by the tests of the losses environments ask for."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

CONTEXTS, CONTEXT_LENGTH = 16, 12


def probe_contexts(vocab_top: int, seed: int = 0) -> torch.Tensor:
    """Random token contexts (ids in [100, vocab_top)), the same for every model probed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab_top, (CONTEXTS, CONTEXT_LENGTH), generator=generator)


def load_student(model_dir: Path, checkpoint_step_dir: Path | None = None) -> torch.nn.Module:
    """The model at `model_dir`, with the actor's weights of `checkpoint_step_dir` (global_step_N) when given."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    if checkpoint_step_dir is not None:
        saved = torch.load(checkpoint_step_dir / "actor" / "model_world_size_1_rank_0.pt", map_location="cpu",
                           weights_only=False)
        state = {name: value.to_local() if hasattr(value, "to_local") else value for name, value in saved.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # tied embeddings
    return model.eval()


@torch.no_grad()
def mean_logprob_of(model: torch.nn.Module, token_id: int, contexts: torch.Tensor) -> float:
    """Mean over every position of every context of log p(token_id | the tokens up to it)."""
    logits = model(input_ids=contexts).logits.float()
    return float(torch.log_softmax(logits, dim=-1)[..., token_id].mean())
