"""The separated topology's pieces (the whole loop runs in e2e/test_separated_topology_on_cpu.py):

- verl_patches' `ray` checkpoint engine carries a trained state dict from the actor's rank 0, through
  Ray's object store, into a real hf_cpu replica (its server adapter reading the engine's async
  stream, as verl's CheckpointEngineWorker hands it over), in several buckets, while another actor
  rank only drains its stream; a receiver waiting for a push that never comes gives up, naming it;
- the trainer's layout: verl's colocated roles become separation's actor (and reference) roles on
  the same pool, and settings the layout cannot honour stop the run naming the key.
"""

import asyncio
from types import SimpleNamespace

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM
from verl.checkpoint_engine import CheckpointEngineRegistry
from verl.trainer.ppo.utils import Role
from verl.utils.import_utils import import_external_libs

from recipe.atropos.env_reference import build_without_reference_model
from recipe.atropos.separated_ray_trainer import check_separated_config, separate_rollout_roles
from verl_patches.hf_cpu_rollout import HFCPUServer, HFCPUServerAdapter, server_actor_name
from verl_patches.ray_checkpoint_engine import BACKEND_NAME, RayObjectStoreCheckpointEngine

BUCKET_BYTES = 256 << 10  # small enough that the tiny model's weights take several buckets
SEPARATED = ("+topology=separated", "actor_rollout_ref.rollout.checkpoint_engine.backend=ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def trained_state(model_dir) -> tuple[dict[str, torch.Tensor], float]:
    """The tiny model's weights after a pretend update (every parameter moved), and their checksum as
    HFCPUServer.parameter_checksum computes it."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
        checksum = float(sum(p.double().sum() for p in model.parameters()))
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}, checksum


def test_the_ray_backend_registers_where_verl_imports_custom_backend_module():
    import_external_libs("verl_patches.ray_checkpoint_engine")
    assert CheckpointEngineRegistry.get(BACKEND_NAME) is RayObjectStoreCheckpointEngine


def test_trained_weights_reach_an_hf_cpu_replica_through_the_object_store(local_ray, tiny_model_dir):
    model_config = SimpleNamespace(local_path=str(tiny_model_dir), path=str(tiny_model_dir))
    rollout_config = SimpleNamespace(prompt_length=32, response_length=8, max_model_len=None, seed=0,
                                     tensor_model_parallel_size=1, data_parallel_size=1, pipeline_model_parallel_size=1)
    server = ray.remote(HFCPUServer).options(name=server_actor_name(0), num_cpus=0).remote(rollout_config, model_config, 0)
    before = ray.get(server.parameter_checksum.remote())
    state, expected = trained_state(tiny_model_dir)
    drained = []

    def second_rank_stream():  # what another FSDP rank yields: the same names, which it only drains
        for name, tensor in state.items():
            drained.append(name)
            yield name, tensor

    actor_side, rollout_side = RayObjectStoreCheckpointEngine.build_topology(2, 1, [{}, {}, {}])
    master = RayObjectStoreCheckpointEngine(BUCKET_BYTES, is_master=True)
    other_rank = RayObjectStoreCheckpointEngine(BUCKET_BYTES, is_master=False)
    receiver = RayObjectStoreCheckpointEngine(BUCKET_BYTES)
    for engine, board in ((master, actor_side["board"][0]), (other_rank, actor_side["board"][1]),
                          (receiver, rollout_side["board"][0])):
        engine.init_process_group(board=board)
    adapter = HFCPUServerAdapter(rollout_config, model_config, device_mesh=None, replica_rank=0)

    async def push():
        return await asyncio.gather(master.send_weights(iter(state.items()), global_steps=3),
                                    other_rank.send_weights(second_rank_stream(), global_steps=3),
                                    adapter.update_weights(receiver.receive_weights(global_steps=3), global_steps=3))

    sent, other_sent, _ = asyncio.run(push())
    for engine in (master, other_rank, receiver):
        engine.finalize()

    assert sent["checkpoint_engine/tensors"] == len(state) and sent["checkpoint_engine/buckets"] > 1
    assert other_sent == {} and drained == list(state)
    # The replica serves the pushed weights, tagged with the step that produced them.
    assert ray.get(server.stats.remote()) == {"global_steps": 3, "weight_updates": 1}
    served = ray.get(server.parameter_checksum.remote())
    assert served == pytest.approx(expected, rel=1e-9) and served != pytest.approx(before, rel=1e-9)


def test_a_receiver_waiting_for_a_push_that_never_comes_names_what_it_waited_for(local_ray):
    _, rollout_side = RayObjectStoreCheckpointEngine.build_topology(1, 1, [{}, {}])
    receiver = RayObjectStoreCheckpointEngine(BUCKET_BYTES, timeout_s=1.0)
    receiver.init_process_group(board=rollout_side["board"][0])

    async def receive():
        return [item async for item in receiver.receive_weights(global_steps=1)]

    with pytest.raises(TimeoutError, match=r"bucket 0 of the weight push did not arrive within 1 s"):
        asyncio.run(receive())


def test_the_colocated_roles_become_separations_actor_and_reference_on_the_same_pool():
    from verl.experimental.separation.engine_workers import DetachActorWorker

    roles = {Role.ActorRolloutRef: object()}
    pools = SimpleNamespace(mapping={Role.ActorRolloutRef: "global_pool"})
    separate_rollout_roles(roles, pools)
    assert set(roles) == {Role.Actor, Role.RefPolicy}
    assert all(worker.__ray_actor_class__ is DetachActorWorker for worker in roles.values())
    assert pools.mapping == {Role.Actor: "global_pool", Role.RefPolicy: "global_pool"}
    # env_ref_logprobs_only: the reference's own role is dropped, so no worker loads its weights.
    assert build_without_reference_model(roles, pools)
    assert set(roles) == {Role.Actor} and pools.mapping == {Role.Actor: "global_pool"}


def test_the_separated_preset_composes_and_names_its_trainer(small_trainer_config):
    config = small_trainer_config(*SEPARATED)
    assert config.trainer_cls == "recipe.atropos.separated_ray_trainer.SeparatedAtroposTrainer"
    check_separated_config(config)
    gpu_default = small_trainer_config("+topology=separated")  # verl's NCCL transport on GPUs
    assert gpu_default.actor_rollout_ref.rollout.checkpoint_engine.backend == "nccl"
    assert gpu_default.actor_rollout_ref.rollout.n_gpus_per_node == gpu_default.trainer.n_gpus_per_node
    check_separated_config(gpu_default)


@pytest.mark.parametrize(("override", "message"), [
    ("actor_rollout_ref.hybrid_engine=true", r"set actor_rollout_ref\.hybrid_engine=false"),
    ("actor_rollout_ref.rollout.nnodes=0", r"actor_rollout_ref\.rollout\.nnodes \(0\)"),
    ("actor_rollout_ref.rollout.checkpoint_engine.backend=naive", r"checkpoint_engine\.backend=naive"),
])
def test_settings_the_separated_layout_cannot_honour_stop_the_run_naming_the_key(small_trainer_config, override, message):
    with pytest.raises(ValueError, match=message):
        check_separated_config(small_trainer_config(*SEPARATED, override))
