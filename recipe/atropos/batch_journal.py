"""Journal of Atropos batches: `/batch` pops data on the server, so a batch lives here from the
moment it is pulled until a checkpoint covers the step that trained on it.

Files `step_<N>.json` (the step's groups as ScoredData objects: the fields training reads),
written atomically before training. On resume from a checkpoint at step K, entries with step > K are
replayed first, in order. `buffer.json` holds the groups pulled but not yet assigned to a step, and
`prefetched.json` a batch the background poll pulled that the trainer has not taken yet (both loaded
back on resume).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson

_ENTRY = re.compile(r"^step_(\d+)\.json$")


class BatchJournal:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, step: int) -> Path:
        return self.directory / f"step_{step:09d}.json"

    def steps(self) -> list[int]:
        found = (_ENTRY.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def record(self, step: int, raw_groups: list[dict[str, Any]]) -> Path:
        """Write the batch for `step` (atomic: a crash leaves either no file or a whole one)."""
        return self._write(self._path(step), raw_groups)

    @property
    def _buffer_path(self) -> Path:
        return self.directory / "buffer.json"

    def save_buffer(self, after_step: int, raw_groups: list[dict[str, Any]]) -> None:
        """The groups pulled but not yet assigned to a step (the trainer's GroupBuffer), written
        right after `record(after_step, ...)`."""
        self._write(self._buffer_path, {"after_step": after_step, "groups": raw_groups})

    @property
    def _prefetched_path(self) -> Path:
        return self.directory / "prefetched.json"

    def save_prefetched(self, raw_groups: list[dict[str, Any]]) -> None:
        """A batch pulled ahead by the background poll, until the trainer buffers it (`clear_prefetched`)."""
        self._write(self._prefetched_path, raw_groups)

    def clear_prefetched(self) -> None:
        """Called once `save_buffer` holds the prefetched batch's groups."""
        self._prefetched_path.unlink(missing_ok=True)

    def load_buffer(self) -> list[dict[str, Any]]:
        """The saved buffer, then a prefetched batch not taken yet. A crash between `record(N)` and
        `save_buffer(N)` leaves the buffer of step N-1, which still holds groups that step N took, and a
        crash between `save_buffer` and `clear_prefetched` leaves a batch in both files: groups already
        in a later step or in the buffer are left out (each replays or trains once)."""
        buffered: list[dict[str, Any]] = []
        after_step = -1
        if self._buffer_path.exists():
            saved = orjson.loads(self._buffer_path.read_bytes())
            buffered, after_step = saved["groups"], saved["after_step"]
        prefetched = orjson.loads(self._prefetched_path.read_bytes()) if self._prefetched_path.exists() else []
        in_steps = {orjson.dumps(group) for step in self.steps() if step > after_step for group in self.load(step)}
        buffered = [group for group in buffered if orjson.dumps(group) not in in_steps]
        in_buffer = {orjson.dumps(group) for group in buffered}
        return buffered + [group for group in prefetched if orjson.dumps(group) not in in_steps | in_buffer]

    def _write(self, path: Path, raw_groups: Any) -> Path:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(orjson.dumps(raw_groups, option=orjson.OPT_SERIALIZE_NUMPY))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def load(self, step: int) -> list[dict[str, Any]]:
        return orjson.loads(self._path(step).read_bytes())

    def pending(self, after_step: int) -> list[int]:
        """Steps journaled but not covered by the checkpoint at `after_step`, oldest first."""
        return [step for step in self.steps() if step > after_step]

    def discard(self, step: int) -> None:
        self._path(step).unlink(missing_ok=True)

    def covered(self, checkpoint_step: int) -> None:
        """A checkpoint at `checkpoint_step` holds everything trained up to it: drop those entries."""
        for step in self.steps():
            if step <= checkpoint_step:
                self._path(step).unlink(missing_ok=True)
