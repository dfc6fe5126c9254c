"""Valid Atropos groups pulled but not yet trained, so every step trains exactly one full batch.

`/batch` hands out exactly `batch_size` sequences, but some groups can be dropped on our side
(invalid, or older than `max_policy_lag`), and verl's mini-batching needs the full count. The
trainer tops a short step up from the next `/batch` and keeps what is left here for the
following steps (oldest first, groups never split).
"""

from __future__ import annotations

from collections.abc import Callable

from recipe.atropos.atropos_integration import AtroposBatch
from recipe.atropos.scored_group import ScoredGroup


class GroupBuffer:
    def __init__(self) -> None:
        self.entries: list[ScoredGroup] = []

    @property
    def sequences(self) -> int:
        return sum(group.size for group in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, batch: AtroposBatch) -> None:
        """The batch's valid groups, after those already buffered."""
        self.entries.extend(batch.groups)

    def remove_if(self, predicate: Callable[[ScoredGroup], bool]) -> list[ScoredGroup]:
        removed = [group for group in self.entries if predicate(group)]
        self.entries = [group for group in self.entries if not predicate(group)]
        return removed

    def take_exact(self, sequences: int) -> list[ScoredGroup] | None:
        """Groups adding up to exactly `sequences`, preferring the oldest, removed from the buffer;
        None (buffer unchanged) when no combination adds up."""
        # Subset sum over group sizes; each total keeps the first combination found, which is built
        # from the oldest groups that reach it.
        reachable: dict[int, list[int]] = {0: []}
        for position, group in enumerate(self.entries):
            for total, chosen in list(reachable.items()):
                new_total = total + group.size
                if new_total <= sequences and new_total not in reachable:
                    reachable[new_total] = [*chosen, position]
            if sequences in reachable:
                break
        chosen = reachable.get(sequences)
        if chosen is None:
            return None
        taken = [self.entries[position] for position in chosen]
        kept = set(range(len(self.entries))) - set(chosen)
        self.entries = [self.entries[position] for position in sorted(kept)]
        return taken

    def scored_data(self) -> list[dict]:
        """The buffered groups as ScoredData objects, for the journal."""
        return [group.to_scored_data() for group in self.entries]
