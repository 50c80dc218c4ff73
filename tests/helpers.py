"""What several test files build or check the same way: tiny models and tokenizers, the arena's scripted
contestants, servers on free ports, the checks on error bodies. Fixtures built on these live in
conftest.py; a test file imports from here, never from another test file:

    from helpers import greedy, random_model, run, tiny_config

(pytest puts tests/ on sys.path, as it does for every test file here.) Nothing here downloads or trains
for long: every builder makes its artifact in a second or two on a CPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from nanoseek.arena.contestants import Contestant
from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.engine.protocol import Completion, Delta
from nanoseek.model import DeepSeekV3, ModelConfig
from nanoseek.tokenizer import Tokenizer, train_tokenizer

# ---------------------------------------------------------------------------------------------- threads


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads. Tiny models gain nothing from a second thread, and on a
    busy 2-core machine OpenMP's threads spin-wait on each other at every op (up to 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ tiny models


def tiny_config(**overrides) -> ModelConfig:
    """MoE with expert groups, a dense first layer, low-rank queries and one MTP module."""
    base = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        q_lora_rank=24,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=12,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=3,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        num_nextn_predict_layers=1,
        max_position_embeddings=64,
    )
    return ModelConfig(**{**base, **overrides})


def small_config(vocab_size: int, **overrides) -> ModelConfig:
    """32 wide, 2 layers (dense, then MoE with 4 experts), full-rank queries: the checkpoints that tests
    save with a tokenizer (arena contestants, the GRPO base)."""
    base = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        kv_lora_rank=16,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        n_routed_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=256,
    )
    return ModelConfig(**{**base, **overrides})


def random_model(cfg: ModelConfig, seed: int = 0, std: float = 0.1) -> DeepSeekV3:
    """Every weight random (our init zeroes output projections, which makes generation degenerate and
    hides half the weights from a parity test)."""
    torch.manual_seed(seed)
    model = DeepSeekV3(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
        for moe in model.moe_layers():
            moe.gate.e_score_correction_bias.normal_(0, 0.1)
    return model


def bigram_model(cfg: ModelConfig, successor: dict[int, int], mtp_exact: bool = True) -> DeepSeekV3:
    """A scripted model: every block starts as the identity (our init), so the hidden state is the
    current token's embedding and the head maps token t to successor[t]. With mtp_exact the MTP
    module reads only the next token's embedding, so its draft (the successor of the next token) is
    always right."""
    torch.manual_seed(0)
    model = DeepSeekV3(cfg).eval()
    with torch.no_grad():
        emb = model.embed_tokens.weight
        unit = emb / emb.pow(2).mean(-1, keepdim=True).sqrt()  # what the final RMSNorm makes of it
        model.lm_head.weight.zero_()
        for t, nxt in successor.items():
            model.lm_head.weight[nxt] += 20 * unit[t]
        if mtp_exact:
            C = cfg.hidden_size
            model.mtp[0].eh_proj.weight.copy_(torch.cat([torch.eye(C), torch.zeros(C, C)], dim=1))
    return model


def predictable_model(cfg: ModelConfig, noise: float = 0.03) -> DeepSeekV3:
    """A random permutation bigram plus small random attention/MLP weights: attention matters, and
    MTP drafts are right most (not all) of the time."""
    perm = torch.randperm(cfg.vocab_size, generator=torch.Generator().manual_seed(3)).tolist()
    model = bigram_model(cfg, dict(enumerate(perm)))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "down_proj")):
                p.normal_(0, noise)
    return model


# ----------------------------------------------------------------------------------------------- engine


def ragged_prompts(lengths, vocab=300, seed=0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (n,), generator=g).tolist() for n in lengths]


def greedy(max_new_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_new_tokens=max_new_tokens, ignore_eos=True, **kw)


def run(engine: Engine, prompts, params: SamplingParams) -> list[list[int]]:
    return [
        c.token_ids for c in engine.generate([GenerationRequest(prompt=p, params=params) for p in prompts])
    ]


# ------------------------------------------------------------------------------ tokenizers, checkpoints


def tokenizer_on(text: str, folder: Path, vocab_size: int, out_dir: Path | None = None) -> Tokenizer:
    """A byte-level BPE trained quietly on `text` (written to folder/corpus.txt); saved to `out_dir`."""
    (folder / "corpus.txt").write_text(text)
    return train_tokenizer(
        [folder / "corpus.txt"], vocab_size=vocab_size, out_dir=out_dir, show_progress=False
    )


# the scripted chat of the engine's text tests: the model thinks REASONING, then answers ANSWER
USER = [{"role": "user", "content": "What is 12 + 34?"}]
REASONING, ANSWER = "I add", "46 🙂"


def make_tokenizer(folder: Path) -> Tokenizer:
    """A 300-token BPE in which USER, REASONING and ANSWER are a few tokens each."""
    return tokenizer_on("the cat sat on the mat. What is 12 + 34? I add them: 46.\n" * 40, folder, 300)


def scripted(tok, prompt_ids: list[int], completion: list[int]) -> torch.nn.Module:
    """A model whose greedy continuation of prompt_ids is `completion` (distinct tokens: it is a bigram)."""
    chain = [prompt_ids[-1], *completion]
    assert len(set(chain)) == len(chain), "a bigram script needs distinct tokens"
    cfg = tiny_config(vocab_size=tok.vocab_size, max_position_embeddings=128)
    return bigram_model(cfg, dict(zip(chain, chain[1:])))


TINY = ("tiny-alpha", "tiny-bravo")  # the names of the arena's tiny checkpoints (`tiny_checkpoints`)


def build_checkpoint(path: Path, seed: int, max_positions: int = 256) -> Path:
    """A model directory: a tiny random DeepSeek-V3 (MoE, MLA) and a 300-token BPE tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    corpus = "What is 12 + 34? I add them and get 46. The cat sat on the mat.\n" * 40
    tok = tokenizer_on(corpus, path, 300, out_dir=path)
    cfg = small_config(
        tok.vocab_size,
        qk_nope_head_dim=8,
        v_head_dim=8,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
    )
    torch.manual_seed(seed)
    model = DeepSeekV3(cfg).eval()
    with torch.no_grad():  # every weight random: our init zeroes output projections
        for p in model.parameters():
            p.normal_(0, 0.1)
    model.save_pretrained(path)
    return path


