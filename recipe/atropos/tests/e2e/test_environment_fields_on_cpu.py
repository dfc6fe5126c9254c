"""What an environment asks to be learnt besides rewards, through the real run-api and the scripted
BaseEnv, on the tiny model: every other group carries a teacher's top-2 at each completion token
with 0.98 of its mass on " no" (on-policy distillation); the groups between hold demonstration rows,
" ok" repeated, marked `overrides[i]["sft"]`. A few steps raise the student's log-probability of
" no" and of " ok" after any context; the same run without those fields (a control) does not.
Batches mix groups with and without teacher data, and both train. Reference log-probs the
environment sends replace the reference model (`env_ref_logprobs_only`: none is loaded) when on, and
are ignored, said once, when off."""

import json

from transformers import AutoTokenizer

from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.examples.smoke_cpu import env_process, read_steps, run_to_end, trainer_process
from recipe.atropos.launcher.api_process import RunApiProcess
from recipe.atropos.tests.helpers.student_probe import load_student, mean_logprob_of, probe_contexts

STEPS = 4
TAUGHT, DEMONSTRATED = " no", " ok"
TRAINER_S = 600


def run(workdir, model, env: list[str], trainer_overrides: list[str], steps: int = STEPS) -> list[dict]:
    """`steps` steps on the scripted environment with its `env` settings; the steps' metrics."""
    workdir.mkdir()
    data = write_arithmetic_parquet(workdir / "train.parquet", n=16)
    with RunApiProcess(log_path=workdir / "run-api.log") as api, env_process(model, api.url, workdir, extra=env):
        code = run_to_end(trainer_process(model, data, api.url, workdir, steps, trainer_overrides), timeout=TRAINER_S)
    assert code == 0, (workdir / "trainer.log").read_text(errors="replace")[-3000:]
    records = [r["data"] for r in read_steps(workdir / "metrics.jsonl") if "training/global_step" in r["data"]]
    assert len(records) == steps and all(s["atropos/from_atropos"] == 1.0 for s in records)
    return records


def run_learning(workdir, model, *, fields: bool) -> list[dict]:
    """STEPS steps with the teacher and the demonstrations, or without them; a checkpoint at the end."""
    env = ["--env.advantages_every", "0", "--env.teacher_token_text", TAUGHT, "--env.sft_token_text", DEMONSTRATED,
           "--env.teacher_every", "2" if fields else "0", "--env.sft_every", "1" if fields else "0"]
    return run(workdir, model, env, [f"trainer.save_freq={STEPS}", "actor_rollout_ref.actor.optim.lr=1e-2",
                                     "actor_rollout_ref.actor.optim.weight_decay=0.0"])


def gains(workdir, model) -> dict[str, float]:
    """Change of the student's mean log-probability of each token over fixed contexts, start to end."""
    tokenizer = AutoTokenizer.from_pretrained(model)
    contexts = probe_contexts(vocab_top=20_000)
    before, after = load_student(model), load_student(model, workdir / "checkpoints" / f"global_step_{STEPS}")
    out = {}
    for text in (TAUGHT, DEMONSTRATED):
        token = tokenizer.encode(text, add_special_tokens=False)[0]
        out[text] = mean_logprob_of(after, token, contexts) - mean_logprob_of(before, token, contexts)
    return out


def test_a_teacher_and_demonstrations_from_the_environment_are_learnt(tmp_path, tiny_model_dir):
    steps = run_learning(tmp_path / "with_fields", tiny_model_dir, fields=True)
    assert all(s["atropos/distill_rows"] + s["atropos/sft_rows"] * 2 == 8 for s in steps)  # 2 groups of 4 rows
    assert any(0 < s["atropos/distill_rows"] < 8 for s in steps)  # a batch mixing teacher and plain groups
    assert all(s["actor/distill/loss"] > 0 for s in steps if s["atropos/distill_rows"])
    assert all(s["actor/sft/nll"] > 0 for s in steps if s["atropos/sft_rows"])
    learnt = gains(tmp_path / "with_fields", tiny_model_dir)
    # What was trained, as text: 2 groups a step (trainer.atropos.sample_groups_per_step), the
    # demonstrations among them.
    samples = [json.loads(line) for line in (tmp_path / "with_fields" / "checkpoints" / "atropos_samples.jsonl")
               .read_text().splitlines()]
    assert sorted({s["step"] for s in samples}) == list(range(1, STEPS + 1)) and len(samples) == STEPS * 8
    assert any(set(s["response"].split()) == {DEMONSTRATED.strip()} for s in samples)

    control_steps = run_learning(tmp_path / "control", tiny_model_dir, fields=False)
    assert all(s["atropos/distill_rows"] == 0 and s["atropos/sft_rows"] == 0 for s in control_steps)
    assert not any(key.startswith(("actor/distill/", "actor/sft/")) for s in control_steps for key in s)
    control = gains(tmp_path / "control", tiny_model_dir)
    print(f"log-prob gains after {STEPS} steps: with the fields {learnt}, control {control}; student mass on the "
          f"teacher's top-2 by step: {[s.get('actor/distill/student_mass') for s in steps]}")
    for text in (TAUGHT, DEMONSTRATED):
        assert learnt[text] > 1.0, (text, learnt, control)
        assert control[text] < learnt[text] / 5, (text, learnt, control)


def test_reference_log_probs_from_the_environment_replace_the_reference_model(tmp_path, tiny_model_dir):
    """Every other group carries ref_logprobs of 0 (a made-up reference, far from the random model).
    With env_ref_logprobs_only the KL loss compares against them from step 1, the worker loads one
    model (no reference copy), no reference pass runs, and the groups without them are dropped naming
    the field. Without use_env_ref_logprobs the reference model is loaded and its pass runs: at step
    1 the policy is the reference (KL 0), and the field is said to be ignored, once."""
    env = ["--env.advantages_every", "0", "--env.ref_logprob_value", "0.0", "--env.ref_every", "2"]
    kl = ["actor_rollout_ref.actor.use_kl_loss=true"]
    only = run(tmp_path / "only", tiny_model_dir, env,
               [*kl, "trainer.atropos.use_env_ref_logprobs=true", "trainer.atropos.env_ref_logprobs_only=true",
                "trainer.atropos.fallback_to_grpo=false"], steps=1)
    ignored = run(tmp_path / "ignored", tiny_model_dir, env, kl, steps=2)
    assert "timing_s/ref" not in only[0] and only[0]["actor/kl_loss"] > 1.0
    assert only[0].get("atropos/invalid/ref_logprobs", 0) > 0
    assert "timing_s/ref" in ignored[0] and abs(ignored[0]["actor/kl_loss"]) < 1e-4
    models_loaded = {name: (tmp_path / name / "trainer.log").read_text(errors="replace").count("ForCausalLM contains")
                     for name in ("only", "ignored")}
    assert models_loaded == {"only": 1, "ignored": 2}  # verl's "Qwen2ForCausalLM contains N parameters" per model
    log = (tmp_path / "ignored" / "trainer.log").read_text(errors="replace")
    assert log.count("sends ref_logprobs, ignored: trainer.atropos.use_env_ref_logprobs=false") == 1
