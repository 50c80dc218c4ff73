"""lm-evaluation-harness's `local-completions` model runs a loglikelihood (multiple-choice) task
against `nanoseek serve`, offline: a local task YAML over a local JSONL file, the checkpoint's
tokenizer.json as lm-eval's Hugging Face tokenizer, token-id requests (`echo` + `logprobs`). The
log-likelihoods it reports must be the model's own, on text that starts with BOS as every pretraining
document did: lm-eval sends token ids without BOS unless `add_bos_token=True` (docs/serving.md says so).
Skipped unless `pip install "lm-eval[api]"`.
"""

import json
import shutil

import pytest
import torch

from nanoseek.engine import Engine
from nanoseek.model import DeepSeekV3
from nanoseek.serve import ServerConfig, create_app
from nanoseek.serve.background import BackgroundServer

lm_eval = pytest.importorskip("lm_eval", reason='lm-eval is not installed: pip install "lm-eval[api]"')
pytest.importorskip(
    "tenacity", reason='lm-eval\'s API models need its [api] extra: pip install "lm-eval[api]"'
)
pytest.importorskip("transformers", reason="lm-eval's huggingface tokenizer backend needs transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

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


def loglikelihood(model, tokenizer, context: str, continuation: str, bos: bool = True) -> float:
    """log p(continuation | context), tokenized the way lm-eval does (pair split), after BOS if `bos`."""
    first = [tokenizer.bos_id] if bos else []
    whole = first + tokenizer.encode(context + continuation)
    n_context = len(first) + len(tokenizer.encode(context))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole[:-1]]))[0].float(), -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_context, len(whole)))


def attend_to_context(checkpoint) -> None:
    """Give the demo's bigram machine attention outputs (seeded), so what comes before, BOS included,
    changes its log-likelihoods."""
    model = DeepSeekV3.from_pretrained(checkpoint)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.layers:
            weight = layer.self_attn.o_proj.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    model.save_pretrained(checkpoint)


def test_lm_eval_local_completions_loglikelihood_task(demo_checkpoint, tmp_path, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(TASK_YAML.format(data=data))
    checkpoint = shutil.copytree(demo_checkpoint, tmp_path / "model")  # the shared one stays as built
    attend_to_context(checkpoint)
    engine = Engine.from_pretrained(checkpoint, max_slots=8)
    from lm_eval.tasks import TaskManager

    with BackgroundServer(create_app(engine, ServerConfig(model_name="demo"))) as server:
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={
                "model": "demo",
                "base_url": server.url + "/v1/completions",
                "tokenizer": str(checkpoint),
                "tokenizer_backend": "huggingface",
                "tokenized_requests": True,
                "add_bos_token": True,  # without it the ids go without the BOS the model was trained with
                "max_length": 250,
                "num_concurrent": 1,
                "max_retries": 1,
            },
            tasks=["nanoseek_serve_tiny"],
            task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
            bootstrap_iters=0,
            log_samples=True,
        )
    summary = results["results"]["nanoseek_serve_tiny"]
    assert 0.0 <= summary["acc,none"] <= 1.0
    samples = results["samples"]["nanoseek_serve_tiny"]
    assert len(samples) == len(ROWS)
    shifts = []
    for sample in samples:
        assert len(sample["resps"]) == 3
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"]):
            reported, _greedy = resp[0]
            expected = loglikelihood(engine.model, engine.tokenizer, context, continuation)
            assert reported == pytest.approx(expected, rel=1e-3, abs=1e-2)
            no_bos = loglikelihood(engine.model, engine.tokenizer, context, continuation, bos=False)
            shifts.append(abs(no_bos - expected))
    assert max(shifts) > 0.05  # BOS changes the numbers, so the check above tells the two apart