def write_contestants(
    path: Path, checkpoints: dict[str, Path], max_new_tokens: int = 8, extra: str = ""
) -> Path:
    """A TOML contestants file for the checkpoints (greedy, short answers)."""
    entries = [
        f'[[contestants]]\nname = "{name}"\nkind = "checkpoint"\npath = "{ckpt}"\n'
        f"params = {{ temperature = 0, max_new_tokens = {max_new_tokens} }}\n"
        for name, ckpt in checkpoints.items()
    ]
    path.write_text("\n".join(entries) + extra)
    return path


# ------------------------------------------------------------------------------ scripted arena contestants

# model name -> what it answers: the names never appear in the answers, so a leak would show
ANSWERS = {"alpha-7b": "The sum is 42.", "bravo-1b": "I think it is 41.", "charlie-xl": "Forty-two, clearly."}


class ScriptedGenerator:
    """A Generator that answers every chat request with `answer(user prompt)`, after `reasoning`,
    streamed a word at a time. `gate`: streaming waits for it before finishing; `fail`: raises."""

    def __init__(
        self,
        answer: Callable[[str], str],
        reasoning: str = "Let me think.",
        gate: threading.Event | None = None,
        fail: bool = False,
    ) -> None:
        self.answer, self.reasoning, self.gate, self.fail = answer, reasoning, gate, fail
        self.calls = 0  # requests answered
        self.batches = 0  # generate() calls

    def _content(self, request: GenerationRequest) -> str:
        self.calls += 1
        if self.fail:
            raise RuntimeError("HTTP 500: upstream model secret-model-name is down")
        assert request.messages is not None and request.params.n == 1
        return self.answer(request.messages[-1]["content"])

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        self.batches += 1
        out = []
        for i, request in enumerate(requests):
            content = self._content(request)
            text = f"{self.reasoning}\n</think>\n\n{content}"
            out.append(
                Completion(
                    text, [], "stop", 0, reasoning_content=self.reasoning, content=content, request_index=i
                )
            )
        return out

    def stream(self, requests: list[GenerationRequest]) -> Iterator[Delta]:
        for i, request in enumerate(requests):
            content = self._content(request)
            yield Delta(i, 0, reasoning_content=self.reasoning)
            for word in re.findall(r"\S+\s*", content):
                yield Delta(i, 0, content=word)
            if self.gate is not None:
                assert self.gate.wait(30), "the test never opened the gate"
            yield Delta(i, 0, finish_reason="stop")


def scripted_contestants() -> dict[str, Contestant]:
    """The three ANSWERS models."""
    return {
        name: Contestant(name, ScriptedGenerator(lambda _, a=answer: a)) for name, answer in ANSWERS.items()
    }


QUESTION = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")


def solve(prompt: str) -> int:
    """The answer to the arithmetic task's question in `prompt`."""
    a, op, b = QUESTION.search(prompt).groups()
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


def start_battle(client: httpx.Client, prompt: str = "What is 40 + 2?") -> str:
    response = client.post("/api/battles", json={"prompt": prompt})
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"battle_id"}  # nothing about the pair
    return response.json()["battle_id"]


def read_events(client: httpx.Client, battle_id: str) -> list[dict]:
    """All events of a battle's SSE stream, checking the framing and the final [DONE]."""
    events, done = [], False
    with client.stream("GET", f"/api/battles/{battle_id}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line or line.startswith(":"):
                continue
            assert line.startswith("data: ") and not done
            if line == "data: [DONE]":
                done = True
            else:
                events.append(json.loads(line[len("data: ") :]))
    assert done and events[-1]["type"] == "end"
    return events


def answers_from(events: list[dict]) -> dict[str, str]:
    return {
        side: "".join(e["content"] for e in events if e.get("side") == side and e["type"] == "delta")
        for side in "ab"
    }


# ------------------------------------------------------------------------------------------------- HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def error_of(response: httpx.Response) -> dict:
    """The error of an OpenAI-style error body, checking its shape."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The error of a response that must have `status` (and `code`, if given) and a message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


# ---------------------------------------------------------------------------------------------- browser

# Debian's chromium, driven by playwright (NANOSEEK_CHROMIUM=/path/to/chromium picks another)
CHROMIUM = shutil.which(os.environ.get("NANOSEEK_CHROMIUM", "chromium")) or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# ---------------------------------------------------------------------------------------------- training


def tiny_pretrain(shards: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long CPU pretraining of a depth-2 model on `shards` (`toy_shards`),
    then `extra` (steps, batch, eval and checkpoint cadence)."""
    return [
        f'data.train=["{shards}"]',
        "run.device=cpu",
        "run.progress=false",
        "model.depth=2",
        "train.seq_len=32",
        "eval.batches=2",
        "cost.peak_flops=1e10",
        *extra,
    ]
