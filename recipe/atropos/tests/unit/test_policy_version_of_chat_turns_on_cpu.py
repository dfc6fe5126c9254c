"""The version of a completion an environment posts the usual way: it asks the policy server's
`/v1/chat/completions`, then builds the group with atroposlib's own `tokenize_for_trainer`, whose
completion is the answer as the chat template frames it (the content, then the template's end of
turn, `<|im_end|>` and a newline). Found for the Qwen tokenizer and SmolLM2's, single- and
multi-turn (every assistant turn trained, tool output between them).

Real policy server over verl_patches' HFCPUServer with tiny random models: the Qwen2 of the other
tests, and a Llama with SmolLM2-135M-Instruct's tokenizer and chat template."""

import openai
import pytest
from atroposlib.utils.tokenize_for_trainer import tokenize_for_trainer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.envs.atropos_compat import chat_template
from recipe.atropos.examples.smollm2_model import PACKAGE_PIN, smollm2_available
from recipe.atropos.policy_server.template_framing import assistant_turn_framing, chat_ids
from recipe.atropos.source.policy_lag import group_version
from recipe.atropos.tests.helpers.policy_server_helpers import build_tiny_llama_with_smollm2_tokenizer, serving

CLIENT = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"})


@pytest.fixture(params=["qwen", "smollm2"])
def served(request, tiny_model_dir, tmp_path_factory):
    if request.param == "qwen":
        model_dir = tiny_model_dir
    else:
        if not smollm2_available():
            pytest.skip(f"needs the model package {PACKAGE_PIN} and gguf (scripts/setup.sh installs both)")
        model_dir = build_tiny_llama_with_smollm2_tokenizer(tmp_path_factory.mktemp("tiny_smollm2"))
    with serving(model_dir) as policy:
        yield policy


@pytest.fixture(autouse=True)
def ids_from_chat_templates(monkeypatch):
    """What environment processes run with (recipe.atropos.envs.atropos_compat): `tokenize_for_trainer`
    gets token ids from apply_chat_template under transformers 5; undone after the test."""
    monkeypatch.setattr(PreTrainedTokenizerBase, "apply_chat_template", PreTrainedTokenizerBase.apply_chat_template)
    chat_template.install()


def chat_answers(policy, messages, version, n=2):
    policy.server.set_global_steps(version)
    policy.proxy.policy_version = version  # as the trainer's resume after a sync sets it
    client = openai.OpenAI(base_url=f"{policy.url}/v1", api_key="verl")
    answer = client.chat.completions.create(model="policy", messages=messages, n=n, max_tokens=8, temperature=1.0)
    return [choice.message.content for choice in answer.choices]


def group_from(tokenizer, chats, train_on_all_assistant_turns=False):
    rows = [tokenize_for_trainer(tokenizer, chat, train_on_all_assistant_turns=train_on_all_assistant_turns)
            for chat in chats]
    (group,) = CLIENT.validate_batch([{"tokens": [row["tokens"] for row in rows], "masks": [row["masks"] for row in rows],
                                       "scores": [0.0] * len(rows), "env_id": 0}]).groups
    return group


def test_a_single_turn_chat_answer_framed_by_the_template_has_its_version(served):
    messages = [{"role": "system", "content": "You add numbers."}, {"role": "user", "content": "What is 2 + 3?"}]
    answers = chat_answers(served, messages, version=3)
    chats = [[*messages, {"role": "assistant", "content": answer}] for answer in answers]
    group = group_from(served.tokenizer, chats)
    end_of_turn = served.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(end_of_turn in seq for seq in group.split(group.masks))  # the template's framing is in the completion
    assert group_version(group, served.proxy.registry) == 3


def served_two_turn_chats(policy):
    """Chats of two served assistant turns (versions 2 and 5) with tool output between them."""
    messages = [{"role": "user", "content": "Look up the weather, then tell me."}]
    chats = []
    for first in chat_answers(policy, messages, version=2):
        history = [*messages, {"role": "assistant", "content": first},
                   {"role": "user", "content": "Tool output: sunny, 21 degrees."}]
        (second,) = chat_answers(policy, history, version=5, n=1)
        chats.append([*history, {"role": "assistant", "content": second}])
    return chats


def test_the_last_turn_of_a_multi_turn_chat_has_its_version(served):
    group = group_from(served.tokenizer, served_two_turn_chats(served))
    assert group_version(group, served.proxy.registry) == 5


def test_an_answer_rendered_in_the_history_of_a_longer_chat_has_its_version(served):
    """A template may render an earlier turn unlike the last one (Qwen3-style templates give only the
    last turn an empty think block): the turn as the full conversation renders it, from the generation
    prompt to the next message, is found too."""
    chat = served_two_turn_chats(served)[0]
    full = chat_ids(served.tokenizer, chat, add_generation_prompt=False)
    start = len(chat_ids(served.tokenizer, chat[:1], add_generation_prompt=True))
    next_message = full.index(served.tokenizer.convert_tokens_to_ids("<|im_start|>"), start)  # both templates are ChatML
    assert served.proxy.registry.lookup_run(full[start:next_message]) == 2


def test_every_assistant_turn_trained_has_the_oldest_version(served):
    """atroposlib's `train_on_all_assistant_turns`: both turns are completion runs. It masks each turn as the
    template renders it last, so with a template that renders history turns otherwise (the Qwen tokenizer's
    think blocks) its masks disagree with its tokens and the group is dropped by name; SmolLM2's renders
    them alike."""
    chats = served_two_turn_chats(served)
    if "think" in served.tokenizer.chat_template:
        rows = [tokenize_for_trainer(served.tokenizer, chat, train_on_all_assistant_turns=True) for chat in chats]
        batch = CLIENT.validate_batch([{"tokens": [row["tokens"] for row in rows], "masks": [row["masks"] for row in rows],
                                        "scores": [0.0] * len(rows), "env_id": 0}])
        assert not batch.groups and [bad.field for bad in batch.invalid] == ["masks"]
        return
    group = group_from(served.tokenizer, chats, train_on_all_assistant_turns=True)
    assert group_version(group, served.proxy.registry) == 2


def test_the_framing_found_for_each_template(served):
    before, after = assistant_turn_framing(served.tokenizer)
    convert = served.tokenizer.convert_tokens_to_ids
    assert after[0] == convert("<|im_end|>")
    if "think" in served.tokenizer.chat_template:
        assert convert("<think>") in before and convert("</think>") in before
