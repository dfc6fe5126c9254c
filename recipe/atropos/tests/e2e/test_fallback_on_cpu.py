"""Fallback to standard GRPO, asked for from the start (`fallback_before_api_reached`): the Atropos
API is down at start and comes up after step 1.

Step 1 trains on the local dataset through verl's own rollout (hf_cpu); once the API answers, the
trainer registers and the following steps train on the environment's groups. Without the setting a
run waits for an API it never reached and then stops (test_batch_source_on_cpu.py)."""

import time

from recipe.atropos.launcher.api_process import RunApiProcess, free_loopback_port
from recipe.atropos.examples.smoke_cpu import env_process, read_steps, run_to_end, trainer_process
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet

STEPS = 4


def test_api_down_at_start_then_up(tmp_path, tiny_model_dir):
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=32)
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    trainer = trainer_process(tiny_model_dir, data, url, tmp_path, STEPS,
                              ["trainer.atropos.retry_delay=0.2", "trainer.atropos.max_wait_time=120",
                               "trainer.atropos.fallback_before_api_reached=true"]).start()
    api = RunApiProcess(port=port, log_path=tmp_path / "run-api.log")
    env = env_process(tiny_model_dir, url, tmp_path)
    try:
        deadline = time.monotonic() + 600
        while not read_steps(tmp_path / "metrics.jsonl") and trainer.running() and time.monotonic() < deadline:
            time.sleep(0.5)
        api.start()
        env.start()
        code = trainer.process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        trainer.stop()
        env.stop()
        api.stop()
    log_tail = "\n".join((tmp_path / "trainer.log").read_text(errors="replace").splitlines()[-30:])
    assert code == 0, log_tail
    steps = [r["data"] for r in read_steps(tmp_path / "metrics.jsonl")]
    assert len(steps) == STEPS, log_tail
    sources = [s["atropos/from_atropos"] for s in steps]
    assert sources[0] == 0.0 and steps[0]["atropos/fallback_steps"] == 1.0
    assert sources[-1] == 1.0
    first_atropos = sources.index(1.0)
    assert all(sources[first_atropos:]), sources  # once Atropos answers, every step uses it
    assert steps[-1]["atropos/fallback_steps"] == first_atropos
    # the fallback step really ran verl's rollout on the local prompts
    assert steps[0]["response_length/mean"] > 0 and "timing_s/gen" in steps[0]


def test_without_fallback_an_api_that_sends_no_batch_stops_the_run_naming_the_setting(tmp_path, tiny_model_dir, run_api):
    """The API answers but no environment sends anything: the run stops, it never trains a fallback step."""
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=32)
    no_fallback = ["trainer.atropos.fallback_to_grpo=false", "trainer.atropos.max_wait_time=5"]
    code = run_to_end(trainer_process(tiny_model_dir, data, run_api.url, tmp_path, 2, no_fallback), timeout=600)
    log = (tmp_path / "trainer.log").read_text(errors="replace")
    assert code != 0
    assert "No Atropos batch within trainer.atropos.max_wait_time=5s" in log
    assert "fallback_to_grpo is false: stopping at step 1" in log
    assert not read_steps(tmp_path / "metrics.jsonl")
