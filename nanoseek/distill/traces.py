"""Rejection sampling: keep the teacher's verified traces and write them as an SFT dataset.

    stats = write_sft_dataset("runs/distill/traces/samples.jsonl", "runs/distill/sft.jsonl", max_per_problem=1)
    stats.samples, stats.correct, stats.kept, stats.problems_covered

The teacher's samples come from an eval run over the task's train split (`nanoseek.eval.run_eval`, so
trace generation is resumable and scored by the task's own verifier). A sample is kept when
- its answer is verified correct (`correct`), and
- it has R1's format: a finished think block with non-empty reasoning, then a non-empty answer
  (`format_reward` 1; R1 also filtered out unreadable and mixed-language chains of thought), and
- it is not a duplicate of a kept trace of the same problem (same reasoning and answer);
at most `max_per_problem` per problem (lowest sample index first; 0 keeps all). The output is OpenAI
chat JSONL with DeepSeek's `reasoning_content`, which `nanoseek sft` (THE chat format) trains on:

    {"messages": [{"role": "user", "content": PROMPT},
                  {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}]}

A student with its own chat template trains on the traces as that template renders them
(`for_student`): a template that renders `reasoning_content` (Qwen3's, R1's own) takes them as they
are; one without a place for reasoning (Qwen2.5-Instruct, Llama-3-Instruct) would drop the thinking,
so the think block goes into the answer as R1's distilled models write it,
`<think>\nREASONING\n</think>\n\nANSWER`, and the student learns to think in plain text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from nanoseek.data import write_jsonl
from nanoseek.eval.store import SampleStore


@dataclass
class FilterStats:
    samples: int = 0  # teacher samples read
    correct: int = 0  # with a verified answer
    well_formed: int = 0  # correct and in R1's format
    kept: int = 0  # written (after dedup and the per-problem cap)
    problems: int = 0  # problems sampled
    problems_covered: int = 0  # problems with at least one kept trace

    def to_dict(self) -> dict:
        return asdict(self)


def is_well_formed(record: dict) -> bool:
    return bool((record.get("format_reward") or 0) > 0 and (record.get("reasoning") or "").strip())


def conversation(record: dict, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [
        {"role": "user", "content": record["prompt"]},
        {
            "role": "assistant",
            "content": record["answer"].strip(),
            "reasoning_content": record["reasoning"].strip(),
        },
    ]
    return {"messages": messages}


def renders_reasoning(tokenizer) -> bool:
    """Whether the tokenizer's chat format shows an assistant turn's `reasoning_content` (R1's format
    does; of models' own templates, Qwen3's does, Qwen2.5's and Llama-3's do not)."""
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        return True  # R1's format
    probe = "nanoseek-probe-reasoning"
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": probe},
    ]
    return probe in template.text(messages)


def for_student(conversations: list[dict], tokenizer) -> list[dict]:
    """The chat records a student trains on: as they are if its chat format renders reasoning_content,
    else with the think block moved into each assistant answer (`<think>\\n..\\n</think>\\n\\n` + answer)."""
    if renders_reasoning(tokenizer):
        return conversations
    out = []
    for record in conversations:
        messages = []
        for m in record["messages"]:
            if m.get("role") == "assistant" and m.get("reasoning_content"):
                reasoning = m["reasoning_content"]
                m = {k: v for k, v in m.items() if k != "reasoning_content"}
                m["content"] = f"<think>\n{reasoning}\n</think>\n\n{m['content']}"
            messages.append(m)
        out.append({**record, "messages": messages})
    return out


def write_sft_dataset(
    samples_path: str | Path, out_path: str | Path, max_per_problem: int = 1, system: str | None = None
) -> FilterStats:
    """Filter the scored teacher samples into chat JSONL (written atomically); returns the counts."""
    if max_per_problem < 0:
        raise ValueError(f"max_per_problem must be >= 0, got {max_per_problem}")
    samples_path = Path(samples_path)
    if not samples_path.is_file():
        raise FileNotFoundError(f"no teacher samples at {samples_path}")
    stats = FilterStats()
    kept: dict[tuple[str, str], list[tuple[str, str]]] = {}
    rows = []
    for r in SampleStore(samples_path).records():  # sorted by task, problem, sample index
        stats.samples += 1
        key = (r["task"], r["problem_id"])
        kept.setdefault(key, [])
        if not r.get("correct"):
            continue
        stats.correct += 1
        if not is_well_formed(r):
            continue
        stats.well_formed += 1
        trace = (r["reasoning"].strip(), r["answer"].strip())
        if trace in kept[key] or (max_per_problem and len(kept[key]) >= max_per_problem):
            continue
        kept[key].append(trace)
        rows.append(conversation(r, system))
    stats.kept = len(rows)
    stats.problems = len(kept)
    stats.problems_covered = sum(1 for traces in kept.values() if traces)
    write_jsonl(out_path, rows)
    return stats
