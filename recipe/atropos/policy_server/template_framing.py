"""The tokens a chat template puts around an assistant answer's content.

An environment that asks `/v1/chat/completions` and posts the conversation tokenised by the chat
template (atroposlib's `tokenize_for_trainer`) posts the answer framed: ChatML templates end the turn
with `<|im_end|>` and a newline, Qwen3-style templates open the last turn with an empty think block.
The policy server records what it served; the version registry strips this framing when a posted
completion is not found as it is (policy_versions.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

_PROBE_QUESTION = [{"role": "user", "content": "Hi"}]
_PROBE_ANSWER = "Hello"


def chat_ids(tokenizer: Any, messages: list, add_generation_prompt: bool) -> list[int]:
    """The conversation's token ids through the tokenizer's chat template."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)  # transformers 5: a BatchEncoding


def assistant_turn_framing(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(before, after): the tokens the template renders between the generation prompt and an answer
    that ends the conversation, and after that answer. ([], []) without a chat template, or when the
    answer's tokens cannot be found in the rendering (logged)."""
    if not getattr(tokenizer, "chat_template", None):
        return [], []
    try:
        prompt = chat_ids(tokenizer, _PROBE_QUESTION, add_generation_prompt=True)
        full = chat_ids(tokenizer, [*_PROBE_QUESTION, {"role": "assistant", "content": _PROBE_ANSWER}], False)
    except Exception as exc:  # noqa: BLE001 (any template error: no framing known)
        logger.warning("cannot render the chat template to find its assistant-turn framing: %s", exc)
        return [], []
    answer = tokenizer.encode(_PROBE_ANSWER, add_special_tokens=False)
    turn = full[len(prompt):] if full[: len(prompt)] == prompt else []
    for start in range(len(turn) - len(answer) + 1):
        if turn[start:start + len(answer)] == answer:
            return turn[:start], turn[start + len(answer):]
    logger.warning("the chat template's assistant turn %r does not hold the answer's tokens %r: completions framed by "
                   "the template are looked up as they are", turn, answer)
    return [], []
