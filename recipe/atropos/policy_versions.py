"""Which policy version produced a completion, so the trainer can measure and bound policy lag.

Environments post token ids, not the responses of the inference server, so the version cannot
travel with the data through Atropos. The inference proxy records every completion it serves
under a digest of its token ids; the trainer, in the same process, looks up the completions of
each group it pulls. Version = the global step whose update the served weights contain (0: the
initial weights).
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Sequence

import numpy as np


def completion_key(token_ids: Sequence[int] | np.ndarray) -> bytes:
    """Digest of a completion's token ids (independent of list vs array, int width)."""
    return hashlib.blake2b(np.asarray(token_ids, dtype=np.int64).tobytes(), digest_size=16).digest()


class PolicyVersionRegistry:
    """Bounded, thread-safe map completion digest -> policy version; the oldest entries go first."""

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._versions: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._lock = threading.Lock()

    def record(self, token_ids: Sequence[int] | np.ndarray, version: int) -> None:
        key = completion_key(token_ids)
        with self._lock:
            self._versions[key] = int(version)
            self._versions.move_to_end(key)
            while len(self._versions) > self.capacity:
                self._versions.popitem(last=False)

    def lookup(self, token_ids: Sequence[int] | np.ndarray) -> int | None:
        with self._lock:
            return self._versions.get(completion_key(token_ids))

    def __len__(self) -> int:
        return len(self._versions)
