"""`apply_chat_template(chat)` returns token ids, as under transformers 4.

transformers 5 changed the default of `return_dict` to True, so a tokenising call returns a
BatchEncoding. atroposlib 0.4.0's `tokenize_for_trainer` (and environments written against it)
then post a dict as `tokens` ("Object of type BatchEncoding is not JSON serializable") or take
`len()` of it (2). The wrapper restores the old default when the caller did not choose.
"""

from __future__ import annotations

import functools
from typing import Any

import transformers
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from recipe.atropos.envs.atropos_compat.replace_once import replace_once


def _ids_by_default(original: Any) -> Any:
    @functools.wraps(original)
    def apply_chat_template(self: PreTrainedTokenizerBase, *args: Any, **kwargs: Any) -> Any:
        if "return_dict" not in kwargs and not kwargs.get("return_assistant_tokens_mask", False):
            kwargs["return_dict"] = False
        return original(self, *args, **kwargs)

    return apply_chat_template


def install() -> bool:
    """Wrap `PreTrainedTokenizerBase.apply_chat_template` (transformers >= 5 only); True when active."""
    if int(transformers.__version__.split(".")[0]) < 5:
        return False  # transformers 4 already returns ids
    return replace_once(PreTrainedTokenizerBase, "apply_chat_template", _ids_by_default)
