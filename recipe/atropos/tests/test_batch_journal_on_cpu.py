"""The batch journal keeps every pulled batch until a checkpoint covers it."""

from recipe.atropos.batch_journal import BatchJournal


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
    a, b, c = ({"tokens": [[i, 2]], "masks": [[-100, 2]], "scores": [0.0]} for i in range(3))
    journal.record(1, [a])
    journal.save_buffer(1, [b, c])
    assert journal.load_buffer() == [b, c]
    journal.record(2, [b])  # crash before save_buffer(2): the saved buffer still holds b
    assert journal.load_buffer() == [c]


def test_prefetched_batch_is_loaded_once_whichever_file_holds_it(tmp_path):
    journal = BatchJournal(tmp_path / "j")
    a, b, c, d = ({"tokens": [[i, 2]], "masks": [[-100, 2]], "scores": [0.0]} for i in range(4))
    journal.save_buffer(1, [a, a])  # two equal groups are two groups
    journal.save_prefetched([b, c])  # crash while the batch waits for the trainer
    assert journal.load_buffer() == [a, a, b, c]
    journal.save_buffer(1, [a, a, b, c])  # crash after the trainer buffered it, before clear_prefetched
    assert journal.load_buffer() == [a, a, b, c]
    journal.record(2, [a, b])
    journal.save_buffer(2, [a, c])
    journal.clear_prefetched()
    journal.save_prefetched([d])
    assert journal.load_buffer() == [a, c, d]
    journal.clear_prefetched()
    assert journal.load_buffer() == [a, c]
