"""A scripted toy checkpoint that thinks, then answers: for trying the server without training a model.

    python -m nanoseek.serve.demo runs/demo-model          # writes a model directory, then:
    nanoseek serve --model runs/demo-model

    from nanoseek.serve.demo import build_demo_checkpoint
    path = build_demo_checkpoint(tmp_path / "model", depth=2)

It is a real DeepSeek-V3 checkpoint (MLA, MoE, MTP; `config_for_depth(depth)`) whose weights make it
a bigram machine: every block starts as the identity (our init zeroes the output projections), so the
final hidden state is the current token's embedding, and the output head maps each token of a
script to the next one. After the chat prompt's `<think>\\n` it always generates

    DEMO_REASONING </think> \\n\\n DEMO_ANSWER <｜end▁of▁sentence｜>

greedily and, the margins being huge, at any temperature. Every token outside the script shares one
embedding, which leads to the start of the script, and so does EOS: with `ignore_eos` it loops
forever (load tests and benchmarks use that). Its
tokenizer is a byte-level BPE trained on the script, so each word of the script is one token and no
token repeats (the builder checks). The compute per token is that of a real model of this depth.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from nanoseek.model import DeepSeekV3
from nanoseek.model.presets import config_for_depth
from nanoseek.tokenizer import Tokenizer, train_tokenizer

DEMO_REASONING = "The user greets me; reply warmly and briefly"
DEMO_ANSWER = "Hello! I am **nanoseek**, a tiny R1 model."
CORPUS_LINES = [
    DEMO_REASONING,
    DEMO_ANSWER,
    "</think>\n\n",
    "Hi there, how are you today? What is 2 + 2? Tell me a story about a dog.",
]


def demo_script(tok: Tokenizer) -> list[int]:
    """The token ids the demo model generates after `<think>\\n`, EOS included."""
    return [
        *tok.encode_ordinary(DEMO_REASONING),
        tok.end_think_id,
        *tok.encode_ordinary("\n\n" + DEMO_ANSWER),
        tok.eos_id,
    ]


def build_demo_checkpoint(
    out_dir: str | Path, depth: int = 2, max_len: int = 512, vocab_size: int = 400
) -> Path:
    """Write the scripted model (weights, config, tokenizer) to `out_dir` and return the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(CORPUS_LINES * 50))
        tok = train_tokenizer(
            [corpus], vocab_size=vocab_size, out_dir=None, show_progress=False, model_max_length=max_len
        )
    script = demo_script(tok)
    if len(set(script)) != len(script):
        raise ValueError("the demo script repeats a token; a bigram model cannot follow it")

    cfg = config_for_depth(depth, vocab_size=tok.vocab_size, max_position_embeddings=max_len)
    cfg = cfg.replace(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    torch.manual_seed(0)
    model = DeepSeekV3(cfg).eval()
    with torch.no_grad():
        emb = model.embed_tokens.weight  # N(0, 1) rows: random directions
        in_script = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        in_script[script] = True
        emb[~in_script] = emb[0].clone() if not in_script[0] else torch.randn(cfg.hidden_size)
        unit = emb / emb.pow(2).mean(-1, keepdim=True).sqrt()  # what the final RMSNorm makes of a row
        scale = 20 / cfg.hidden_size**0.5  # the right next token wins by ~20 sqrt(hidden) nats
        head = torch.zeros_like(model.lm_head.weight)
        for token, nxt in zip(script, script[1:]):
            head[nxt] += scale * unit[token]
        head[script[0]] += scale * unit[script[-1]]  # after EOS (with ignore_eos): start over
        other = int((~in_script).nonzero()[0])
        head[script[0]] += scale * unit[other]  # every other token (all share one embedding) too
        model.lm_head.weight.copy_(head)
    model.save_pretrained(out_dir)
    tok.save(out_dir)
    return out_dir


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo-model")
    print(f"wrote {build_demo_checkpoint(target)}; serve it with: nanoseek serve --model {target}")
