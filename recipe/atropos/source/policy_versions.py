"""Which policy version produced a completion, so the trainer can measure and bound policy lag.

Environments post token ids, not the responses of the inference server, so the version cannot
travel with the data through Atropos. A completion served more than once keeps its oldest version:
the policy lag it measures is then an upper bound. The inference proxy records every completion it serves
under a digest of its token ids; the trainer, in the same process, looks up the completions of
each group it pulls. Version = the global step whose update the served weights contain (0: the
initial weights).

A completion an environment posts may be several served pieces (a multi-turn chat whose assistant
turns were served one by one, joined with or without tool output between them): `lookup_pieces`
finds a run of tokens made of recorded pieces back to back (the longest first), and gives the
oldest of their versions.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Callable, Sequence

import cachetools
import numpy as np


def completion_key(token_ids: Sequence[int] | np.ndarray) -> bytes:
    """Digest of a completion's token ids (independent of list vs array, int width)."""
    return hashlib.blake2b(np.asarray(token_ids, dtype=np.int64).tobytes(), digest_size=16).digest()


class _FirstInFirstOut(cachetools.FIFOCache):
    """cachetools' bounded FIFO map (a key set again moves to the end), reporting each eviction."""

    def __init__(self, maxsize: int, on_evict: Callable[[tuple[int, int]], None]) -> None:
        super().__init__(maxsize)
        self._on_evict = on_evict

    def popitem(self) -> tuple[bytes, tuple[int, int]]:
        key, value = super().popitem()
        self._on_evict(value)
        return key, value


class PolicyVersionRegistry:
    """Bounded, thread-safe map completion digest -> policy version; the oldest entries go first."""

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._versions = _FirstInFirstOut(capacity, self._forget_length)  # digest -> (version, length)
        self._lengths: collections.Counter[int] = collections.Counter()  # lengths of the recorded pieces
        self._lock = threading.Lock()
        self._framing_prefixes: list[tuple[int, ...]] = []  # set_template_framing
        self._framing_suffixes: list[tuple[int, ...]] = []

    def set_template_framing(self, before: Sequence[int], after: Sequence[int]) -> None:
        """The tokens a chat template puts before and after an assistant answer (template_framing.py).
        `lookup_run` strips them: any tail of `before` from the start of a run; any tail or head of
        `after` from its end (served ids may end with the end-of-turn token, history turns may lack the
        newline after it)."""
        before, after = tuple(int(t) for t in before), tuple(int(t) for t in after)
        self._framing_prefixes = sorted({before[i:] for i in range(len(before))}, key=len, reverse=True)
        self._framing_suffixes = sorted({after[i:] for i in range(len(after))} | {after[:i] for i in range(1, len(after) + 1)},
                                        key=len, reverse=True)

    def record(self, token_ids: Sequence[int] | np.ndarray, version: int) -> None:
        key = completion_key(token_ids)
        length = len(token_ids)
        if length == 0:
            return
        with self._lock:
            known = self._versions.get(key)
            if known is None:
                self._lengths[length] += 1
            else:
                # The same tokens served again (short, repetitive answers are): a group that posts them may
                # hold either serving, so it keeps the oldest version, which keeps the max_policy_lag bound
                # safe. Set again, the entry moves to the end of the FIFO.
                version = min(int(version), known[0])
            self._versions[key] = (int(version), length)

    def _forget_length(self, evicted: tuple[int, int]) -> None:
        length = evicted[1]
        self._lengths[length] -= 1
        if self._lengths[length] <= 0:
            del self._lengths[length]

    def lookup(self, token_ids: Sequence[int] | np.ndarray) -> int | None:
        with self._lock:
            found = self._versions.get(completion_key(token_ids))
        return None if found is None else found[0]

    def lookup_pieces(self, token_ids: Sequence[int] | np.ndarray) -> int | None:
        """The oldest version of the recorded pieces that make up `token_ids` back to back (one piece
        being the common case); None when they cannot be split into recorded pieces."""
        tokens = np.asarray(token_ids, dtype=np.int64)
        whole = self.lookup(tokens)
        if whole is not None or tokens.size == 0:
            return whole
        with self._lock:
            lengths = sorted((n for n, count in self._lengths.items() if count > 0 and n < tokens.size), reverse=True)
        oldest: int | None = None
        start = 0
        while start < tokens.size:  # greedy, longest recorded piece first
            for length in (tokens.size - start, *[n for n in lengths if n <= tokens.size - start]):
                version = self.lookup(tokens[start:start + length])
                if version is not None:
                    oldest = version if oldest is None else min(oldest, version)
                    start += length
                    break
            else:
                return None
        return oldest

    def lookup_run(self, token_ids: Sequence[int] | np.ndarray) -> int | None:
        """`lookup_pieces`, then the same with the chat template's framing stripped from the run's ends
        (the oldest version any of those finds)."""
        tokens = np.asarray(token_ids, dtype=np.int64)
        found = self.lookup_pieces(tokens)
        if found is not None or not (self._framing_prefixes or self._framing_suffixes):
            return found
        versions = []
        for prefix in ((), *self._framing_prefixes):
            if tuple(tokens[: len(prefix)].tolist()) != prefix:
                continue
            for suffix in ((), *self._framing_suffixes):
                inner = tokens[len(prefix): tokens.size - len(suffix)]
                if (prefix or suffix) and inner.size and tuple(tokens[tokens.size - len(suffix):].tolist()) == suffix:
                    version = self.lookup_pieces(inner)
                    if version is not None:
                        versions.append(version)
        return min(versions) if versions else None

    def __len__(self) -> int:
        return len(self._versions)
