import pytest

from recipe.atropos.auth.run_token import ensure_run_token
from recipe.atropos.launcher.api_process import RunApiProcess

# One token for the test session, as the launcher makes one per run: every run-api, trainer and
# environment a test starts inherits it through the environment, and every client of ours sends it.
ensure_run_token()


@pytest.fixture
def run_api(tmp_path):
    """A real atroposlib `run-api` on a free loopback port, stopped by PID afterwards."""
    server = RunApiProcess(log_path=tmp_path / "run-api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random Qwen2 with the real Qwen tokenizer, built once per test session."""
    from recipe.atropos.examples.tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def arithmetic_parquet(tmp_path_factory):
    """verl's RL parquet format, GSM8K-style problems from a seeded generator."""
    from recipe.atropos.examples.local_dataset import write_arithmetic_parquet

    return write_arithmetic_parquet(tmp_path_factory.mktemp("data") / "train.parquet", n=16)


@pytest.fixture
def small_trainer_config(tiny_model_dir, arithmetic_parquet):
    """The recipe's gsm8k_grpo_example config composed with sizes for the tiny model on CPU."""
    import os

    from hydra import compose, initialize_config_dir

    config_dir = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "config"))

    def make(*overrides):
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            return compose(
                "gsm8k_grpo_example",
                overrides=[
                    "trainer.total_training_steps=1",
                    f"actor_rollout_ref.model.path={tiny_model_dir}",
                    "actor_rollout_ref.rollout.name=vllm",
                    f"data.train_files={arithmetic_parquet}",
                    f"data.val_files={arithmetic_parquet}",
                    "data.train_batch_size=4",
                    "data.max_prompt_length=64",
                    "data.max_response_length=32",
                    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
                    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
                    "trainer.n_gpus_per_node=1",
                    "trainer.nnodes=1",
                    *overrides,
                ],
            )

    return make


@pytest.fixture
def policy_server(tiny_model_dir):
    """The trainer's policy server (real HTTP app and proxy) over verl_patches' real HFCPUServer with
    the tiny Qwen2, in-process instead of as a Ray actor (the proxy calls the same methods either way)."""
    from recipe.atropos.tests.helpers.policy_server_helpers import serving

    with serving(tiny_model_dir) as served:
        yield served
