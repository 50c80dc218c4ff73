"""Learning: pretraining beats the corpus's unigram entropy by far; SFT teaches R1's chat format."""

import json

import pytest

from nanoseek.model import DeepSeekV3
from nanoseek.tasks import get_task
from nanoseek.tokenizer import Tokenizer, render_prompt, split_completion
from nanoseek.train import load_config, train
from nanoseek.train.evaluate import greedy_generate
from nanoseek.train.report import read_metrics
from nanoseek.train.toy_data import build_toy_shards, write_task_chat

COMMON = ["run.device=cpu", "run.progress=false", "cost.peak_flops=1e11"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    shards, _ = build_toy_shards(tmp_path_factory.mktemp("toy"), n_docs=600)
    out = tmp_path_factory.mktemp("pretrain")
    cfg = load_config(
        None,
        [
            *COMMON,
            f"run.out={out}",
            f'data.train=["{shards}"]',
            "model.depth=2",
            "train.seq_len=128",
            "train.device_batch_size=4",
            "train.max_steps=200",
            "train.warmup_steps=5",
            "train.lr=3e-3",
            "eval.every=100",
            "eval.batches=4",
            'eval.sample_prompts=["Question: What is 12 + 34?"]',
            "eval.sample_tokens=16",
        ],
    )
    return out, train(cfg)


def test_pretraining_goes_far_below_unigram_entropy(pretrained):
    out, s = pretrained
    assert s["unigram_entropy"] > 2.5  # the corpus is not trivial ...
    assert s["val_loss"] < 0.5 * s["unigram_entropy"], s  # ... and the model learned far more than counts
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [0, 100, 200]
    assert evals[-1]["val_bpb"] < evals[0]["val_bpb"]
    assert s["cost"]["tokens"] == 200 * 4 * 128 and s["cost"]["flops"] > 0 and s["cost"]["mfu"] > 0
    report = (out / "report.md").read_text()
    for text in (
        "unigram entropy",
        "final val bits per byte",
        "DeepSeek-V3, for scale",
        "MFU",
        "![loss](loss.png)",
    ):
        assert text in report
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_sft_learns_the_chat_format(pretrained, tmp_path):
    base, _ = pretrained
    data = write_task_chat(tmp_path / "chat.jsonl", "arithmetic", 1000, seed=1)
    with open(data, "a") as f:
        f.write('{"messages": [{"role": "robot", "content": "hi"}]}\n')  # skipped with --skip-bad
    out = tmp_path / "sft"
    cfg = load_config(
        None,
        [
            *COMMON,
            "run.kind=sft",
            f"run.out={out}",
            f"model.init={base}",
            f'data.train=["{data}"]',
            "data.skip_bad=true",
            "data.val_fraction=0.05",
            "train.seq_len=224",  # the longest conversation
            "train.device_batch_size=8",
            "train.max_steps=300",
            "train.warmup_steps=5",
            "train.lr=3e-3",
            "train.weight_decay=0",
            "eval.every=150",
            "eval.batches=4",
            "eval.num_samples=1",
            "eval.sample_tokens=200",
        ],
    )
    s = train(cfg)
    assert s["val_loss"] < 1.5
    assert "1 malformed skipped" in (out / "report.md").read_text()

    model = DeepSeekV3.from_pretrained(s["model_dir"]).eval()  # the exported HF directory ...
    tok = Tokenizer.from_dir(s["model_dir"])  # ... with the tokenizer copied in
    # held-out problems (the test split is never trained on); long multiplications are left out: a
    # 0.5M-parameter model loses its way in their long traces after this little training
    for problem in get_task("arithmetic", ops="+-").problems("test", n=6):
        question = problem.prompt
        ids = render_prompt(tok, [{"role": "user", "content": question}])
        text = tok.decode(greedy_generate(model, ids, 200, tok.eos_id))
        reasoning, content = split_completion(text)
        assert reasoning and content, (question, text)
    logged = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "sample"]
    assert logged and all({"reasoning_content", "content"} <= r.keys() for r in logged)
    assert json.loads((out / "checkpoints" / "step_000300" / "trainer.json").read_text())["step"] == 300
