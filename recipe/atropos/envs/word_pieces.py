"""Lowercase ASCII word pieces (`"the"`, `" cat"`): the `learnable` environment's reward tokens.

About 27% of the Qwen2 vocabulary. Shared by the environment (what it rewards) and the demo model
(whose embeddings can be given a word-piece direction, see `tiny_model.build_tiny_qwen2`).
"""

from __future__ import annotations

import re
from typing import Any

WORD_PIECE = re.compile(r"^ ?[a-z]+$")


def word_piece_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the tokenizer's tokens that decode to a lowercase ASCII word piece."""
    return frozenset(token_id for token_id in tokenizer.get_vocab().values()
                     if WORD_PIECE.match(tokenizer.decode([token_id])))
