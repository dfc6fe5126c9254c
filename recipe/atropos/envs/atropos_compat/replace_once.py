"""Replace an attribute of atroposlib (or transformers) once: a second `install()` finds the mark on
what the first put there and leaves it alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MARK = "_atropos_compat_replacement"


def replace_once(owner: Any, name: str, make_replacement: Callable[[Any], Any]) -> bool:
    """Set `owner.name` to `make_replacement(current)` unless it is already a replacement; True (active)."""
    current = getattr(owner, name)
    if getattr(current, _MARK, False):
        return True
    replacement = make_replacement(current)
    setattr(replacement, _MARK, True)
    setattr(owner, name, replacement)
    return True
