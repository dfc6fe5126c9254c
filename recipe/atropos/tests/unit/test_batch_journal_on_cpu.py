"""The batch journal keeps every pulled batch until a checkpoint covers it; groups are told apart by
the uid they got when pulled (never by content); a renumbered replay is one rename; a journal is used
only by the run that resumes the checkpoint it belongs to."""

import logging
import os
import pathlib

import pytest

from recipe.atropos.source.batch_journal import CHECKPOINT_MARK, BatchJournal, RunIdentity, open_journal


def group(uid, token=1):
    """A journaled group as the trainer writes it; equal `token`s make equal content."""
    return {"tokens": [[token, 2]], "masks": [[-100, 2]], "scores": [0.0], "trainer_uid": uid}


def test_record_pending_covered(tmp_path):
    journal = BatchJournal(tmp_path / "j")
    groups = {step: [{"tokens": [[step, 2]], "masks": [[-100, 2]], "scores": [0.5 * step]}] for step in (3, 4, 5)}
    for step, raw in groups.items():
        journal.record(step, raw)
    assert journal.steps() == [3, 4, 5]
    assert journal.load(4) == groups[4]
    assert journal.pending(after_step=3) == [4, 5]
    journal.covered(4)
    assert journal.steps() == [5]
    assert not list((tmp_path / "j").glob("*.tmp"))
    # a new journal object over the same folder (a resumed process) sees the same entries
    assert BatchJournal(tmp_path / "j").pending(after_step=0) == [5]
    journal.discard(5)
    assert journal.steps() == []


def test_buffer_saved_after_a_step_leaves_out_what_a_later_step_took(tmp_path):
    journal = BatchJournal(tmp_path / "j")
    a, b, c = group("a", 0), group("b", 1), group("c", 2)
    journal.record(1, [a])
    journal.save_buffer(1, [b, c])
    assert journal.load_buffer() == [b, c]
    journal.record(2, [b])  # crash before save_buffer(2): the saved buffer still holds b
    assert journal.load_buffer() == [c]


def test_equal_groups_from_a_deterministic_environment_are_two_groups(tmp_path):
    """Two groups with the same tokens and scores (a deterministic environment) pulled separately:
    when a step took one of them, the other is still buffered, not dropped as a repeat."""
    journal = BatchJournal(tmp_path / "j")
    first, second = group("first", 7), group("second", 7)
    journal.save_buffer(0, [first, second])
    journal.record(1, [first])  # crash before save_buffer(1)
    assert journal.load_buffer() == [second]


def test_prefetched_batch_is_loaded_once_whichever_file_holds_it(tmp_path):
    journal = BatchJournal(tmp_path / "j")
    a, a2, b, c, d = group("a", 0), group("a2", 0), group("b", 1), group("c", 2), group("d", 3)
    journal.save_buffer(1, [a, a2])  # two equal groups are two groups
    journal.save_prefetched([b, c])  # crash while the batch waits for the trainer
    assert journal.load_buffer() == [a, a2, b, c]
    journal.save_buffer(1, [a, a2, b, c])  # crash after the trainer buffered it, before clear_prefetched
    assert journal.load_buffer() == [a, a2, b, c]
    journal.record(2, [a, b])
    journal.save_buffer(2, [a2, c])
    journal.clear_prefetched()
    journal.save_prefetched([d])
    assert journal.load_buffer() == [a2, c, d]
    journal.clear_prefetched()
    assert journal.load_buffer() == [a2, c]


class CrashAt:
    """Fault injection for the crash window (a process death cannot be placed between two file
    operations from a test otherwise): every file rename or removal is recorded by name, and the k-th
    raises instead of running (`crashed` then says it did; k=None: none raises)."""

    def __init__(self, monkeypatch, k):
        self.k, self.operations, self.crashed = k, [], False
        for owner, name in ((os, "replace"), (os, "rename"), (os, "remove"), (os, "unlink"), (pathlib.Path, "unlink"),
                            (pathlib.Path, "rename"), (pathlib.Path, "replace")):
            monkeypatch.setattr(owner, name, self._wrap(f"{owner.__name__}.{name}", getattr(owner, name)))

    def _wrap(self, label, original):
        def operation(*args, **kwargs):
            self.operations.append(label)
            if len(self.operations) == self.k:
                self.crashed = True
                raise SystemExit(f"crash at file operation {self.k} ({label})")
            return original(*args, **kwargs)

        return operation


# The file operations of a renumbered replay, in order: the one rename of `BatchJournal.renumber`
# (the no-crash case checks that this is all of them, so each crash case below really crashes).
REPLAY_OPERATIONS = ["os.replace"]


@pytest.mark.parametrize("crash_at", [*range(1, len(REPLAY_OPERATIONS) + 1), None],
                         ids=[*(f"{k}-{name}" for k, name in enumerate(REPLAY_OPERATIONS, 1)), "no_crash"])
