"""atroposlib 0.4.0 under transformers 5, fixed in environment processes (recipe.atropos.envs.atropos_compat):
each fix shown failing without the layer and working with it (in a fresh interpreter, since the
fixes patch atroposlib and transformers process-wide), then an environment written with
atroposlib's own helpers trained end to end through the launcher."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipe.atropos.envs.atropos_compat import check_atroposlib_version
from recipe.atropos.examples.demo_cpu import DEMO_CONFIG
from recipe.atropos.launcher.services import run_services
from recipe.atropos.launcher.config import load_launcher_config
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.tests.helpers.launcher_helpers import ROOT
from recipe.atropos.envs.qwen_tokenizer import qwen_tokenizer_dir
from recipe.atropos.examples.tiny_model import build_tiny_qwen2

ENV_FILE = Path(__file__).parents[1] / "helpers" / "multiturn_tool_env.py"
# Plain ChatML: every turn renders the same whether or not it is the last. The shipped Qwen3 template
# adds an empty think block to the last assistant turn only, so atroposlib's all-assistant-turns
# masks would not match the tokens (such groups are dropped by name: atropos/invalid/masks).
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def chatml_tokenizer(folder):
    """The Qwen tokenizer with the ChatML template, saved in `folder` (a model folder's copy is replaced)."""
    from transformers import AutoTokenizer

    source = folder if (Path(folder) / "config.json").exists() else qwen_tokenizer_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(str(folder))
    return folder

PROBE = textwrap.dedent("""
    import json, sys
    from atroposlib.envs.server_handling.server_baseline import APIServerConfig
    from atroposlib.envs.server_handling.server_manager import ServerManager
    from atroposlib.utils.tokenize_for_trainer import tokenize_for_trainer
    from transformers import AutoTokenizer
    if sys.argv[2] == "fixed":
        from recipe.atropos.envs import atropos_compat
        atropos_compat.apply()
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"},
            {"role": "tool", "content": "42"}, {"role": "assistant", "content": "done"}]
    out = tokenize_for_trainer(tokenizer, chat, train_on_all_assistant_turns=True)
    try:
        posted = json.loads(json.dumps({"tokens": [out["tokens"]], "masks": [out["masks"]]}))
    except TypeError as exc:
        posted = str(exc)
    manager = ServerManager(APIServerConfig(base_url="http://127.0.0.1:5555/v1", model_name="policy",
                                            server_type="vllm", api_key="x", tokenizer_name=sys.argv[1]))
    print(json.dumps({"posted": posted, "urls": [server.config.base_url for server in manager.servers],
                      "ids": type(tokenizer.apply_chat_template(chat[:1], add_generation_prompt=True)).__name__}))
""")


def probe(mode, folder):
    answer = subprocess.run([sys.executable, "-c", PROBE, str(chatml_tokenizer(folder)), mode], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)
    assert answer.returncode == 0, answer.stderr[-2000:]
    return json.loads(answer.stdout.strip().splitlines()[-1])


def test_without_the_layer_atroposlib_cannot_post_and_ignores_the_base_url(tmp_path):
    plain = probe("plain", tmp_path)
    assert "not JSON serializable" in plain["posted"]
    assert plain["urls"] == [f"http://localhost:{port}/v1" for port in range(9004, 9008)]
    assert plain["ids"] == "BatchEncoding"


def test_with_the_layer_groups_are_token_ids_and_the_one_server_is_the_configured_one(tmp_path):
    fixed = probe("fixed", tmp_path)
    tokens, masks = fixed["posted"]["tokens"][0], fixed["posted"]["masks"][0]
    assert all(isinstance(t, int) for t in tokens) and len(tokens) == len(masks)
    trained = [i for i, m in enumerate(masks) if m != -100]
    assert all(masks[i] == tokens[i] for i in trained)
    holes = [i for i in range(trained[0], trained[-1]) if masks[i] == -100]
    assert holes, "the tool output inside the completion is masked"
    assert fixed["urls"] == ["http://127.0.0.1:5555/v1"]
    assert fixed["ids"] == "list"


def test_another_atroposlib_version_is_refused_loudly(caplog):
    with pytest.raises(ImportError, match=r"atroposlib 0\.3\.9.*atroposlib==0\.4\.0.*NOT applied"):
        check_atroposlib_version("0.3.9")
    assert "NOT applied" in caplog.text


@pytest.mark.parametrize("server_type", ["vllm", "openai"])
def test_an_environment_built_on_atroposlib_helpers_trains_through_the_launcher(tmp_path, server_type):
    """With the run's token on: atroposlib's `vllm` client sends it as a Bearer header on /health and
    /generate, its `openai` client on /v1/*, and both post to run-api with it in the URL."""
    model = chatml_tokenizer(build_tiny_qwen2(tmp_path / "tiny"))
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=16)
    groups_file = tmp_path / "posted_groups.jsonl"
    raw = OmegaConf.load(DEMO_CONFIG)
    raw.run_dir = str(tmp_path / "run")
    raw.environments = [{"name": "multiturn_tool", "path": str(ENV_FILE), "weight": 1.0, "group_size": 4,
                         "max_token_length": 256, "args": ["--env.data_path_to_save_groups", str(groups_file),
                                                            "--openai.server_type", server_type]}]
    OmegaConf.save(raw, tmp_path / "multiturn.yaml")
    result = run_services(load_launcher_config(tmp_path / "multiturn.yaml"), [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
        "trainer.total_training_steps=2", "actor_rollout_ref.rollout.n=4", "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "trainer.atropos.fallback_to_grpo=false",
        "data.max_prompt_length=96", "data.max_response_length=96", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ])
    log = (result.run_dir / "logs" / "trainer.log").read_text(errors="replace")[-3000:]
    assert result.exit_code == 0, log
    assert [s["atropos/from_atropos"] for s in result.steps] == [1.0, 1.0]
    assert all(s["atropos/invalid_groups"] == 0 for s in result.steps)
    # Its completions are the answers as the chat template frames them (<|im_end|> and a newline after each
    # turn): the policy server still knows which version wrote them (all of them were unknown before).
    assert all(s["atropos/policy_version_unknown_groups"] == 0 for s in result.steps)
    assert all(s["actor/grad_norm"] > 0 for s in result.steps)
    # What the environment posted: token ids, completions with the tool output masked inside them.
    posted = [json.loads(line) for line in groups_file.read_text().splitlines()]
    rows = [(tokens, masks) for group in posted for tokens, masks in zip(group["tokens"], group["masks"])]
    assert rows and all(isinstance(t, int) for tokens, _ in rows for t in tokens)
    trained = [[i for i, m in enumerate(masks) if m != -100] for _, masks in rows]
    assert all(any(masks[i] == -100 for i in range(t[0], t[-1])) for (_, masks), t in zip(rows, trained))
    assert result.leftover_pids == []
