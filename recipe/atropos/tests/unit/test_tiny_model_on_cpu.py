"""The tiny random Qwen2 and the real Qwen tokenizer, made without any model hub."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recipe.atropos.examples.tiny_model import build_tiny_qwen2


def test_tiny_qwen2_builds_loads_and_generates(tmp_path):
    path = build_tiny_qwen2(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    # Qwen's special ids: the real vocabulary, not a stand-in.
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [151643, 151644, 151645]
    text = "Natalia sold clips to 48 of her friends."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text

    model = AutoModelForCausalLM.from_pretrained(path)
    n_params = sum(p.numel() for p in model.parameters())
    assert 5e6 < n_params < 2e7
    ids = tokenizer("1 + 1 =", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()

    # Same seed, same weights: a second build in another folder is identical.
    other = AutoModelForCausalLM.from_pretrained(build_tiny_qwen2(tmp_path / "again"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    # Reuse: building again in place does not rewrite the weights.
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    build_tiny_qwen2(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
