"""Valid Atropos groups pulled but not yet trained, so every step trains exactly one full batch.

`/batch` hands out exactly `batch_size` sequences, but some groups can be dropped on our side
(invalid, or older than `max_policy_lag`), and verl's mini-batching needs the full count. The
trainer tops a short step up from the next `/batch` and keeps what is left here for the
following steps (oldest first, groups never split). Bounded: a group that has waited more than
`max_age_steps` steps, or that would make the buffer hold more than `max_groups`, is dropped
(oldest first) and reported, so a group that never fits an exact step cannot wait forever.
"""

from __future__ import annotations

from collections.abc import Callable

from recipe.atropos.data.scored_group import AtroposBatch, ScoredGroup
from recipe.atropos.source.step_drops import BUFFER_AGE, BUFFER_SIZE


def _exact_subset(sizes: list[int], target: int) -> list[int] | None:
    """Positions of sizes adding up to exactly `target`, built from the oldest (lowest positions)
    that reach it; None when no combination does."""
    reachable: dict[int, list[int]] = {0: []}
    for position, size in enumerate(sizes):
        for total, chosen in list(reachable.items()):
            new_total = total + size
            if new_total <= target and new_total not in reachable:
                reachable[new_total] = [*chosen, position]
        if target in reachable:
            break
    return reachable.get(target)


class GroupBuffer:
    def __init__(self, max_groups: int | None = None, max_age_steps: int | None = None) -> None:
        self.entries: list[ScoredGroup] = []
        self.max_groups = max_groups
        self.max_age_steps = max_age_steps
        self._added_at: dict[str, int] = {}  # group uid -> step at which it was buffered

    @property
    def sequences(self) -> int:
        return sum(group.size for group in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, batch: AtroposBatch, step: int = 0) -> None:
        """The batch's valid groups, after those already buffered; `step` is when they arrive."""
        for group in batch.groups:
            self._added_at.setdefault(group.uid, step)
        self.entries.extend(batch.groups)

    def remove_if(self, predicate: Callable[[ScoredGroup], bool]) -> list[ScoredGroup]:
        removed = [group for group in self.entries if predicate(group)]
        self.entries = [group for group in self.entries if not predicate(group)]
        for group in removed:
            self._added_at.pop(group.uid, None)
        return removed

    def drop_over_bounds(self, step: int) -> list[tuple[ScoredGroup, str, str]]:
        """Remove the groups past the bounds at `step`: older than max_age_steps, then the oldest
        beyond max_groups. Each with its reason (a step_drops key) and why, in words."""
        dropped: list[tuple[ScoredGroup, str, str]] = []
        if self.max_age_steps is not None:
            limit = self.max_age_steps
            for group in self.remove_if(lambda g: step - self._added_at.get(g.uid, step) > limit):
                dropped.append((group, BUFFER_AGE, f"waited more than trainer.atropos.max_buffer_age_steps={limit} steps for "
                                       "a step it fits exactly"))
        if self.max_groups is not None and len(self.entries) > self.max_groups:
            excess = {id(group) for group in self.entries[: len(self.entries) - self.max_groups]}
            for group in self.remove_if(lambda g: id(g) in excess):
                dropped.append((group, BUFFER_SIZE, f"the buffer holds more than trainer.atropos.max_buffered_groups="
                                       f"{self.max_groups} groups (oldest dropped)"))
        return dropped

    def can_fill(self, sequences: int) -> bool:
        """Whether `take_exact(sequences)` would find a selection (the buffer unchanged)."""
        return _exact_subset([group.size for group in self.entries], sequences) is not None

    def take_exact(self, sequences: int) -> list[ScoredGroup] | None:
        """Groups adding up to exactly `sequences`, preferring the oldest, removed from the buffer;
        None (buffer unchanged) when no combination adds up."""
        chosen = _exact_subset([group.size for group in self.entries], sequences)
        if chosen is None:
            return None
        taken = [self.entries[position] for position in chosen]
        kept = set(range(len(self.entries))) - set(chosen)
        self.entries = [self.entries[position] for position in sorted(kept)]
        for group in taken:
            self._added_at.pop(group.uid, None)
        return taken

    def scored_data(self) -> list[dict]:
        """The buffered groups as ScoredData objects, for the journal."""
        return [group.to_scored_data() for group in self.entries]
