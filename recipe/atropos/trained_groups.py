"""Groups trained so far, by content: a group trained twice is counted, never silently repeated.

The journal and the group buffer are built so that each pulled group trains once (even across a
crash and resume); this window of content fingerprints (token ids and sequence lengths) checks that
at run time (`atropos/repeated_groups_total`). Bounded: the last `window` groups of this process.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Iterable

from recipe.atropos.scored_group import ScoredGroup


def fingerprint(group: ScoredGroup) -> bytes:
    digest = hashlib.blake2b(group.lengths.tobytes(), digest_size=16)
    digest.update(group.tokens.tobytes())
    return digest.digest()


class TrainedGroups:
    def __init__(self, window: int = 200_000) -> None:
        self.window = window
        self._seen: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.repeated_total = 0

    def record(self, groups: Iterable[ScoredGroup]) -> int:
        """Remember the groups of a trained step; returns how many were already trained."""
        repeated = 0
        for group in groups:
            key = fingerprint(group)
            if key in self._seen:
                repeated += 1
                self._seen.move_to_end(key)
            else:
                self._seen[key] = None
                if len(self._seen) > self.window:
                    self._seen.popitem(last=False)
        self.repeated_total += repeated
        return repeated
