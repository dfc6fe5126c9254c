"""Groups trained so far, by identity: a group trained twice is counted, never silently repeated.

The journal and the group buffer are built so that each pulled group trains once (even across a
crash and resume); this window of group uids (given when a group is pulled from `/batch`, kept
through the journal) checks that at run time (`atropos/repeated_groups_total`). Identity, not
content: two equal groups from a deterministic environment are two groups. Bounded: the last
`window` groups of this process.
"""

from __future__ import annotations

from collections.abc import Iterable

from cachetools import LRUCache

from recipe.atropos.data.scored_group import ScoredGroup


class TrainedGroups:
    def __init__(self, window: int = 200_000) -> None:
        self._seen: LRUCache[str, None] = LRUCache(maxsize=window)
        self.repeated_total = 0

    def record(self, groups: Iterable[ScoredGroup]) -> int:
        """Remember the groups of a trained step; returns how many were already trained."""
        repeated = 0
        for group in groups:
            if group.uid in self._seen:
                repeated += 1
            self._seen[group.uid] = None  # (re)marks it as recently seen
        self.repeated_total += repeated
        return repeated
