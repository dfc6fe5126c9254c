"""The CPU demo's loop with two environments, one slow to score (admission control's benchmark and test).

The demo's tiny Qwen2 on verl's hf_cpu replica, RayGRPOAtroposTrainer and real run-api, with two
`learnable` environments at weights 0.7 / 0.3: `fast`, and `slow`, which takes `delay_s` to score
each group after its completions come back. A step trains 10 groups of 4 (7 + 3 hold the weights
exactly); both environments generate up to `offpolicy_batches` batches ahead of the trainer
(`--env.max_batches_offpolicy`, Atropos's default 3), and the trainer drops groups more than
`max_policy_lag` updates old. `admission` switches trainer.atropos_inference.admission_control.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from recipe.atropos.examples.demo_cpu import DEMO_CONFIG, make_demo_inputs
from recipe.atropos.launcher.config import EnvSpec, load_launcher_config
from recipe.atropos.launcher.services import LaunchResult, run_services

WEIGHTS = {"fast": 0.7, "slow": 0.3}
GROUP_SIZE = 4
GROUPS_PER_STEP = 10


def fast_and_slow_environments(delay_s: float, offpolicy_batches: int) -> list[EnvSpec]:
    def env(name: str, extra: list[str]) -> EnvSpec:
        return EnvSpec(name=name, module="recipe.atropos.envs.learnable_env", weight=WEIGHTS[name],
                       group_size=GROUP_SIZE, max_token_length=64,
                       args=["--env.max_batches_offpolicy", str(offpolicy_batches), *extra])

    return [env("fast", []), env("slow", ["--env.score_delay_s", str(delay_s)])]


def run_fast_and_slow(workdir: Path, *, steps: int, admission: bool, delay_s: float, offpolicy_batches: int = 3,
                      max_policy_lag: int = 1, overrides: tuple[str, ...] = ()) -> LaunchResult:
    """One run in `workdir` (module docstring); the launcher's result, its step metrics included."""
    model, data = make_demo_inputs(workdir)
    config = load_launcher_config(DEMO_CONFIG, [f"run_dir={workdir / 'run'}"])
    config = dataclasses.replace(config, environments=fast_and_slow_environments(delay_s, offpolicy_batches))
    return run_services(config, [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
        f"trainer.total_training_steps={steps}", f"actor_rollout_ref.rollout.n={GROUP_SIZE}",
        f"data.train_batch_size={GROUPS_PER_STEP}", f"actor_rollout_ref.actor.ppo_mini_batch_size={GROUPS_PER_STEP}",
        "trainer.atropos.fallback_to_grpo=false", f"trainer.atropos.max_policy_lag={max_policy_lag}",
        f"trainer.atropos_inference.admission_control={str(admission).lower()}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}", *overrides,
    ])
