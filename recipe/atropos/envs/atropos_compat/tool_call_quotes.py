"""A tool call whose arguments hold an apostrophe parses (atroposlib pull requests #479 and #536,
never merged).

atroposlib 0.4.0's `parse_tool_call` turns every `'` into `"` before `json.loads`, so valid JSON with
an apostrophe in a value (`{"q": "Ada's engine"}`) fails to parse and scores as a malformed call.
The call is read as JSON first, then as a Python literal (single-quoted dicts, what the old
replacement was for), and handed to atroposlib's own parser (tool validation, logging) as JSON
with no apostrophe left to mangle. What neither reads goes to atroposlib's parser unchanged.
"""

from __future__ import annotations

import ast
import functools
import json
from typing import Any

from atroposlib.utils import tool_call_parser

from recipe.atropos.envs.atropos_compat.replace_once import replace_once

_TAG = "tool_call"


def _read_call(content: str) -> dict | None:
    """The tool call as a dict: JSON, else a Python literal (never evaluated as code); None when neither."""
    try:
        call = json.loads(content, strict=False)
    except ValueError:
        try:
            call = ast.literal_eval(content)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return call if isinstance(call, dict) else None


def _apostrophe_safe(original: Any) -> Any:
    @functools.wraps(original)
    def parse_tool_call(response: str, available_tools: list | None = None,
                        preferred_tags: list[str] | None = None) -> tuple[str, dict, bool]:
        content = tool_call_parser.extract_tool_call(response, preferred_tags)
        call = _read_call(content) if content else None
        try:
            # "\u0027" is an apostrophe to json.loads, and atroposlib's replacement finds none.
            quote_free = json.dumps(call).replace("'", "\\u0027") if call is not None else None
        except (TypeError, ValueError):  # a literal JSON cannot hold (a set, bytes)
            quote_free = None
        if quote_free is None:
            return original(response, available_tools, preferred_tags)
        return original(f"<{_TAG}>{quote_free}</{_TAG}>", available_tools, [_TAG])

    return parse_tool_call


def install() -> bool:
    """Replace `atroposlib.utils.tool_call_parser.parse_tool_call` (environments import it after
    run_env applied the fixes); True when active."""
    return replace_once(tool_call_parser, "parse_tool_call", _apostrophe_safe)
