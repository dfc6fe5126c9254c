"""The shipped chat environments (ChatTaskEnv: gsm8k, math, code) as atroposlib builds them: with
`--env.max_prompt_tokens` set to the trainer's data.max_prompt_length they serve only problems whose
chat prompt fits it, so the trainer never drops their groups as prompt_too_long (which would shift the
mix of environments a run reports)."""

import asyncio

from recipe.atropos.envs.gsm8k_env import GSM8KEnv


def gsm8k_env(**settings) -> GSM8KEnv:
    config, servers = GSM8KEnv.config_init()
    env = GSM8KEnv(config.model_copy(update={"num_items": 200, **settings}), servers, slurm=False, testing=True)
    asyncio.run(env.setup())
    return env


def test_only_problems_whose_prompt_fits_max_prompt_tokens_are_served():
    every = gsm8k_env()
    lengths = sorted(every.prompt_tokens(item) for item in every.items)
    limit = lengths[len(lengths) * 9 // 10]  # about a tenth of the problems are longer
    fitting = gsm8k_env(max_prompt_tokens=limit)
    assert {item.prompt for item in fitting.items} == {item.prompt for item in every.items
                                                       if every.prompt_tokens(item) <= limit}
    assert 0 < len(every.items) - len(fitting.items) < len(every.items)
    served = [asyncio.run(fitting.get_next_item()) for _ in range(2 * len(fitting.items))]
    assert max(fitting.prompt_tokens(item) for item in served) <= limit
