"""GRPO rollouts: prompts -> G samples each from a Generator -> rewards -> groups (dynamic sampling).

    sampler = RolloutSampler(cfg, generator, tokenizer, task, train_problems)
    batch, stats = sampler.collect(cursor=0)     # one step's groups; stats: reward, accuracy, lengths, ...
    result = evaluate(generator, tokenizer, task, test_problems, "r1_zero", max_new_tokens=64)   # pass@1

Prompts (`prompt_ids`), one definition for rollouts and held-out evaluation:
- "r1_zero" (a base model): BOS (where the tokenizer puts one before text: not Qwen's) + the R1
  paper's plain-text prompt `r1_zero_prompt(question)`, encoded as plain text exactly like the
  pretraining documents (`encode_ordinary`: the `<think>` in the template is text there, not a
  control token). The model is expected to write
  ` <think> reasoning </think> <answer> answer </answer>`; sampling stops at `</answer>`.
- "chat" (an SFT checkpoint, R1): THE chat format's generation prompt (`render_prompt`), which opens
  the think block; the model writes `reasoning\\n</think>\\n\\nanswer<EOS>`. A model's own chat
  template renders the prompt where the checkpoint has one.
The text scored is the decoded completion (with `<think>\\n` put back in front where the "chat" prompt
opened the think block): the task's
verifier reads the answer after `</think>` (inside `<answer>` tags if present) and `format_reward`
checks the layout (`answer_tag=True` for "r1_zero").

Rewards per sample (N = prompts x G, group after group):
    r = correct_weight x task reward + format_weight x format_ok + overlong penalty
    task reward: what the task's `score` returns: 1 for a correct answer and 0 else for a verifier
                 task, anything in between for a graded one (partial credit is kept, not rounded)
    overlong penalty (DAPO, "penalty"): 0 up to L_max - buffer tokens, then linear down to -overlong_penalty
                                        at L_max (a truncated sample gets the full penalty)
    random control: r ~ Bernoulli(random_p) from a generator seeded by (run seed, prompt index), so the
                    control sees exactly as many "correct" samples as chance and nothing else
Dynamic sampling (DAPO): a group whose G rewards are all equal has zero advantage for every sample and
gives no gradient; such groups are dropped and more prompts are sampled (at most `max_refills` extra
rounds, sized by the share kept so far) until `prompts_per_step` groups remain.

Every prompt index in the (seeded, per-epoch shuffled) prompt stream has its own sampling seed, so a
resumed run samples exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass, field, fields

import torch

from nanoseek.engine import GenerationRequest, Generator, SamplingParams
from nanoseek.rl.config import GRPOConfig
from nanoseek.tasks import Problem, Task
from nanoseek.tokenizer import Tokenizer, prompt_opens_think, r1_zero_prompt, render_prompt
from nanoseek.verify import format_reward

# ----------------------------------------------------------------------------------- prompts and texts


def prompt_ids(tokenizer: Tokenizer, problem: Problem, template: str) -> list[int]:
    """The token ids a rollout (or a held-out evaluation) starts from."""
    if template == "r1_zero":
        return [*tokenizer.bos_prefix, *tokenizer.encode_ordinary(r1_zero_prompt(problem.prompt))]
    return render_prompt(tokenizer, [{"role": "user", "content": problem.prompt}])


def completion_text(tokenizer: Tokenizer, prompt: list[int], token_ids: list[int], template: str) -> str:
    """The text a task scores: the decoded completion, with `<think>\\n` put back in front when the
    chat prompt opened the think block (R1's format; not a template whose model opens it or has none)."""
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    if template == "r1_zero" or not prompt_opens_think(tokenizer, prompt):
        return text
    return "<think>\n" + text


def seed_of(*parts: object) -> int:
    """A stable 31-bit seed from any parts (sampling seeds, random rewards, prompt order)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def overlong_penalty(length: int, max_new_tokens: int, buffer: int, penalty: float) -> float:
    """DAPO's soft overlong punishment: 0 for length <= L_max - buffer, then linear to -penalty at L_max."""
    start = max_new_tokens - buffer
    if length <= start:
        return 0.0
    return -penalty * min((length - start) / buffer, 1.0)


# ----------------------------------------------------------------------------------- the prompt stream


class PromptStream:
    """An endless, seeded stream of training problems: a fresh shuffle of the pool every epoch.
    Its whole state is `cursor`, the number of prompts taken so far (saved with checkpoints)."""

    def __init__(self, problems: list[Problem], seed: int):
        if not problems:
            raise ValueError("no training problems")
        self.problems, self.seed = problems, seed
        self._epoch, self._order = -1, list(range(len(problems)))

    def at(self, index: int) -> Problem:
        epoch, offset = divmod(index, len(self.problems))
        if epoch != self._epoch:
            self._order = list(range(len(self.problems)))
            random.Random(seed_of(self.seed, "epoch", epoch)).shuffle(self._order)
            self._epoch = epoch
        return self.problems[self._order[offset]]


# ----------------------------------------------------------------------------------- a batch of groups


@dataclass
class RolloutBatch:
    """Groups of G samples, group after group: N = len(problems) x G sequences."""

    group_size: int
    problems: list[Problem] = field(default_factory=list)  # one per group
    prompts: list[list[int]] = field(default_factory=list)  # one per group
    completions: list[list[int]] = field(default_factory=list)  # (N) generated ids (stop token included)
    engine_logprobs: list[list[float]] = field(default_factory=list)  # (N) sampler's logp of each token
    texts: list[str] = field(default_factory=list)  # (N) scored texts
    scores: list[float] = field(default_factory=list)  # (N) the task's reward for each sample
    rewards: list[float] = field(default_factory=list)  # (N)
    correct: list[bool] = field(default_factory=list)  # (N) the verifier's verdict (also in the control)
    format_ok: list[float] = field(default_factory=list)  # (N)
    truncated: list[bool] = field(default_factory=list)  # (N) hit max_new_tokens

    def __len__(self) -> int:
        return len(self.completions)

    def group(self, g: int) -> slice:
        return slice(g * self.group_size, (g + 1) * self.group_size)

    def zero_variance(self, g: int) -> bool:
        rewards = self.rewards[self.group(g)]
        return max(rewards) - min(rewards) < 1e-9

    def extend_group(self, other: RolloutBatch, g: int) -> None:
        """Append group g of `other`."""
        self.problems.append(other.problems[g])
        self.prompts.append(other.prompts[g])
        for f in fields(self)[3:]:  # after group_size, problems and prompts: the (N) per-sample lists
            getattr(self, f.name).extend(getattr(other, f.name)[other.group(g)])

    def prompt_of(self, i: int) -> list[int]:
        return self.prompts[i // self.group_size]


class RolloutSampler:
    """Samples groups for GRPO steps from a `Generator` holding the policy (the trainer syncs its weights
    after each update; any generator returning token ids and their logprobs works)."""

    def __init__(
        self, cfg: GRPOConfig, generator: Generator, tokenizer: Tokenizer, task: Task, problems: list[Problem]
    ):
        self.cfg, self.generator, self.tokenizer, self.task = cfg, generator, tokenizer, task
        self.stream = PromptStream(problems, cfg.run.seed)

    def params(self, index: int) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            n=r.group_size,
            temperature=r.temperature,
            top_p=r.top_p,
            max_new_tokens=r.max_new_tokens,
            stop=list(r.stop),
            seed=seed_of(self.cfg.run.seed, "rollout", index),
            logprobs=True,
        )

    def sample(self, start: int, count: int) -> RolloutBatch:
        """Groups for prompts start .. start + count - 1 of the stream: generate, decode, score."""
        r, G = self.cfg.rollout, self.cfg.rollout.group_size
        batch = RolloutBatch(G)
        batch.problems = [self.stream.at(start + k) for k in range(count)]
        batch.prompts = [prompt_ids(self.tokenizer, p, r.template) for p in batch.problems]
        requests = [
            GenerationRequest(prompt=ids, params=self.params(start + k))
            for k, ids in enumerate(batch.prompts)
        ]
        outs = self.generator.generate(requests)  # request-major: G samples of prompt 0, then prompt 1, ...
        batch.completions = [list(o.token_ids) for o in outs]
        batch.engine_logprobs = [[lp.logprob for lp in o.logprobs or []] for o in outs]
        batch.truncated = [o.finish_reason == "length" for o in outs]
        batch.texts = [
            completion_text(self.tokenizer, batch.prompts[i // G], ids, r.template)
            for i, ids in enumerate(batch.completions)
        ]
        problems = [p for p in batch.problems for _ in range(G)]
        scored = self.task.score_batch(problems, batch.texts)
        batch.scores = [float(reward) for reward, _ in scored]
        batch.correct = [bool(details["correct"]) for _, details in scored]
        answer_tag = r.template == "r1_zero"
        batch.format_ok = [format_reward(t, answer_tag=answer_tag) for t in batch.texts]
        batch.rewards = self.rewards(batch, start)
        return batch

    def rewards(self, batch: RolloutBatch, start: int) -> list[float]:
        w, G = self.cfg.reward, batch.group_size
        if w.random:  # the control: one seeded generator per prompt index
            out = []
            for g in range(len(batch.problems)):
                gen = torch.Generator().manual_seed(seed_of(self.cfg.run.seed, "random-reward", start + g))
                out += (torch.rand(G, generator=gen) < w.random_p).float().tolist()
            return out
        rewards = []
        for ids, score, fmt in zip(batch.completions, batch.scores, batch.format_ok):
            r = w.correct_weight * score + w.format_weight * fmt
            if w.overlong == "penalty":
                r += overlong_penalty(
                    len(ids), self.cfg.rollout.max_new_tokens, w.overlong_buffer, w.overlong_penalty
                )
            rewards.append(r)
        return rewards

    def collect(self, cursor: int) -> tuple[RolloutBatch, dict, int]:
        """One step's groups from prompt `cursor` on: (batch, stats, new cursor). With dynamic sampling
        zero-variance groups are dropped and refilled; stats describe every group sampled."""
        r, g = self.cfg.rollout, self.cfg.grpo
        want = r.prompts_per_step
        kept = RolloutBatch(r.group_size)
        sampled: list[RolloutBatch] = []
        t0 = time.perf_counter()
        rounds = 0
        while True:
            missing = want - len(kept.problems)
            seen = sum(len(b.problems) for b in sampled)
            keep_rate = max(len(kept.problems) / seen, 0.25) if seen else 1.0
            count = min(math.ceil(missing / keep_rate), 2 * want)
            batch = self.sample(cursor, count)
            cursor += count
            sampled.append(batch)
            for k in range(len(batch.problems)):
                if len(kept.problems) < want and not (g.dynamic_sampling and batch.zero_variance(k)):
                    kept.extend_group(batch, k)
            rounds += 1
            if not g.dynamic_sampling or len(kept.problems) >= want or rounds > g.max_refills:
                break
        return kept, self.stats(sampled, kept, rounds, time.perf_counter() - t0), cursor

    def stats(self, sampled: list[RolloutBatch], kept: RolloutBatch, rounds: int, seconds: float) -> dict:
        groups = sum(len(b.problems) for b in sampled)
        zero = sum(b.zero_variance(k) for b in sampled for k in range(len(b.problems)))
        rewards = [x for b in sampled for x in b.rewards]
        lengths = [len(c) for b in sampled for c in b.completions]
        return {
            "reward": _mean(rewards),
            "accuracy": _mean([float(x) for b in sampled for x in b.correct]),
            "format": _mean([x for b in sampled for x in b.format_ok]),
            "response_length": _mean(lengths),
            "response_length_max": max(lengths, default=0),
            "truncated": _mean([float(x) for b in sampled for x in b.truncated]),
            "zero_variance": zero / max(groups, 1),
            "groups_sampled": groups,
            "groups_kept": len(kept.problems),
            "sampling_rounds": rounds,
            "generated_tokens": sum(lengths),
            "prompt_tokens": sum(len(p) for b in sampled for p in b.prompts),
            "gen_seconds": seconds,
        }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


# ----------------------------------------------------------------------------------- held-out pass@1


def evaluate(
    generator: Generator,
    tokenizer: Tokenizer,
    task: Task,
    problems: list[Problem],
    template: str,
    max_new_tokens: int,
    stop: list[str] | None = None,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int = 0,
) -> dict:
    """pass@1 on `problems`: greedy (temperature 0, one sample) or the mean correctness of `samples`
    sampled completions per problem. Also the mean response length (tokens) and the format rate.
    Returns the metrics and a few example completions (`examples`)."""
    n = 1 if temperature == 0 else samples
    requests = [
        GenerationRequest(
            prompt=prompt_ids(tokenizer, p, template),
            params=SamplingParams(
                n=n,
                temperature=temperature,
                max_new_tokens=max_new_tokens,
                stop=list(stop or []),
                seed=seed_of(seed, "eval", p.id),
            ),
        )
        for p in problems
    ]
    t0 = time.perf_counter()
    outs = generator.generate(requests)
    texts = [
        completion_text(tokenizer, requests[i // n].prompt, o.token_ids, template) for i, o in enumerate(outs)
    ]
    expanded = [p for p in problems for _ in range(n)]
    scored = task.score_batch(expanded, texts)
    correct = [float(d["correct"]) for _, d in scored]
    answer_tag = template == "r1_zero"
    return {
        "pass@1": _mean(correct),
        "response_length": _mean([len(o.token_ids) for o in outs]),
        "format": _mean([format_reward(t, answer_tag=answer_tag) for t in texts]),
        "truncated": _mean([float(o.finish_reason == "length") for o in outs]),
        "problems": len(problems),
        "samples_per_problem": n,
        "generated_tokens": sum(len(o.token_ids) for o in outs),
        "seconds": time.perf_counter() - t0,
        "examples": [
            {"prompt": p.prompt, "reference": p.reference, "completion": t, "correct": bool(c)}
            for p, t, c in list(zip(expanded, texts, correct))[:3]
        ],
    }
