"""A test environment written the way Atropos's tool-use environments are, with atroposlib only:
each rollout is a chat (user, assistant, tool, assistant) generated through the OpenAI chat route,
tokenised by atroposlib's own `tokenize_for_trainer` with every assistant turn trained (so the
tool output is a hole inside the completion), and `config_init` returns ONE `APIServerConfig`
(not a list), as Atropos's GSM8K environment does. Unmodified atroposlib 0.4.0 cannot post these
groups under transformers 5 and ignores `--openai.base_url`; run it through
`python -m recipe.atropos.envs.run_env`.
"""

from atroposlib.envs.base import APIServerConfig, BaseEnv, BaseEnvConfig, ScoredDataGroup
from atroposlib.utils.tokenize_for_trainer import tokenize_for_trainer

TOOL_OUTPUT = "red, green and blue"


class MultiTurnToolEnv(BaseEnv):
    name = "multiturn_tool"

    @classmethod
    def config_init(cls):
        env_config = BaseEnvConfig(group_size=4, use_wandb=False, max_token_length=256, total_steps=1000,
                                   batch_size=-1, ensure_scores_are_not_same=False, wandb_name=cls.name)
        # Dead ports on purpose: only --openai.base_url can make this environment reach a server.
        server_config = APIServerConfig(model_name="policy", base_url="http://localhost:9001/v1", api_key="x",
                                        num_requests_for_eval=4)
        return env_config, server_config

    async def setup(self):
        self.count = 0

    async def get_next_item(self):
        self.count += 1
        return f"Name {self.count % 3 + 2} colours, then check them with the tool."

    async def collect_trajectories(self, item):
        chat = [{"role": "user", "content": item}]
        first = await self.server.chat_completion(messages=chat, n=self.config.group_size, max_tokens=6)
        group = ScoredDataGroup(tokens=[], masks=[], scores=[])
        for choice in first.choices:
            turns = [*chat, {"role": "assistant", "content": choice.message.content},
                     {"role": "tool", "content": TOOL_OUTPUT}]
            second = await self.server.chat_completion(messages=turns, n=1, max_tokens=6)
            turns.append({"role": "assistant", "content": second.choices[0].message.content})
            tokenized = tokenize_for_trainer(self.tokenizer, turns, train_on_all_assistant_turns=True)
            group["tokens"].append(tokenized["tokens"])
            group["masks"].append(tokenized["masks"])
            group["scores"].append(sum(ch.isalpha() for ch in turns[-1]["content"]) / 10.0)
        return group, []

    async def evaluate(self, *args, **kwargs):
        return None


if __name__ == "__main__":
    MultiTurnToolEnv.cli()
