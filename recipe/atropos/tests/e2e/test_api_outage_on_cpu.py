"""run-api killed (SIGKILL, by PID) for 30 s in the middle of a run, then started again on the same
port with empty state: the trainer either trains fallback steps (verl's GRPO on the local data) or
waits, bounded by max_wait_time, as configured; then registers again with starting_step = the steps
it has trained and goes on with Atropos batches. No crash, no step lost or repeated.

The environment process is stopped with the API and started again after it by hand (the launcher
does that for its environments, test_env_restart_on_cpu.py): a killed server forgets every
registration, so an environment must register anew."""

import os
import signal
import time

import pytest

from recipe.atropos.launcher.api_process import RunApiProcess, free_loopback_port
from recipe.atropos.examples.smoke_cpu import env_process, read_steps, trainer_process
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet

OUTAGE_S = 30.0
KILL_AFTER_STEP = 3

MODES = {
    # API unreachable -> a fallback step at once; each step checks the API again.
    "fallback": (24, ["trainer.atropos.max_wait_time=10"]),
    # No fallback: each poll waits up to max_wait_time for the API to come back (prefetch from the
    # start of each step: the background poll is the one in flight when the API dies).
    "bounded_wait": (8, ["trainer.atropos.fallback_to_grpo=false", "trainer.atropos.max_wait_time=90",
                         "trainer.atropos.prefetch=step"]),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_api_killed_mid_run_and_restarted_empty(tmp_path, tiny_model_dir, mode):
    steps_total, extra = MODES[mode]
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=32)
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    metrics = tmp_path / "metrics.jsonl"
    trainer = trainer_process(tiny_model_dir, data, url, tmp_path, steps_total,
                              ["trainer.atropos.retry_delay=0.2", "trainer.atropos.timeout=5", *extra])
    api = RunApiProcess(port=port, log_path=tmp_path / "run-api.log").start()
    env = env_process(tiny_model_dir, url, tmp_path).start()
    restarted_api = RunApiProcess(port=port, log_path=tmp_path / "run-api-restarted.log")
    second_env = env_process(tiny_model_dir, url, tmp_path)
    trainer.start()
    outage = {}
    try:
        deadline = time.monotonic() + 900
        while len(read_steps(metrics)) < KILL_AFTER_STEP:
            assert trainer.running() and time.monotonic() < deadline, (tmp_path / "trainer.log").read_text()[-3000:]
            time.sleep(0.2)
        os.kill(api.pid, signal.SIGKILL)
        env.stop()
        outage["killed_at_step"] = len(read_steps(metrics))
        time.sleep(OUTAGE_S)
        outage["restarted_at_step"] = len(read_steps(metrics))
        restarted_api.start()
        second_env.start()
        code = trainer.process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        trainer.stop()
        for process in (second_env, env, restarted_api, api):
            process.stop()
    log_tail = "\n".join((tmp_path / "trainer.log").read_text(errors="replace").splitlines()[-40:])
    assert code == 0, log_tail
    steps = [record["data"] for record in read_steps(metrics)]
    assert [s["training/global_step"] for s in steps] == list(range(1, steps_total + 1)), log_tail
    sources = [s["atropos/from_atropos"] for s in steps]
    killed = outage["killed_at_step"]
    assert all(sources[:killed]) and sources[-1] == 1.0
    # Registered again once the API answered: starting_step = the steps trained before that step.
    registered = [s["atropos/registered_starting_step"] for s in steps]
    again = next(i for i in range(killed, steps_total) if registered[i] != registered[killed - 1])
    assert registered[again] == again, registered
    back = next(i for i in range(again, steps_total) if sources[i] == 1.0)
    assert all(sources[back:]), sources  # Atropos batches from then on
    if mode == "fallback":
        fallback = [i for i, source in enumerate(sources) if source == 0.0]
        assert fallback and killed <= fallback[0] and fallback[-1] < back, sources
        assert steps[-1]["atropos/fallback_steps"] == len(fallback)
    else:
        assert all(sources), sources  # every step waited for Atropos instead
        # The background poll was the one in flight when the API died; the step that registered again
        # waited for the restarted environment's groups. How much of the outage the trainer spent
        # training groups pulled before the kill depends on the machine's speed, so no duration is
        # asserted: past max_wait_time (90 s) the step would have stopped the run (fallback_to_grpo=false),
        # which `code == 0` above rules out.
        assert "prefetch poll failed" in (tmp_path / "trainer.log").read_text(errors="replace")
        assert steps[again]["atropos/poll_exposed_wait_s"] > 0, steps[again]