def test_a_renumbered_replay_is_journaled_exactly_once_whenever_the_trainer_dies(tmp_path, monkeypatch, crash_at):
    """Resumed at step 6 with entries 7 and 9 (step 8 fell back to GRPO): entry 9 replays as step 8.
    Whichever file operation the trainer dies at (or none), the batch is in exactly one entry
    afterwards, so the next resume trains it once."""
    from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
    from recipe.atropos.source.batch_source import AtroposBatchSource, Registration

    journal = BatchJournal(tmp_path / "j")
    batch = [group("g9", 9)]
    journal.record(7, [group("g7", 7)])
    journal.record(9, batch)
    source = AtroposBatchSource(AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"}),
                                Registration(batch_size=2, max_token_len=64, num_steps=10))
    source.journal, source.replay_steps = journal, [9]  # only the replay path: no server
    replayed = None
    with monkeypatch.context() as patch:
        crash = CrashAt(patch, crash_at)
        try:
            replayed = source._replayed_batch(8)
        except SystemExit:
            pass
    if crash_at is None:
        assert crash.operations == REPLAY_OPERATIONS, "the replay's file operations changed: update REPLAY_OPERATIONS"
        assert not crash.crashed and [g.tokens.tolist() for g in replayed.groups] == [[9, 2]]
    else:
        assert crash.crashed and crash.operations == REPLAY_OPERATIONS[:crash_at]  # died at that operation
    holding = [step for step in journal.steps() if journal.load(step)[0]["trainer_uid"] == "g9"]
    assert len(holding) == 1, holding


def run(resumed_step=0, folder=None, mode="auto", experiment="exp"):
    return RunIdentity(project="proj", experiment=experiment, resume_mode=mode, resumed_step=resumed_step,
                       checkpoint_folder=str(folder) if folder else None)


def earlier_run_with_checkpoint(tmp_path, checkpoint_step=5):
    """A run that checkpointed at `checkpoint_step`, then pulled step checkpoint_step+1 and died."""
    journal, _ = open_journal(tmp_path / "j", run())
    folder = tmp_path / f"global_step_{checkpoint_step}"
    journal.mark_checkpoint(folder, checkpoint_step)
    journal.checkpoint_saved(checkpoint_step)
    journal.covered(checkpoint_step)
    journal.record(checkpoint_step + 1, [group("pulled")])
    journal.save_buffer(checkpoint_step + 1, [group("left")])
    return folder


def test_resuming_the_journals_checkpoint_replays_it(tmp_path):
    folder = earlier_run_with_checkpoint(tmp_path)
    journal, set_aside = open_journal(tmp_path / "j", run(resumed_step=5, folder=folder))
    assert set_aside is None
    assert journal.pending(after_step=5) == [6] and journal.load_buffer() == [group("left")]


@pytest.mark.parametrize("new_run", ["resume_mode_disable", "other_experiment", "checkpoint_of_another_run",
                                     "no_checkpoint_after_one_was_saved"])
def test_a_journal_that_does_not_match_is_set_aside_named_and_never_trained(tmp_path, caplog, new_run):
    folder = earlier_run_with_checkpoint(tmp_path)
    other = tmp_path / "other" / "global_step_5"
    if new_run == "checkpoint_of_another_run":
        other_journal, _ = open_journal(tmp_path / "other" / "j", run())
        other_journal.mark_checkpoint(other, 5)
    identity = {
        "resume_mode_disable": run(mode="disable"),
        "other_experiment": run(experiment="new"),
        "checkpoint_of_another_run": run(resumed_step=5, folder=other),
        "no_checkpoint_after_one_was_saved": run(),
    }[new_run]
    with caplog.at_level(logging.WARNING):
        journal, set_aside = open_journal(tmp_path / "j", identity)
    assert journal.steps() == [] and journal.load_buffer() == []
    assert set_aside is not None and str(set_aside) in caplog.text
    assert BatchJournal(set_aside).steps() == [6]  # left on disk, untouched
    assert (folder / CHECKPOINT_MARK).exists()


def test_a_crash_before_the_first_checkpoint_is_replayed_by_the_same_experiment_only(tmp_path):
    journal, _ = open_journal(tmp_path / "j", run())
    journal.record(1, [group("first")])
    same, set_aside = open_journal(tmp_path / "j", run())
    assert set_aside is None and same.pending(after_step=0) == [1]
    _, set_aside = open_journal(tmp_path / "j", run(experiment="another"))
    assert set_aside is not None and BatchJournal(set_aside).steps() == [1]


@pytest.mark.parametrize("key", ["actor_rollout_ref.actor.checkpoint.async_save", "critic.checkpoint.async_save"])
def test_asynchronous_checkpoints_stop_the_trainer_naming_the_key(small_trainer_config, key):
    """The journal drops what a checkpoint covers once verl's save returns: a save still being written
    in the background could lose those batches in a crash, so the setting is refused."""
    from recipe.atropos.atropos_ray_trainer import RayGRPOAtroposTrainer

    config = small_trainer_config(f"{key}=true")
    with pytest.raises(ValueError, match=rf"{key}=true is not supported by the Atropos recipe"):
        RayGRPOAtroposTrainer(config=config, tokenizer=None, role_worker_mapping={}, resource_pool_manager=None)
