"""`learnable` on a task the model always fails: every completion scores 0 and atroposlib's
`ensure_scores_are_not_same` (on here, its default) drops every group, so the environment stays
alive, generates through the policy server and sends nothing (the silent-environment test)."""

from recipe.atropos.envs.learnable_env import LearnableEnv


class HopelessEnv(LearnableEnv):
    name = "hopeless"

    @classmethod
    def config_init(cls):
        config, servers = super().config_init()
        config.ensure_scores_are_not_same = True
        return config, servers

    def token_rewards(self, completion_ids):
        return [0.0] * len(completion_ids)


if __name__ == "__main__":
    HopelessEnv.cli()
