"""lm-evaluation-harness's `local-completions` model runs a loglikelihood (multiple-choice) task
against `nanoseek serve`, offline: a local task YAML over a local JSONL file, the checkpoint's
tokenizer.json as lm-eval's Hugging Face tokenizer, token-id requests (`echo` + `logprobs`). The
log-likelihoods it reports must be the model's own. Skipped unless `pip install "lm-eval[api]"`.
"""

import json

import pytest
import torch

from nanoseek.engine import Engine
from nanoseek.serve import ServerConfig, create_app
from nanoseek.serve.background import BackgroundServer
from nanoseek.serve.demo import build_demo_checkpoint

lm_eval = pytest.importorskip("lm_eval", reason='lm-eval is not installed: pip install "lm-eval[api]"')
pytest.importorskip(
    "tenacity", reason='lm-eval\'s API models need its [api] extra: pip install "lm-eval[api]"'
)
pytest.importorskip("transformers", reason="lm-eval's huggingface tokenizer backend needs transformers")

ROWS = [
    {"question": "What color is the sky on a clear day?", "choices": ["blue", "green", "red"], "answer": 0},
    {"question": "How many legs does a dog have?", "choices": ["two", "four", "six"], "answer": 1},
    {"question": "Which is a fruit?", "choices": ["carrot", "apple", "potato"], "answer": 1},
    {"question": "What is 2 + 2?", "choices": ["3", "4", "5"], "answer": 1},
]
TASK_YAML = """task: nanoseek_serve_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), tokenized the way lm-eval does (no BOS, pair split)."""
    whole = tokenizer.encode(context + continuation)
    n_context = len(tokenizer.encode(context))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole[:-1]]))[0].float(), -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_context, len(whole)))


def test_lm_eval_local_completions_loglikelihood_task(tmp_path, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(TASK_YAML.format(data=data))
    checkpoint = build_demo_checkpoint(tmp_path / "model", max_len=256)
    engine = Engine.from_pretrained(checkpoint, max_slots=8)
    from lm_eval.tasks import TaskManager

    try:
        with BackgroundServer(create_app(engine, ServerConfig(model_name="demo"))) as server:
            results = lm_eval.simple_evaluate(
                model="local-completions",
                model_args={
                    "model": "demo",
                    "base_url": server.url + "/v1/completions",
                    "tokenizer": str(checkpoint),
                    "tokenizer_backend": "huggingface",
                    "tokenized_requests": True,
                    "max_length": 250,
                    "num_concurrent": 1,
                    "max_retries": 1,
                },
                tasks=["nanoseek_serve_tiny"],
                task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
                bootstrap_iters=0,
                log_samples=True,
            )
    finally:
        torch.set_num_threads(threads)
    summary = results["results"]["nanoseek_serve_tiny"]
    assert 0.0 <= summary["acc,none"] <= 1.0
    samples = results["samples"]["nanoseek_serve_tiny"]
    assert len(samples) == len(ROWS)
    for sample in samples:
        assert len(sample["resps"]) == 3
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"]):
            reported, _greedy = resp[0]
            expected = loglikelihood(engine.model, engine.tokenizer, context, continuation)
            assert reported == pytest.approx(expected, rel=1e-3, abs=1e-2)
