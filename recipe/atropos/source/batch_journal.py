"""Journal of Atropos batches: `/batch` pops data on the server, so a batch lives here from the
moment it is pulled until a checkpoint covers the step that trained on it.

Files `step_<N>.json` (the step's groups as ScoredData objects: the fields training reads),
written atomically before training. On resume from a checkpoint at step K, entries with step > K are
replayed first, in order. `buffer.json` holds the groups pulled but not yet assigned to a step, and
`prefetched.json` a batch the background poll pulled that the trainer has not taken yet (both loaded
back on resume). Each journaled group carries the `trainer_uid` it was given when pulled, which is
how a group is told from another with the same tokens.

A journal belongs to one run lineage (`owner.json`: a lineage id, project, experiment, and the last
checkpoint it covered); each checkpoint a run saves is marked with that id. `open_journal` gives a
run the journal only when it resumes the checkpoint the journal was written after; any other
journal is moved aside, named in a warning, and never trained.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger(__name__)

_ENTRY = re.compile(r"^step_(\d+)\.json$")
OWNER_FILE = "owner.json"
# Written into each checkpoint folder (global_step_N) before the checkpoint is saved.
CHECKPOINT_MARK = "atropos_journal_owner.json"
UID_KEY = "trainer_uid"


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
        in_steps = {group.get(UID_KEY) for step in self.steps() if step > after_step for group in self.load(step)}
        buffered = [group for group in buffered if not _uid_in(group, in_steps)]
        in_buffer = {group.get(UID_KEY) for group in buffered}
        return buffered + [group for group in prefetched if not _uid_in(group, in_steps | in_buffer)]

    def has_data(self) -> bool:
        return bool(self.steps()) or self._buffer_path.exists() or self._prefetched_path.exists()

    def _write(self, path: Path, raw_groups: Any) -> Path:
        """Atomic: a crash leaves either the old file or the whole new one."""
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

    def renumber(self, step: int, new_step: int) -> None:
        """Move the entry of `step` to `new_step` in one rename: a crash leaves exactly one of them."""
        if step != new_step:
            os.replace(self._path(step), self._path(new_step))

    def owner(self) -> JournalOwner | None:
        path = self.directory / OWNER_FILE
        if not path.exists():
            return None
        try:
            return JournalOwner(**orjson.loads(path.read_bytes()))
        except (orjson.JSONDecodeError, TypeError) as exc:
            logger.warning("unreadable journal owner record %s: %s", path, exc)
            return None

    def write_owner(self, owner: JournalOwner) -> None:
        self._write(self.directory / OWNER_FILE, dataclasses.asdict(owner))

    def mark_checkpoint(self, checkpoint_folder: str | Path, step: int) -> None:
        """Before saving the checkpoint of `step`: tag its folder with this journal's lineage."""
        owner = self._required_owner()
        folder = Path(checkpoint_folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._write(folder / CHECKPOINT_MARK, {"lineage_id": owner.lineage_id, "step": step})

    def checkpoint_saved(self, step: int) -> None:
        """After the checkpoint of `step` is saved: the lineage has a checkpoint at `step`."""
        self.write_owner(dataclasses.replace(self._required_owner(), checkpoint_step=step))

    def _required_owner(self) -> JournalOwner:
        owner = self.owner()
        if owner is None:
            raise RuntimeError(f"journal {self.directory} has no owner record: open it with open_journal()")
        return owner

    def covered(self, checkpoint_step: int) -> None:
        """A checkpoint at `checkpoint_step` holds everything trained up to it: drop those entries."""
        for step in self.steps():
            if step <= checkpoint_step:
                self._path(step).unlink(missing_ok=True)


def _uid_in(group: dict[str, Any], uids: set) -> bool:
    uid = group.get(UID_KEY)
    return uid is not None and uid in uids


@dataclasses.dataclass(frozen=True)
class JournalOwner:
    lineage_id: str  # kept by every run that resumes this lineage's checkpoints
    project: str
    experiment: str
    checkpoint_step: int  # the last checkpoint of the lineage (0: none yet)


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """The run opening a journal: what verl restored (`resumed_step`, 0 for a fresh start, and the
    checkpoint folder it came from) and how it was asked to resume."""

    project: str
    experiment: str
    resume_mode: str
    resumed_step: int
    checkpoint_folder: str | None


def _mismatch(owner: JournalOwner | None, run: RunIdentity) -> str | None:
    """Why the data of the journal `owner` wrote does not belong to this run (None: it does)."""
    if owner is None:
        return "it has no owner record (written by another version of this recipe)"
    if run.resume_mode == "disable":
        return "trainer.resume_mode=disable starts a new run"
    if run.resumed_step > 0:
        mark_path = Path(run.checkpoint_folder or "") / CHECKPOINT_MARK
        try:
            mark = orjson.loads(mark_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return f"the resumed checkpoint {run.checkpoint_folder} carries no journal mark ({CHECKPOINT_MARK})"
        if mark.get("lineage_id") != owner.lineage_id:
            return f"the resumed checkpoint {run.checkpoint_folder} was saved by another run"
        return None
    if (owner.project, owner.experiment) != (run.project, run.experiment):
        return (f"it belongs to experiment {owner.project}/{owner.experiment}, "
                f"this run is {run.project}/{run.experiment}")
    if owner.checkpoint_step > 0:
        return f"its run saved a checkpoint at step {owner.checkpoint_step}, and this run resumes none"
    return None


def open_journal(directory: str | Path, run: RunIdentity) -> tuple[BatchJournal, Path | None]:
    """The journal for `run`: the existing one when it belongs to the checkpoint being resumed (or to
    this experiment's earlier run that crashed before its first checkpoint), otherwise a fresh one,
    the old folder moved aside (returned, and named in a warning)."""
    directory = Path(directory)
    journal = BatchJournal(directory)
    owner = journal.owner()
    set_aside = None
    reason = _mismatch(owner, run)
    if reason is not None and journal.has_data():
        set_aside = directory.with_name(f"{directory.name}.set_aside.{time.strftime('%Y%m%d-%H%M%S')}.{uuid.uuid4().hex[:6]}")
        os.replace(directory, set_aside)
        logger.warning("Atropos journal %s not used and left on disk as %s: %s. Its batches are not trained; "
                       "resume the checkpoint it belongs to, or delete it.", directory, set_aside, reason)
        journal = BatchJournal(directory)
    lineage = owner.lineage_id if owner is not None and reason is None else uuid.uuid4().hex
    journal.write_owner(JournalOwner(lineage, run.project, run.experiment, run.resumed_step))
    return journal, set_aside


ASYNC_SAVE_KEYS = ("actor_rollout_ref.actor.checkpoint.async_save", "critic.checkpoint.async_save")


def check_checkpoints_are_synchronous(config: Any) -> None:
    """Raise ValueError naming the key when a checkpoint may be written in the background: the journal
    lets go of the batches a checkpoint covers as soon as verl's save returns, so a save still being
    written when a crash comes would lose them."""
    from omegaconf import OmegaConf

    for key in ASYNC_SAVE_KEYS:
        if OmegaConf.select(config, key, default=False):
            raise ValueError(
                f"{key}=true is not supported by the Atropos recipe: the batch journal drops the batches a "
                "checkpoint covers once the save returns, and an asynchronous save may not be on disk yet "
                f"(a crash would lose them). Set {key}=false.")
