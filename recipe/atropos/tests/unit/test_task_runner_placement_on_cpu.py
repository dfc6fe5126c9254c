"""The trainer's task runner starts on the driver's node, where the launcher, run-api and the run's
files are, also when that node keeps its CPUs out of the cluster's work (verl's advice for a head):
a real two-node Ray cluster on this machine (ray.cluster_utils.Cluster: a raylet per node), the head
with no CPUs, and verl's real TaskRunner (with verl_patches' trainer_cls support) as run_atropos
hands it to run_ppo."""

import ray
from ray.cluster_utils import Cluster

from recipe.atropos.task_runner_placement import OnDriverNode

PLACED_S = 120.0


def node_of(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()), timeout=PLACED_S)


def test_the_task_runner_starts_on_the_drivers_node_with_no_cpu_there():
    import verl_patches  # noqa: F401  (patches verl's TaskRunner as in the trainer's driver)
    from verl.trainer.main_ppo_v0 import TaskRunner

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        driver_node = ray.get_runtime_context().get_node_id()
        assert driver_node == cluster.head_node.node_id != worker.node_id
        assert node_of(OnDriverNode(TaskRunner).remote()) == driver_node
        # Without the placement Ray starts it where a CPU is free: on the other node.
        assert node_of(TaskRunner.remote()) == worker.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()
