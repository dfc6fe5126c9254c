"""Nothing lost on a crash: the trainer dies after pulling a batch and before training on it;
the resumed run trains that journaled batch first, at the right step, then goes on with Atropos."""

import numpy as np

from recipe.atropos.launcher.api_process import RunApiProcess
from recipe.atropos.source.batch_journal import BatchJournal
from recipe.atropos.examples.smoke_cpu import env_process, read_steps, run_to_end, trainer_process
from recipe.atropos.source.batch_source import FAULT_EXIT_AFTER_JOURNAL_ENV
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet

STEPS = 3
CRASH_STEP = 2


def run_trainer(tmp_path, model, data, url, extra, log_name):
    return run_to_end(trainer_process(model, data, url, tmp_path, STEPS, extra, log_name=log_name), timeout=600)


def test_batch_pulled_before_a_crash_is_trained_after_resume(tmp_path, tiny_model_dir):
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=32)
    journal = BatchJournal(tmp_path / "checkpoints" / "atropos_journal")
    with RunApiProcess(log_path=tmp_path / "run-api.log") as api, env_process(tiny_model_dir, api.url, tmp_path):
        crash = [f"+ray_kwargs.ray_init.runtime_env.env_vars.{FAULT_EXIT_AFTER_JOURNAL_ENV}='{CRASH_STEP}'",
                 "trainer.save_freq=1"]
        code = run_trainer(tmp_path, tiny_model_dir, data, api.url, crash, "trainer1.log")
        assert code != 0
        first = read_steps(tmp_path / "metrics.jsonl")
        assert [r["step"] for r in first] == [1]
        assert (tmp_path / "checkpoints" / "global_step_1").is_dir()
        assert journal.steps() == [CRASH_STEP]
        journaled = journal.load(CRASH_STEP)
        journaled_mean = float(np.mean([s for g in journaled for s in g["scores"]]))

        code = run_trainer(tmp_path, tiny_model_dir, data, api.url, ["trainer.save_freq=1"], "trainer2.log")
    log_tail = "\n".join((tmp_path / "trainer2.log").read_text(errors="replace").splitlines()[-30:])
    assert code == 0, log_tail
    resumed = read_steps(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [2, 3], log_tail  # the step count continues
    replayed, fresh = resumed[0]["data"], resumed[1]["data"]
    assert replayed["atropos/replayed"] == 1.0 and fresh["atropos/replayed"] == 0.0
    assert abs(replayed["atropos/mean_score"] - journaled_mean) < 1e-6  # the very batch that was pulled
    assert replayed["actor/grad_norm"] > 0
    assert fresh["atropos/registered_starting_step"] == 2.0  # registered with the steps already done
    assert journal.steps() == []  # covered by the final checkpoint
