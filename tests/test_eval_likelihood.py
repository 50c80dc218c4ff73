"""Multiple choice by likelihood: the continuation log-probs against a plain forward per sequence,
lm-eval's context/continuation split, acc vs acc_norm by hand, and the runner's likelihood mode."""

import json
import string

import pytest
import torch
import torch.nn.functional as F
from helpers import tokenizer_on

from nanoseek.eval import EvalConfig, LikelihoodScorer, run_eval
from nanoseek.eval import likelihood as lk
from nanoseek.model import DeepSeekV3, config_for_depth
from nanoseek.tasks import Problem, get_task

QUESTIONS = [
    ("What color is the sky on a clear day?", ["blue", "green", "a very long answer about red"], 0),
    ("How many legs does a cat have?", ["four", "two", "seven hundred"], 0),
    ("Which one is a fruit?", ["a rock", "an apple", "the moon"], 1),
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    text = "\n".join(f"Question: {q}\nAnswer: {' '.join(c)}" for q, c, _ in QUESTIONS * 20)
    tok = tokenizer_on(text, d, 300)
    cfg = config_for_depth(2, vocab_size=tok.vocab_size, mtp=0).replace(max_position_embeddings=64)
    torch.manual_seed(0)
    return DeepSeekV3(cfg).eval(), tok


def mc_file(tmp_path):
    path = tmp_path / "mc.jsonl"
    with open(path, "w") as f:
        for q, choices, answer in QUESTIONS:
            f.write(json.dumps({"question": q, "choices": choices, "answer": answer}) + "\n")
    return path


def test_logprobs_match_a_plain_forward_of_each_sequence(lm):
    model, tok = lm
    context, continuations = (
        "Question: Which one is a fruit?\nAnswer:",
        [" a rock", " an apple", " the moon x y"],
    )
    batched = lk.continuation_logprobs(model, tok, context, continuations)
    for continuation, (logprob, n) in zip(continuations, batched):
        ctx_ids, cont_ids = lk.encode_pair(tok, context, continuation)
        ids = torch.tensor([ctx_ids + cont_ids])
        with torch.no_grad():
            logp = F.log_softmax(model(ids)[0], dim=-1)  # (L, V); row t predicts token t + 1
        expected = sum(logp[len(ctx_ids) + i - 1, t].item() for i, t in enumerate(cont_ids))
        assert n == len(cont_ids) > 0
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_long_sequences_are_cut_from_the_left(lm):
    model, tok = lm
    context = "Question: " + "very " * 200 + "long?\nAnswer:"  # far beyond max_position_embeddings = 64
    [(logprob, n)] = lk.continuation_logprobs(model, tok, context, [" blue"])
    assert n == len(lk.encode_pair(tok, context, " blue")[1]) and logprob < 0


def test_context_continuation_split_follows_lm_eval(lm):
    _, tok = lm
    ctx, cont = lk.encode_pair(tok, "Answer: ", "blue")  # trailing space moves to the continuation
    assert ctx[0] == tok.bos_id
    assert tok.decode(ctx[1:]) == "Answer:" and tok.decode(cont) == " blue"


def test_question_text_and_styles(tmp_path):
    p = get_task(f"mmlu:{mc_file(tmp_path)}").problems("test")[2]
    assert lk.question_text(p) == "Which one is a fruit?"
    context, conts = lk.mc_request(p, "cloze")
    assert context == "Question: Which one is a fruit?\nAnswer:" and conts == [
        " a rock",
        " an apple",
        " the moon",
    ]
    context, conts = lk.mc_request(p, "letter")
    assert context.endswith("B. an apple\nC. the moon\nAnswer:") and conts == [" A", " B", " C"]
    with pytest.raises(ValueError, match="no choices"):
        lk.mc_request(Problem("x", "2+2?", "4"))


def test_acc_and_acc_norm_by_hand(lm, monkeypatch):
    model, tok = lm
    p = Problem("q", "Pick one", "B", choices=["ab", "abcdefghij", "abcd"])
    # sums: A -4 (2 chars: -2/char), B -6 (10 chars: -0.6/char), C -9 (4 chars: -2.25/char)
    monkeypatch.setattr(lk, "continuation_logprobs", lambda m, t, c, conts: [(-4.0, 1), (-6.0, 3), (-9.0, 2)])
    r = LikelihoodScorer(model, tok).score(p)
    assert (r["pred"], r["correct"]) == ("A", False)  # the highest raw sum
    assert (r["pred_norm"], r["correct_norm"]) == ("B", True)  # the highest per character
    assert r["lengths"] == [2, 10, 4]
    # ties go to the first choice
    monkeypatch.setattr(lk, "continuation_logprobs", lambda m, t, c, conts: [(-1.0, 1)] * 3)
    assert LikelihoodScorer(model, tok, style="letter").score(p)["pred"] == "A"


def test_runner_scores_multiple_choice_by_likelihood(lm, tmp_path):
    model, tok = lm
    scorer = LikelihoodScorer(model, tok)
    cfg = EvalConfig(tasks=[f"mmlu:{mc_file(tmp_path)}"], k=4, likelihood=True)
    summary = run_eval(None, cfg, tmp_path / "out", model="random", scorer=scorer, progress=False)
    records = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 3  # one record per problem, whatever k
    t = summary["tasks"][cfg.tasks[0]]
    assert t["mode"] == "likelihood" and t["problems"] == 3
    assert t["acc"] == pytest.approx(sum(r["correct"] for r in records) / 3)
    for r in records:
        best = max(range(3), key=lambda i: r["logprobs"][i])
        assert r["pred"] == string.ascii_uppercase[best]
    with pytest.raises(ValueError, match="native checkpoint"):
        run_eval(None, cfg, tmp_path / "out2", model="random", progress=False)
