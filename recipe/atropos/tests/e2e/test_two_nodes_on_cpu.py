"""The loop across a Ray cluster of two nodes, each with its own network stack (helpers/two_nodes.py):
node A (this namespace) runs the Ray head with no CPUs for work, run-api, the launcher, one
environment and, pinned there, the trainer's task runner with its policy server; node B (a network
namespace) runs a Ray worker holding the CPUs and the GPU slot, so verl's workers (FSDP actor, the
rollout replica that generates for the environments) run there, and a second environment the
launcher starts there through Ray (`node:`), which reaches run-api and the policy server on A by their
advertised addresses. Every step's data, weights and generations cross between the nodes. A loopback
address on B is not A: a trainer that lands on B with run-api on loopback stops with a message naming
the address instead of training."""

import os
import re
from pathlib import Path

import pytest
import yaml

from recipe.atropos.auth.ray_auth import RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_ENV, ray_token_auth_env
from recipe.atropos.auth.run_token import run_token, write_token_file
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.examples.tiny_model import build_tiny_qwen2
from recipe.atropos.launcher.api_process import RunApiProcess
from recipe.atropos.launcher.config import load_launcher_config
from recipe.atropos.launcher.services import run_services
from recipe.atropos.examples.smoke_cpu import trainer_process
from recipe.atropos.tests.helpers.launcher_helpers import DEMO_CONFIG
from recipe.atropos.tests.helpers.two_nodes import NODE_A, NODE_B, cannot_make_namespaces, two_nodes

pytestmark = [pytest.mark.multinode,
              pytest.mark.skipif(cannot_make_namespaces() is not None, reason=str(cannot_make_namespaces()))]

STEPS = 6
TRAINER_EXIT_S = 600.0


def joining(gcs: str) -> list[str]:
    """Trainer overrides that join the cluster instead of starting one (the CPU platform's local-cluster
    sizes are refused by ray.init when joining), as the driver on node A."""
    return [f"+ray_kwargs.ray_init.address={gcs}", f"+ray_kwargs.ray_init._node_ip_address={NODE_A}",
            "~ray_kwargs.ray_init.num_cpus", "~ray_kwargs.ray_init.num_gpus", "~ray_kwargs.ray_init._system_config"]


@pytest.fixture
def cluster(tmp_path):
    token_file = write_token_file(tmp_path / "run.token", run_token())  # the run's token, as on every node
    with two_nodes(tmp_path, token_file) as nodes:
        yield nodes
    assert nodes.left_running == []  # in either namespace, once the run and the Ray nodes stopped
    assert not nodes.exists()


def launcher_config_with_an_environment_on_b(tmp_path: Path, gcs: str) -> Path:
    """The demo's launcher YAML, its listeners open to node B (bound to every interface, advertised at
    A's address on the pair: the host's own address would not route from B), and a second copy of the
    `learnable` environment started on B."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["run_dir"] = str(tmp_path / "run")
    raw["api"].update(host="0.0.0.0", advertise_host=NODE_A)
    raw["ray_init"] = {"address": gcs, "_node_ip_address": NODE_A}  # the launcher joins as node A
    raw["environments"].append({**raw["environments"][0], "name": "learnable_on_b", "node": NODE_B})
    path = tmp_path / "launcher.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_loop_trains_across_two_nodes(tmp_path, cluster, capsys):
    model = build_tiny_qwen2(tmp_path / "tiny")
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=16)
    config = load_launcher_config(launcher_config_with_an_environment_on_b(tmp_path, cluster.gcs))
    ray_auth_before = {name: os.environ.get(name) for name in (RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_ENV)}
    result = run_services(config, [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
        f"trainer.total_training_steps={STEPS}", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        "trainer.atropos.fallback_to_grpo=false", "trainer.atropos_inference.host=0.0.0.0",
        f"trainer.atropos_inference.advertise_host={NODE_A}", *joining(cluster.gcs)])
    log = (result.run_dir / "logs" / "trainer.log").read_text(errors="replace")
    assert result.exit_code == 0, log[-3000:]
    steps = result.steps
    assert len(steps) == STEPS
    assert all(s["atropos/from_atropos"] == 1.0 for s in steps)
    assert all(s["atropos/policy_version_unknown_groups"] == 0 for s in steps)
    assert [s["atropos/inference/policy_version"] for s in steps] == list(range(1, STEPS + 1))
    assert steps[-1]["atropos/policy_version_min"] > steps[0]["atropos/policy_version_min"]
    assert all(s["atropos/policy_lag_max"] <= 2 for s in steps)  # demo config: max_policy_lag=2
    assert result.leftover_pids == []
    # Ray tags what an actor prints with its node's address when that is not the driver's node.
    assert printed_from("WorkerDict", log) == {NODE_B}, log[-3000:]  # verl's FSDP actor and rollout: on B
    assert printed_from("TaskRunner", log) == {"driver's node"}, log[-3000:]  # the trainer: on A
    # Both environments fed every step; the second one ran on B, told A's addresses.
    assert sorted(result.env_names.values()) == ["learnable", "learnable_on_b"]
    assert all(s["atropos/env_share/learnable_on_b"] > 0 and s["atropos/env_share/learnable"] > 0 for s in steps)
    # The launcher joined Ray with the run's token and gave this process its environment back.
    assert {name: os.environ.get(name) for name in ray_auth_before} == ray_auth_before
    printed = capsys.readouterr().out
    assert "env_learnable_on_b_0: env_id 1, pid " in printed and f"on node {NODE_B} (through Ray)" in printed
    assert re.search(rf"run-api: pid \d+ on this node, advertised at http://{NODE_A}:\d+", printed), printed
    assert re.search(rf"policy server advertised at http://{NODE_A}:\d+", printed), printed


def printed_from(actor: str, log: str) -> set[str]:
    return {match.group(1) or "driver's node" for match in re.finditer(rf"\({actor} pid=\d+(?:, ip=([\d.]+))?\)", log)}


def test_a_trainer_on_the_other_node_with_run_api_on_loopback_stops_naming_it(tmp_path, cluster):
    """verl's own entry does not pin the task runner: with no CPU on A, Ray starts it on B, where
    127.0.0.1 is B itself. The run stops naming the address; it never trains GRPO instead."""
    model = build_tiny_qwen2(tmp_path / "tiny")
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=16)
    with RunApiProcess(log_path=tmp_path / "run-api.log") as api:
        trainer = trainer_process(model, data, api.url, tmp_path, steps=3, entry="main_ppo", extra=[
            *joining(cluster.gcs), "trainer.atropos.max_wait_time=20", "trainer.atropos.retry_delay=0.5"])
        trainer.env.update(ray_token_auth_env(run_token(), "trainer.atropos.require_token"))  # what main_atropos sets
        with trainer:
            code = trainer.process.wait(timeout=TRAINER_EXIT_S)
    log = (tmp_path / "trainer.log").read_text(errors="replace")
    assert code != 0, log[-3000:]
    assert f"The Atropos API at {api.url} (trainer.atropos.api_url) has not answered since the run started" in log
    assert printed_from("TaskRunner", log) == {NODE_B}, log[-3000:]
    assert not (tmp_path / "metrics.jsonl").exists() or "training/global_step" not in (tmp_path / "metrics.jsonl").read_text()
