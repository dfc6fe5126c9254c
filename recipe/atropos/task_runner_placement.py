"""verl's TaskRunner on the driver's node: where the launcher, run-api and the run's files are.

verl's `TaskRunner` (the trainer, with its policy server) is a plain Ray actor, so in a cluster Ray
may start it on any node. The launcher and the trainer hand over the policy server's endpoint, the
environments' names and the step metrics as files in the run directory, and the trainer's default
`trainer.atropos.api_url` is run-api on loopback: both hold only on the driver's node. `run_ppo`'s
`task_runner_class` hook takes this wrapper, which places the runner there (a hard node affinity)
and asks no CPU of that node for it, so a head node that keeps its CPUs out of the cluster's work
(verl's advice) still hosts it; verl's workers go wherever their resource pools fit.
"""

from __future__ import annotations

from typing import Any


class OnDriverNode:
    """An actor class whose actors start on the node of the process that creates them."""

    def __init__(self, actor_class: Any) -> None:
        self.actor_class = actor_class

    def options(self, **options: Any) -> Any:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        return self.actor_class.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
                                        num_cpus=0, **options)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.options().remote(*args, **kwargs)
