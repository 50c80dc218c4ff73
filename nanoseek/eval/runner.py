"""Run tasks x problems x k samples through any `Generator`, resumably; write samples, summary, report.

    from nanoseek.eval import EvalConfig, run_eval
    summary = run_eval(generator, EvalConfig(tasks=["gsm8k"], k=8), "runs/eval-gsm8k", model="runs/sft")
    # ... killed? Run the same call again: it continues where it stopped.

The run directory:
    config.json     the protocol (`EvalConfig.identity()`) and the model; a resume must match it
    samples.jsonl   one scored sample per line, appended and fsync'd as samples complete
    timing.jsonl    seconds spent per batch, all sessions (device-hours and $ in the report)
    summary.json    the metrics with their error bars, computed from samples.jsonl alone
                    (`nanoseek.eval.report.summarize`, `nanoseek.eval.stats`)
    problems.csv    the per-problem table: samples, correct, pass rate, majority answer
    report.md       the same as markdown tables, with token usage and $

With `seeds = N > 1` the run is N runs of k samples per problem, seeds `seed`, `seed + 1`, ..., each a
complete run directory `seed-<s>/` as above (resumable on its own, and a result `--compare` reads);
the top directory holds the config, and the summary, problems.csv and report over all of them
(error bars over problems x seeds).

Every (task, problem, sample j) has a fixed seed: `problem_seed(...) + j` (the protocol's rule: sample
j of a request with seed s uses s + j, in any batch). A problem with all k samples to do is one request
with n = k (prefilled once); a partly done one gets one n = 1 request per missing sample, seeded
s + j, so a resumed run regenerates exactly what an uninterrupted one would have. Since the summary is
computed from the file, sorted by sample index, a killed and resumed run ends with the same summary.

Prompts are the tasks' questions as a user message (with `instruction` appended to one that does not
already hold it), rendered by the generator with THE chat format (think=True opens R1's `<think>`
block). With a `think_prefix` (R1's protocol: "<think>\\n") the runner renders the prompt itself with
the model's tokenizer (`forced_prompt`), appends the prefix unless the rendered prompt already ends
with it (R1's format and R1-distill's template do), and sends token ids; the reply is then the prefix
followed by the generated text, and that reply is what is split and scored.

The scored text is rebuilt from the completion's (reasoning_content, content) as
`<think>\\n{reasoning}\\n</think>\\n\\n{content}`, so every generator that splits a completion the same
way (native engine, a server in front of it) gets the same verdict.
A generator whose completions carry only `text` has it split here, by the chat format's
`split_completion`, as the native engine would have. Under think=True text without `</think>` is thinking
that never finished and has no answer; so if such a generator finishes a completion without any think
tag and has not closed a think block in any completion so far, it does not write R1's format (its
answers would all score 0), and the run stops with an error saying so instead (use think=False,
`--no-think`, for a model that answers directly).
Multiple-choice tasks can instead be scored by likelihood (`likelihood=True`, native models only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nanoseek.engine.protocol import Completion, GenerationRequest, Generator, SamplingParams
from nanoseek.eval.config import CODE_TASKS, IDENTITY_DEFAULTS, EvalConfig
from nanoseek.eval.likelihood import LikelihoodScorer
from nanoseek.eval.report import problem_table, summarize, write_outputs
from nanoseek.eval.store import SampleStore
from nanoseek.tasks import Problem, Task
from nanoseek.tasks.spec import TaskSpec
from nanoseek.tokenizer.chat_format import END_THINK, THINK, render_prompt, split_completion

# one unfinished problem: (task spec, task, problem index, problem, sample indices still to do)
Item = tuple[TaskSpec, Task, int, Problem, list[int]]


def problem_seed(base_seed: int, task: str, problem_id: str) -> int:
    """The seed of sample 0 of a problem (sample j uses this + j); stable across runs and machines."""
    digest = hashlib.sha256(f"{base_seed}/{task}/{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # < 2**31, room for + j


def is_text_only(completion: Completion) -> bool:
    """Whether the generator left the reasoning / answer split undone (both None)."""
    return completion.reasoning_content is None and completion.content is None


def completion_split(completion: Completion, think: bool = True) -> tuple[str, str]:
    """(reasoning, answer) of a completion: the generator's split, or the chat format's split of its text."""
    if is_text_only(completion):
        return split_completion(completion.text, think=think)
    return completion.reasoning_content or "", completion.content or ""


def scored_text(completion: Completion, think: bool = True) -> str:
    """The text a task scores, rebuilt from the reasoning / answer split."""
    reasoning, content = completion_split(completion, think)
    if not think and not reasoning:
        return content
    return f"<think>\n{reasoning}\n</think>\n\n{content}"


def check_text_only(completions: list[Completion], think: bool, closed_before: bool) -> bool:
    """Refuse a generator whose text-only completions show no sign of R1's format (see the module
    docstring); returns whether a think block has now been closed in one of them."""
    text_only = [c for c in completions if is_text_only(c)]
    closed = closed_before or any(END_THINK in c.text for c in text_only)
    plain = [c for c in text_only if c.finish_reason == "stop" and THINK not in c.text]
    if think and plain and not closed:
        raise ValueError(
            "the generator returns completions with only `text` (no reasoning_content / content) that "
            "finish without a think block, e.g. "
            f"{plain[0].text[:80]!r}; under think=True that text is unfinished thinking with no answer, "
            "and every sample would score 0. Evaluate a model that answers directly with think=False "
            "(--no-think), or have the generator split its completions "
            "(nanoseek.tokenizer.split_completion)"
        )
    return closed


def user_message(spec: TaskSpec, problem: Problem, instruction: str) -> str:
    """The question as sent: the problem's prompt, and the instruction after it unless it already holds
    it (every math task's prompt ends with R1's \\boxed{} instruction already) or asks for code."""
    if not instruction or instruction in problem.prompt or spec.name.partition(":")[0] in CODE_TASKS:
        return problem.prompt
    return f"{problem.prompt.rstrip()}\n\n{instruction}"


def forced_prompt(tokenizer: Any, messages: list[dict[str, Any]], prefix: str) -> list[int]:
    """Token ids of the chat prompt with the reply forced to start with `prefix`: the generation prompt
    as the model's template (or R1's format) renders it, then `prefix` unless the prompt already ends
    with it. The prefix is encoded with the tokenizer's control tokens (`<think>` is one token where
    the vocabulary has it)."""
    ids = render_prompt(tokenizer, messages, think=True)
    if tokenizer.decode(ids).endswith(prefix):
        return ids
    return ids + tokenizer.encode(prefix)


def load_problems(spec: TaskSpec, cfg: EvalConfig) -> tuple[Task, list[Problem]]:
    task = spec.build()
    problems = task.problems(cfg.split, cfg.max_problems)
    if not problems:
        raise ValueError(f"task {spec.label!r}: no problems in split {cfg.split!r}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError(f"task {spec.label!r}: problem ids are not unique")
    return task, problems


def check_config(out_dir: Path, cfg: EvalConfig, model: str) -> None:
    """Write config.json, or check that an existing run was made with the same protocol."""
    path = out_dir / "config.json"
    mine = {"model": model, **cfg.identity()}
    if path.exists():
        theirs = {**IDENTITY_DEFAULTS, **json.loads(path.read_text())}
        diff = sorted(k for k in mine if theirs.get(k) != mine[k])
        if diff:
            shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine[k]!r} now" for k in diff)
            raise ValueError(
                f"{out_dir} holds an eval with a different protocol ({shown}); use another --out"
            )
        return
    path.write_text(json.dumps({**mine, "settings": cfg.to_dict()}, indent=2) + "\n")


class EvalRunner:
    """One eval run over a generator (and, for likelihood scoring, a native model)."""

    def __init__(
        self,
        generator: Generator | None,
        cfg: EvalConfig,
        out_dir: str | Path,
        model: str = "",
        scorer: LikelihoodScorer | None = None,
        progress: bool = True,
        tokenizer: Any = None,
    ):
        self.generator, self.cfg, self.model, self.scorer = generator, cfg, model, scorer
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.tokenizer = tokenizer  # renders prompts with a forced reply prefix (cfg.think_prefix)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        check_config(self.out_dir, cfg, model)
        self.store = SampleStore(self.out_dir / "samples.jsonl")
        self.tasks = [(spec, *load_problems(spec, cfg)) for spec in cfg.specs]
        self.closed_think = False  # a text-only completion has closed a think block (check_text_only)
        if cfg.think_prefix and tokenizer is None and any(self.mode(p) == "generate" for *_, p in self.tasks):
            raise ValueError(
                f"forcing the reply to start with {cfg.think_prefix!r} (R1's protocol) needs the model's "
                "tokenizer to render the prompt, and this generator (an API?) renders its own: pass "
                "--think-prefix '' to leave the reply's start to it (DeepSeek's API and R1-distill's "
                "template open the think block themselves)"
            )

    def mode(self, problems: list[Problem]) -> str:
        """How a task is scored: by likelihood if asked and it is multiple choice, else by generation."""
        return "likelihood" if self.cfg.likelihood and all(p.choices for p in problems) else "generate"

    def pending(self, mode: str) -> list[Item]:
        """(spec, task, problem index, problem, sample indices still to do) of every unfinished problem."""
        done, out = self.store.done, []
        for spec, task, problems in self.tasks:
            if self.mode(problems) != mode:
                continue
            k = self.cfg.k_for(spec.label) if mode == "generate" else 1
            for i, p in enumerate(problems):
                todo = [j for j in range(k) if (spec.label, p.id, j) not in done]
                if todo:
                    out.append((spec, task, i, p, todo))
        return out

    def run(self) -> dict[str, Any]:
        """Score every sample not yet in samples.jsonl, then summarize the whole file."""
        generative, mc = self.pending("generate"), self.pending("likelihood")
        if mc and self.scorer is None:
            raise ValueError("likelihood scoring of multiple-choice tasks needs a native checkpoint")
        if generative and self.generator is None:
            raise ValueError("generative tasks need a generator")
        total = sum(len(todo) for *_, todo in generative + mc)
        with tqdm(total=total, unit="sample", disable=not self.progress, dynamic_ncols=True) as bar:
            for item in mc:
                start = time.perf_counter()
                self.store.append([self.likelihood_record(*item[:4])])
                self.log_batch(1, time.perf_counter() - start)
                bar.update(1)
            for batch in self.batches(generative):
                start = time.perf_counter()
                records = self.generate(batch)
                self.store.append(records)
                self.log_batch(len(records), time.perf_counter() - start)
                bar.update(len(records))
        return write_summary(
            self.out_dir, self.store.records(), self.cfg, self.model, self.task_info(), self.timing()
        )

    def task_info(self) -> tuple[list[str], dict[str, str], dict[str, int]]:
        """The tasks' labels, scoring modes and sizes (`summarize`'s arguments)."""
        labels = [spec.label for spec, _, _ in self.tasks]
        modes = {spec.label: self.mode(problems) for spec, _, problems in self.tasks}
        sizes = {spec.label: len(problems) for spec, _, problems in self.tasks}
        return labels, modes, sizes

    def batches(self, pending: list[Item]) -> list[list[Item]]:
        """Group unfinished problems into generate() calls of about `concurrency` samples."""
        out, current, size = [], [], 0
        for item in pending:
            current.append(item)
            size += len(item[4])
            if size >= self.cfg.concurrency:
                out.append(current)
                current, size = [], 0
        return out + ([current] if current else [])

    def generate(self, batch: list[Item]) -> list[dict[str, Any]]:
        """Generate and score the missing samples of a batch of problems; their records."""
        cfg = self.cfg
        requests, slots = [], []  # slots[r] = (item, sample index of completion 0 of request r)
        for item in batch:
            spec, _, _, problem, todo = item
            seed = problem_seed(cfg.seed, spec.label, problem.id)
            k = cfg.k_for(spec.label)
            groups = [(0, k)] if len(todo) == k else [(j, 1) for j in todo]
            for first, n in groups:
                params = SamplingParams(
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    seed=seed + first,
                    n=n,
                )
                requests.append(self.request(spec, problem, params))
                slots.append((item, first))
        completions = self.generator.generate(requests)
        expected = sum(r.params.n for r in requests)
        if len(completions) != expected:
            raise RuntimeError(
                f"the generator returned {len(completions)} completions for {expected} samples"
            )
        for c in completions:  # the forced start is part of the reply: split and scored with it
            if cfg.think_prefix and is_text_only(c):
                c.text = cfg.think_prefix + c.text
        self.closed_think = check_text_only(completions, cfg.think, self.closed_think)
        by_task: dict[str, list] = {}
        for c in completions:
            item, first = slots[c.request_index]
            by_task.setdefault(item[0].label, []).append((item, first + c.index, c))
        records = []
        for rows in by_task.values():
            task = rows[0][0][1]
            texts = [scored_text(c, cfg.think) for _, _, c in rows]
            results = task.score_batch([item[3] for item, _, _ in rows], texts)
            for (item, j, c), text, (reward, details) in zip(rows, texts, results):
                records.append(self.sample_record(item, j, c, text, reward, details))
        return records

    def messages(self, spec: TaskSpec, problem: Problem) -> list[dict[str, Any]]:
        """The chat messages of a problem: the system prompt if one is set, then the question."""
        system = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
        return system + [{"role": "user", "content": user_message(spec, problem, self.cfg.instruction)}]

    def request(self, spec: TaskSpec, problem: Problem, params: SamplingParams) -> GenerationRequest:
        """A problem's request: chat messages, or with a forced reply prefix the prompt's token ids."""
        messages = self.messages(spec, problem)
        if self.cfg.think_prefix:
            ids = forced_prompt(self.tokenizer, messages, self.cfg.think_prefix)
            return GenerationRequest(prompt=ids, params=params)
        return GenerationRequest(messages=messages, params=params, think=self.cfg.think)

    def sample_record(
        self, item: Item, j: int, c: Completion, text: str, reward: float, details: dict[str, Any]
    ) -> dict[str, Any]:
        spec, _, index, problem, _ = item
        reasoning, answer = completion_split(c, self.cfg.think)
        return {
            "task": spec.label,
            "problem_id": problem.id,
            "problem_index": index,
            "sample": j,
            "seed": problem_seed(self.cfg.seed, spec.label, problem.id) + j,
            "prompt": user_message(spec, problem, self.cfg.instruction),
            "reference": problem.reference,
            "completion": c.text,
            "reasoning": reasoning,
            "answer": answer,
            "scored_text": text,
            "extracted": details.get("extracted"),
            "correct": bool(details.get("correct", reward > 0)),
            "reward": float(reward),
            "format": details.get("format"),
            "format_reward": details.get("format_reward"),
            "finish_reason": c.finish_reason,
            "prompt_tokens": int(c.prompt_tokens),
            "completion_tokens": int(c.completion_tokens),
        }

    def likelihood_record(self, spec: TaskSpec, task: Task, index: int, problem: Problem) -> dict[str, Any]:
        result = self.scorer.score(problem)
        return {
            "task": spec.label,
            "problem_id": problem.id,
            "problem_index": index,
            "sample": 0,
            "kind": "likelihood",
            "prompt": problem.prompt,
            "reference": problem.reference,
            **result,
            "extracted": result["pred"],
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }

    def log_batch(self, samples: int, seconds: float) -> None:
        """Time spent per batch, appended like the samples (a killed session keeps what it logged)."""
        with open(self.out_dir / "timing.jsonl", "a") as f:
            f.write(json.dumps({"samples": samples, "seconds": seconds, "time": time.time()}) + "\n")

    def timing(self) -> dict[str, float]:
        """Samples generated and seconds spent, over every session of the run."""
        path = self.out_dir / "timing.jsonl"
        samples, seconds = 0, 0.0
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed session
            samples, seconds = samples + row["samples"], seconds + row["seconds"]
        return {"samples": samples, "seconds": seconds}


def seed_runs(cfg: EvalConfig, out_dir: str | Path) -> list[tuple[EvalConfig, Path]]:
    """The (config, directory) of each seed of a multi-seed run: seeds seed, seed + 1, ... in seed-<s>/."""
    return [
        (dataclasses.replace(cfg, seeds=1, seed=cfg.seed + r), Path(out_dir) / f"seed-{cfg.seed + r}")
        for r in range(cfg.seeds)
    ]


def evaluate(
    generator: Generator | None,
    cfg: EvalConfig,
    out_dir: str | Path,
    model: str = "",
    scorer: LikelihoodScorer | None = None,
    progress: bool = True,
    tokenizer: Any = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run (or resume) an eval, of one seed or of `cfg.seeds`; (its summary, its timing)."""
    if cfg.seeds == 1:
        runner = EvalRunner(generator, cfg, out_dir, model, scorer, progress, tokenizer)
        return runner.run(), runner.timing()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_config(out_dir, cfg, model)
    runners = []
    for seed_cfg, seed_dir in seed_runs(cfg, out_dir):
        runners.append(EvalRunner(generator, seed_cfg, seed_dir, model, scorer, progress, tokenizer))
        runners[-1].run()
    records = [{**r, "run": i} for i, runner in enumerate(runners) for r in runner.store.records()]
    timings = [runner.timing() for runner in runners]
    timing = {key: sum(t[key] for t in timings) for key in ("samples", "seconds")}
    return write_summary(out_dir, records, cfg, model, runners[0].task_info(), timing), timing


def write_summary(
    out_dir: Path, records: list[dict], cfg: EvalConfig, model: str, info: tuple, timing: dict[str, float]
) -> dict[str, Any]:
    """Summarize the records (`info`: EvalRunner.task_info()) and write summary.json, problems.csv and
    report.md; the summary."""
    labels, modes, sizes = info
    summary = summarize(records, cfg, model, labels, modes, sizes)
    write_outputs(out_dir, summary, cfg, timing, problem_table(records, cfg, labels, modes))
    return summary


def run_eval(
    generator: Generator | None, cfg: EvalConfig, out_dir: str | Path, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """Run (or resume) an eval into `out_dir` and return its summary (also in summary.json); the other
    arguments are `evaluate`'s (`model`, `scorer`, `progress`, `tokenizer`)."""
    return evaluate(generator, cfg, out_dir, *args, **kwargs)[0]


def run_one_task(
    generator: Generator, cfg: EvalConfig, out_dir: str | Path, model: str = "", progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) the eval of `cfg`'s one task; its metrics, with the `seconds` of every session."""
    summary, timing = evaluate(generator, cfg, out_dir, model, progress=progress)
    return {**summary["tasks"][cfg.tasks[0]], "seconds": timing["seconds"]}
