"""A synthetic graded task for GRPO learning checks (tests/test_lora.py, bench/vllm_check.py): the
reward is the share of a completion's non-space characters that are '7'. Kept free of test-only
imports so a bench in another environment (vLLM's venv) can import it."""

from nanoseek.tasks import Problem, Task


class Sevens(Task):
    """A synthetic graded task: the reward is the share of the completion's characters (spaces aside)
    that are '7'; 'correct' when at least half are."""

    name = "sevens"

    def problems(self, split="test", n=None):
        first = 0 if split == "train" else 1000  # held-out prompts are not training prompts
        return [Problem(f"{split}-{i}", f"Write {i} sevens:", "7") for i in range(first, first + (n or 16))]

    def score_batch(self, problems, completions):
        out = []
        for text in completions:
            chars = [c for c in text if not c.isspace()]
            reward = sum(c == "7" for c in chars) / max(len(chars), 1)
            out.append((reward, {"extracted": None, "correct": reward >= 0.5, "format": "none", "format_reward": 0.0}))  # fmt: skip
        return out
