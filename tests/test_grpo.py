"""GRPO: rewards and dynamic sampling, the gradient of the micro-batched update, and a tiny end-to-end run
(metrics, report, checkpoint + exact resume, no reference model at beta = 0, KL with one)."""

import json
import math

import pytest
import torch
from helpers import small_config
from safetensors.torch import load_file

from nanoseek.engine.protocol import Completion, TokenLogprob
from nanoseek.model import DeepSeekV3
from nanoseek.rl import GRPOTrainer, completion_logprobs, load_grpo_config
from nanoseek.rl.cli import parse_args
from nanoseek.rl.loss import group_advantages, policy_loss
from nanoseek.rl.micro import column_reasoning, write_corpus
from nanoseek.rl.rollout import (
    RolloutBatch,
    RolloutSampler,
    completion_text,
    overlong_penalty,
    prompt_ids,
)
from nanoseek.tasks import ArithmeticTask, get_task, parse_task_spec
from nanoseek.tokenizer import Tokenizer, render_prompt, train_tokenizer
from nanoseek.train.config import ConfigError, to_toml
from nanoseek.train.report import read_metrics

TASK = "arithmetic?digits=1&ops=+&instruction="


def test_micro_corpus_column_work_ends_in_the_sum(tmp_path):
    """The micro experiment's reasoning is right: its last partial sum is the sum, carries included;
    the corpus holds transcripts (shortcut share as asked) and worked solutions of the train split only."""
    assert column_reasoning(77, 94) == "77 + 94: ones 7+4+0=11 gives 1, tens 7+9+1=17 gives 171"
    assert column_reasoning(16, 5) == "16 + 5: ones 6+5+0=11 gives 1, tens 1+0+1=2 gives 21"
    for a, b in [(0, 0), (9, 1), (99, 99), (500, 500), (1234, 8766)]:
        assert column_reasoning(a, b).split(" gives ")[-1] == str(a + b)
    counts = write_corpus(
        "arithmetic?digits=2&ops=+&instruction=", tmp_path / "c.jsonl", shortcut_share=0.8, worked=2
    )
    docs = [json.loads(line)["text"] for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(docs) == counts["transcripts"] + counts["worked"] == 3 * counts["transcripts"]
    assert 0.75 < counts["shortcuts"] / counts["transcripts"] < 0.85
    test_questions = {
        p.prompt
        for p in parse_task_spec("arithmetic?digits=2&ops=+&instruction=").build().problems("test", 10**9)
    }
    assert not any(q in d for q in list(test_questions)[:50] for d in docs)
    with pytest.raises(ValueError, match="addition"):
        write_corpus("arithmetic?digits=2&ops=*", tmp_path / "x.jsonl")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny random DeepSeek-V3 (MLA + MoE) with a BPE trained on R1-Zero documents, saved as a model dir."""
    root = tmp_path_factory.mktemp("grpo_base")
    corpus = root / "corpus.jsonl"
    write_corpus(TASK, corpus, shortcut_share=0.5, worked=1, seed=0)
    model_dir = root / "model"
    tok = train_tokenizer([corpus], 420, model_dir, show_progress=False)
    torch.manual_seed(0)
    model = DeepSeekV3(small_config(tok.vocab_size))
    with torch.no_grad():  # the zero-initialized head would make every sample a uniform draw; give it shape
        model.lm_head.weight.normal_(std=0.5)
    model.save_pretrained(model_dir)
    return model_dir


def config(base, out, *extra):
    return load_grpo_config(
        None,
        [
            f"run.out={out}",
            f"model.init={base}",
            f'task.name="{TASK}"',
            "run.device=cpu",
            "run.progress=false",
            "rollout.group_size=4",
            "rollout.prompts_per_step=3",
            "rollout.max_new_tokens=12",
            "grpo.micro_batch=5",
            "train.max_steps=3",
            "train.lr=3e-3",
            "eval.every=2",
            "eval.problems=8",
            "cost.peak_flops=1e10",
            *extra,
        ],
    )


# ------------------------------------------------------------------------------------------ config


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"grpo.eps_hgh: unknown key \(did you mean grpo.eps_high\?\)"):
        load_grpo_config(None, ["grpo.eps_hgh=0.28"])
    with pytest.raises(ConfigError, match="grpo.aggregation"):
        load_grpo_config(None, ["grpo.aggregation=token"])
    with pytest.raises(ConfigError, match="group_size"):
        load_grpo_config(None, ["rollout.group_size=1"])
    cfg = load_grpo_config(None, ["grpo.beta=0.04", "reward.overlong=penalty", 'rollout.stop=["</answer>"]'])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_grpo_config(path) == cfg  # the written config is itself a recipe


def test_cli_flags_and_the_random_reward_control(tmp_path):
    cfg, resume = parse_args(["--out", str(tmp_path), "--init", "x", "--random-rewards", "grpo.mu=2"])
    assert cfg.reward.random and cfg.grpo.mu == 2 and cfg.model.init == "x" and not resume
    cfg, _ = parse_args(["--out", str(tmp_path)])
    assert not cfg.reward.random
    cfg, _ = parse_args(["recipes/grpo_r1.toml", "--task", "sort?length=3"])  # the packaged recipe
    assert cfg.run.kind == "grpo" and cfg.rollout.template == "chat" and cfg.task.name == "sort?length=3"
    with pytest.raises(ConfigError, match="run.kind is 'pretrain'; run it with `nanoseek pretrain`"):
        parse_args(["recipes/cpu_toy.toml"])


def test_overlong_penalty_is_dapos_soft_punishment():
    assert overlong_penalty(40, 64, 16, 1.0) == 0.0  # below L_max - buffer
    assert overlong_penalty(48, 64, 16, 1.0) == 0.0
    assert overlong_penalty(56, 64, 16, 1.0) == pytest.approx(-0.5)
    assert overlong_penalty(64, 64, 16, 0.5) == pytest.approx(-0.5)


# ------------------------------------------------------------------------------------------ rollouts


class ScriptedGenerator:
    """A Generator that answers each prompt with scripted texts: prompt k's group gets `script(k)`."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script, self.calls = tokenizer, script, 0
        self.seen: dict[tuple, int] = {}

    def generate(self, requests):
        out = []
        for r_index, request in enumerate(requests):
            key = tuple(request.prompt)
            k = self.seen.setdefault(key, len(self.seen))
            for j, text in enumerate(self.script(k, request.params.n)):
                ids = self.tokenizer.encode_ordinary(text)
                lps = [TokenLogprob(t, -1.0) for t in ids]
                reason = "length" if len(ids) >= request.params.max_new_tokens else "stop"
                out.append(
                    Completion(text, ids, reason, len(request.prompt), lps, request_index=r_index, index=j)
                )
        self.calls += 1
        return out

    def stream(self, requests):
        raise NotImplementedError


def answer(problem_reference, correct):
    value = problem_reference if correct else str(int(problem_reference) + 1)
    return f" <think> easy </think> <answer> {value} </answer>"


@pytest.fixture(scope="module")
def task_and_problems():
    task = get_task("arithmetic", digits=1, ops="+", instruction="")
    return task, task.problems("train", 40)


def sampler_for(base, tmp_path, task, problems, script, *extra):
    tok = Tokenizer.from_dir(base)
    cfg = config(base, tmp_path, *extra)
    stream_problems = problems

    def texts(k, n):  # k: order in which prompts were first seen = prompt index in the stream
        p = sampler.stream.at(k)
        return [answer(p.reference, ok) for ok in script(k, n)]

    sampler = RolloutSampler(cfg, ScriptedGenerator(tok, texts), tok, task, stream_problems)
    return sampler


def test_rewards_are_correctness_plus_format(base, tmp_path, task_and_problems):
    task, problems = task_and_problems
    sampler = sampler_for(
        base,
        tmp_path,
        task,
        problems,
        lambda k, n: [j % 2 == 0 for j in range(n)],
        "reward.format_weight=0.1",
    )
    batch, stats, cursor = sampler.collect(0)
    assert cursor == 3 and len(batch) == 12 and batch.group_size == 4
    assert batch.correct == [True, False, True, False] * 3
    assert batch.rewards == pytest.approx([1.1, 0.1, 1.1, 0.1] * 3)
    assert stats["accuracy"] == 0.5 and stats["format"] == 1.0 and stats["zero_variance"] == 0.0


class GradedArithmetic(ArithmeticTask):
    """Partial credit: reward 1 - |answer - reference| / 10 (at least 0); `correct` only when exact."""

    def score_batch(self, problems, completions):
        out = []
        for p, (_, details) in zip(problems, super().score_batch(problems, completions)):
            got = details["extracted"]
            off = abs(int(got) - int(p.reference)) if got is not None else 10
            out.append((max(0.0, 1 - off / 10), details))
        return out


def test_rewards_and_advantages_follow_a_graded_tasks_reward(base, tmp_path):
    """The task's own reward is the reward (times correct_weight), not a rebuilt 0/1 of `correct`: a
    sample off by one earns more than one off by three, and its advantage says so."""
    task = GradedArithmetic(digits=1, ops="+", instruction="")
    tok = Tokenizer.from_dir(base)
    cfg = config(base, tmp_path, "reward.correct_weight=2")

    def texts(k, n):  # sample j of a group answers reference + j
        p = sampler.stream.at(k)
        return [f" <think> easy </think> <answer> {int(p.reference) + j} </answer>" for j in range(n)]

    sampler = RolloutSampler(cfg, ScriptedGenerator(tok, texts), tok, task, task.problems("train", 40))
    batch, stats, _ = sampler.collect(0)
    assert batch.scores == pytest.approx([1.0, 0.9, 0.8, 0.7] * 3)
    assert batch.rewards == pytest.approx([2.0, 1.8, 1.6, 1.4] * 3)
    assert batch.correct == [True, False, False, False] * 3 and stats["accuracy"] == 0.25
    adv = group_advantages(torch.tensor(batch.rewards), batch.group_size, "grpo")
    assert adv[0] > adv[1] > adv[2] > adv[3]  # partial credit ranks the wrong answers too
    assert adv[:4].tolist() == pytest.approx([1.1619, 0.3873, -0.3873, -1.1619], abs=1e-3)


def test_dynamic_sampling_drops_zero_variance_groups_and_refills(base, tmp_path, task_and_problems):
    task, problems = task_and_problems
    # even prompt indices: the whole group is correct (zero variance); odd: half of it
    script = lambda k, n: [k % 2 == 0 or j < n // 2 for j in range(n)]  # noqa: E731
    on = sampler_for(base, tmp_path, task, problems, script, "grpo.dynamic_sampling=true")
    batch, stats, cursor = on.collect(0)
    assert len(batch.problems) == 3
    assert not any(batch.zero_variance(g) for g in range(3))
    assert stats["groups_sampled"] > 3 and stats["zero_variance"] > 0.3 and stats["sampling_rounds"] >= 2
    assert cursor == stats["groups_sampled"]
    off = sampler_for(base, tmp_path, task, problems, script)
    batch, stats, _ = off.collect(0)
    assert [batch.zero_variance(g) for g in range(3)] == [True, False, True]
    assert stats["groups_sampled"] == 3 and stats["zero_variance"] == pytest.approx(2 / 3)


def test_random_rewards_ignore_the_completions_and_are_seeded(base, tmp_path, task_and_problems):
    task, problems = task_and_problems
    all_right = sampler_for(base, tmp_path, task, problems, lambda k, n: [True] * n, "reward.random=true")
    all_wrong = sampler_for(base, tmp_path, task, problems, lambda k, n: [False] * n, "reward.random=true")
    a, stats_a, _ = all_right.collect(0)
    b, stats_b, _ = all_wrong.collect(0)
    assert a.rewards == b.rewards and set(a.rewards) <= {0.0, 1.0} and 0 < sum(a.rewards) < len(a)
    assert stats_a["accuracy"] == 1.0 and stats_b["accuracy"] == 0.0  # true accuracy is still measured
    other_seed = sampler_for(
        base, tmp_path, task, problems, lambda k, n: [True] * n, "reward.random=true", "run.seed=1"
    )
    assert other_seed.collect(0)[0].rewards != a.rewards


def test_prompts_for_both_templates(base, task_and_problems):
    tok = Tokenizer.from_dir(base)
    problem = task_and_problems[1][0]
    ids = prompt_ids(tok, problem, "r1_zero")
    assert ids[0] == tok.bos_id and tok.decode(ids[1:]).endswith(f"User: {problem.prompt} Assistant:")
    assert tok.think_id not in ids  # the template's <think> is plain text, as in pretraining documents
    chat = prompt_ids(tok, problem, "chat")
    assert chat == render_prompt(tok, [{"role": "user", "content": problem.prompt}])
    assert (
        completion_text(tok, chat, tok.encode("4\n</think>\n\n4<｜end▁of▁sentence｜>"), "chat")
        == "<think>\n4\n</think>\n\n4"
    )


# ------------------------------------------------------------------------------------------ the update


def test_completion_logprobs_match_a_plain_forward(base):
    """Prompts shared by several samples are forwarded once; log-probs and their gradient still equal
    one plain forward of prompt + completion per row (ragged prompts and completions)."""
    model = DeepSeekV3.from_pretrained(base)
    prompts = [[0, 5, 6, 7], [0, 9], [0, 5, 6, 7], [0, 5, 6, 7]]
    completions = [[11, 12], [13, 14, 15], [16], [11, 17, 18]]
    logp, entropy, mask = completion_logprobs(model, prompts, completions, pad_id=2)
    assert mask.tolist() == [[True, True, False], [True, True, True], [True, False, False], [True] * 3]
    (logp * mask).sum().backward()
    shared = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    total = 0
    for i, (p, c) in enumerate(zip(prompts, completions)):
        full = model(torch.tensor([p + c]))[0].log_softmax(-1)
        want = torch.stack([full[len(p) - 1 + j, t] for j, t in enumerate(c)])
        assert logp[i, : len(c)].tolist() == pytest.approx(want.tolist(), abs=1e-5)
        assert (entropy[i, : len(c)] > 0).all()
        total = total + want.sum()
    total.backward()
    plain = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert shared.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(shared[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("aggregation", ["grpo", "dapo", "dr_grpo"])
def test_micro_batched_update_is_the_full_batch_gradient(base, tmp_path, aggregation):
    """Skipping zero-advantage rows, filtering a truncated one and splitting into micro-batches gives
    exactly the gradient of policy_loss over the whole batch at once."""
    extra = [f"grpo.aggregation={aggregation}", "grpo.micro_batch=3", "reward.overlong=filter"]
    trainer = GRPOTrainer(config(base, tmp_path / aggregation, *extra))
    g = torch.Generator().manual_seed(0)
    batch = RolloutBatch(group_size=4)
    for k in range(3):
        batch.prompts.append(torch.randint(5, 200, (3 + k,), generator=g).tolist())
    batch.completions = [torch.randint(5, 200, (1 + i % 5,), generator=g).tolist() for i in range(12)]
    batch.rewards = [1, 0, 0, 1, 1, 1, 1, 1, 0.5, 0, 1, 0]  # group 1 has zero variance
    batch.truncated = [False] * 10 + [True, False]
    batch.engine_logprobs = [[-1.0] * len(c) for c in batch.completions]
    plan = trainer.plan(batch)
    assert plan.active == [0, 1, 2, 3, 8, 9, 11] and len(plan.chunks) == 3
    trainer.model.zero_grad(set_to_none=True)
    trainer.policy_gradient(batch, plan, {}, {})
    got = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    trainer.model.zero_grad(set_to_none=True)
    prompts = [batch.prompt_of(i) for i in range(12)]
    logp, _, mask = completion_logprobs(trainer.model, prompts, batch.completions, trainer.tokenizer.pad_id)
    mask = mask & plan.keep[:, None]
    out = policy_loss(logp, logp.detach(), plan.adv, mask, aggregation=aggregation, max_len=12)
    out.loss.backward()
    want = {n: p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-7, msg=name)


# ------------------------------------------------------------------------------------------ end to end


def test_end_to_end_metrics_report_and_exact_resume(base, tmp_path):
    straight = GRPOTrainer(config(base, tmp_path / "straight", "reward.random=true"))
    assert straight.ref_model is None  # beta = 0: no reference model at all
    summary = straight.run()
    assert summary["step"] == 3 and summary["reference_model"] is False
    run = tmp_path / "straight"
    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    for key in ("reward", "accuracy", "response_length", "kl", "entropy", "clip_fraction", "zero_variance"):
        assert all(math.isfinite(r[key]) for r in train), key
    assert all(r["entropy"] > 0 and r["active_sequences"] > 0 for r in train)
    assert train[0]["logp_mismatch"] < 1e-3  # the engine samples what the trainer scores
    assert [r["step"] for r in records if r["type"] == "eval"] == [0, 2, 3]
    report = (run / "report.md").read_text()
    assert "held-out pass@1" in report and "RANDOM" in report and "DeepSeek-V3, for scale" in report
    for png in ("grpo_accuracy.png", "grpo_length.png", "grpo_dynamics.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "checkpoints" / "step_000003" / "trainer.json").read_text())["cursor"] == 9

    # the same run, stopped after 2 steps and resumed, ends with identical weights and metrics
    GRPOTrainer(config(base, tmp_path / "resumed", "reward.random=true", "train.max_steps=2")).run()
    with pytest.raises(ConfigError, match="--resume"):
        GRPOTrainer(config(base, tmp_path / "resumed", "reward.random=true"))
    resumed = GRPOTrainer(config(base, tmp_path / "resumed", "reward.random=true"), resume=True)
    assert resumed.step == 2
    resumed.run()
    a = load_file(run / "checkpoints" / "step_000003" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "step_000003" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = lambda path: [r["step"] for r in read_metrics(path) if r["type"] == "train"]  # noqa: E731
    assert steps(tmp_path / "resumed" / "metrics.jsonl") == [1, 2, 3]
    last = [r for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl") if r["type"] == "train"][-1]
    assert last["reward"] == train[-1]["reward"] and last["loss"] == train[-1]["loss"]


def test_beta_loads_a_frozen_reference_and_measures_kl(base, tmp_path):
    trainer = GRPOTrainer(
        config(base, tmp_path, "reward.random=true", "grpo.beta=0.1", "grpo.mu=2", "eval.every=0")
    )
    assert trainer.ref_model is not None and not any(p.requires_grad for p in trainer.ref_model.parameters())
    before = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    trainer.run()
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert train[-1]["kl"] > 0  # the policy moved away from the reference ...
    assert all(
        torch.equal(before[k], v) for k, v in trainer.ref_model.state_dict().items()
    )  # ... which did not
    assert trainer.optimizer.state_dict()["state"][0]["step"] == 6  # mu = 2 updates per step


def test_the_rollout_generator_is_synced_before_the_first_rollout_and_after_every_update(base, tmp_path):
    """The trainer/generator contract: one sync_weights(policy) at the start, then one after each step's
    updates (mu = 2 optimizer steps here), so the rollouts of step k see update k."""
    trainer = GRPOTrainer(config(base, tmp_path, "reward.random=true", "grpo.mu=2", "train.max_steps=2"))
    synced, sync = [], trainer.generator.sync_weights

    def spy(model):
        state = trainer.optimizer.state_dict()["state"]
        synced.append((model, int(state[0]["step"]) if state else 0))
        sync(model)

    trainer.generator.sync_weights = spy
    trainer.run()
    assert all(model is trainer.model for model, _ in synced)
    assert [optimizer_steps for _, optimizer_steps in synced] == [0, 2, 4]


class SyncedScript(ScriptedGenerator):
    """A scripted rollout Generator that records the weights it is handed."""

    def __init__(self, tokenizer, script):
        super().__init__(tokenizer, script)
        self.synced = []

    def sync_weights(self, model):
        self.synced.append(model)


def test_any_generator_can_roll_out_for_the_trainer(base, tmp_path):
    """The trainer needs only the Generator protocol (generate + sync_weights) from its rollout engine:
    a scripted one rolls out the training steps and the held-out evaluations."""
    tok = Tokenizer.from_dir(base)
    formatted = " <think> easy </think> <answer> 7 </answer>"
    generator = SyncedScript(tok, lambda k, n: [formatted if j % 2 else " 7" for j in range(n)])
    cfg = config(base, tmp_path, "train.max_steps=2", "eval.every=0", "reward.format_weight=1")
    trainer = GRPOTrainer(cfg, generator=generator)
    summary = trainer.run()
    assert summary["step"] == 2 and generator.calls >= 4  # 2 steps of rollouts + 2 evaluations
    assert generator.synced == [trainer.model] * 3  # before the first rollout, after each update
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert all(r["format"] == 0.5 and r["active_sequences"] > 0 for r in train)  # the format reward teaches


def test_a_policy_without_routers_trains(base, tmp_path, monkeypatch):
    """Router balancing belongs to MoE families: the update asks a policy to balance only where it can
    (a dense family's model has no update_router_biases)."""
    monkeypatch.delattr(DeepSeekV3, "update_router_biases")
    trainer = GRPOTrainer(
        config(base, tmp_path, "reward.random=true", "train.max_steps=1", "eval.problems=2")
    )
    assert trainer.run()["step"] == 1 and trainer.optimizer.state_dict()["state"][0]["step"] == 1
