"""`nanoseek generate` and `nanoseek chat`: the engine in a terminal, thinking shown apart from the answer.

    nanoseek generate --model runs/sft/model "What is 12 + 34?"          # chat prompt, streamed
    nanoseek generate --model runs/base/model --raw "Once upon a time" --temperature 0
    nanoseek generate --model PATH "prompt" --int8 --speculative --n 4 --seed 1
    nanoseek chat --model runs/sft/model                                 # /reset, /quit

On a terminal the thinking streams dimmed and the answer in normal text; when the output is not a
terminal (a pipe, a file) the thinking is wrapped in plain `<think>` ... `</think>` markers instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

import torch

from nanoseek.engine.engine import Engine
from nanoseek.engine.prefix_cache import BLOCK_SIZE, DEFAULT_DISK_MB, DEFAULT_MB
from nanoseek.engine.protocol import GenerationRequest, SamplingParams
from nanoseek.engine.speculative import auto_speculation, has_mtp
from nanoseek.model import CheckpointError

DIM, RESET = "\033[2m", "\033[0m"


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="model directory (config.json, weights, tokenizer.json)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.6, help="0 is greedy (R1 recommends 0.6)")
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--min-p", type=float, default=0.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--frequency-penalty", type=float, default=0.0)
    parser.add_argument("--presence-penalty", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--no-think", action="store_true", help="answer directly (closed, empty think block)")
    parser.add_argument("--int8", action="store_true", help="int8 weight-only quantization")
    parser.add_argument(
        "--speculative",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="MTP speculative decoding on / off (default: on where a probe shows that it pays)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    add_prefix_cache_args(parser)


def add_prefix_cache_args(parser: argparse._ActionsContainer) -> None:
    """The prefix cache's flags (`nanoseek generate`, `chat` and `serve`)."""
    parser.add_argument(
        "--prefix-cache-mb",
        type=float,
        default=DEFAULT_MB,
        help=f"memory for cached prompt prefixes, reused across requests (0 turns the cache off; default: {DEFAULT_MB:g})",
    )
    parser.add_argument(
        "--prefix-cache-block",
        type=int,
        default=BLOCK_SIZE,
        help=f"tokens per cached block (default: {BLOCK_SIZE})",
    )
    parser.add_argument(
        "--prefix-cache-dir",
        default=None,
        help="also keep cached prefixes in this directory, where a restarted process finds them",
    )
    parser.add_argument(
        "--prefix-cache-disk-mb",
        type=float,
        default=DEFAULT_DISK_MB,
        help=f"the disk tier's budget (default: {DEFAULT_DISK_MB:g})",
    )


def prefix_cache_kwargs(args: argparse.Namespace) -> dict:
    """Engine keyword arguments from the flags of `add_prefix_cache_args`."""
    return {
        "prefix_cache_mb": args.prefix_cache_mb,
        "prefix_cache_block": args.prefix_cache_block,
        "prefix_cache_dir": args.prefix_cache_dir,
        "prefix_cache_disk_mb": args.prefix_cache_disk_mb,
    }


def sampling_params(args: argparse.Namespace, n: int = 1) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        frequency_penalty=args.frequency_penalty,
        presence_penalty=args.presence_penalty,
        seed=args.seed,
        stop=args.stop,
        n=n,
    )


def load_engine(args: argparse.Namespace) -> Engine:
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer_file = Path(args.model) / "tokenizer.json"
    if Path(args.model, "config.json").is_file() and not tokenizer_file.is_file():
        problem = "missing; the CLI needs text (save the tokenizer beside the model)"
        raise CheckpointError(tokenizer_file, problem)
    # a model that does not load raises CheckpointError: `nanoseek` prints it in one line
    engine = Engine.from_pretrained(
        args.model,
        int8=args.int8,
        device=args.device,
        speculative=args.speculative if args.speculative is not None else has_mtp(args.model),
        max_slots=8,
        **prefix_cache_kwargs(args),
    )
    batch = getattr(args, "n", 1)
    auto_speculation(engine, args.speculative, args.temperature, max_batch=batch)
    return engine


class Printer:
    """Writes one streamed sample: thinking (dimmed, or in <think> markers) and then the answer."""

    def __init__(self, out: TextIO, color: bool):
        self.out, self.color = out, color
        self.state = "start"  # start -> thinking -> answer

    def reasoning(self, text: str) -> None:
        if not text:
            return
        if self.state == "start":
            self.out.write(DIM if self.color else "<think>\n")
            self.state = "thinking"
        self.out.write(text)
        self.out.flush()

    def content(self, text: str) -> None:
        if not text:
            return
        self.close_thinking()
        self.state = "answer"
        self.out.write(text)
        self.out.flush()

    def close_thinking(self) -> None:
        if self.state == "thinking":
            self.out.write(RESET + "\n\n" if self.color else "\n</think>\n\n")
            self.state = "answer"

    def end(self) -> None:
        self.close_thinking()
        self.out.write("\n")
        self.out.flush()


def stream_reply(engine: Engine, request: GenerationRequest, out: TextIO, color: bool) -> dict:
    """Stream one single-sample request to `out`; returns its reasoning, content and text."""
    printer = Printer(out, color)
    reply = {"reasoning": "", "content": "", "text": "", "finish_reason": None}
    t0, tokens = time.perf_counter(), 0
    for delta in engine.stream([request]):
        tokens += len(delta.token_ids)
        reply["text"] += delta.text
        if request.is_chat:
            printer.reasoning(delta.reasoning_content)
            printer.content(delta.content)
            reply["reasoning"] += delta.reasoning_content
            reply["content"] += delta.content
        else:
            printer.content(delta.text)
        reply["finish_reason"] = delta.finish_reason or reply["finish_reason"]
    printer.end()
    seconds = time.perf_counter() - t0
    print(f"[{tokens} tokens, {tokens / max(seconds, 1e-9):.1f} tokens/s]", file=sys.stderr)
    return reply


def print_completions(engine: Engine, request: GenerationRequest, out: TextIO, color: bool) -> None:
    """n samples decode together, so they are printed one after the other once all are done."""
    for c in engine.generate([request]):
        out.write(f"--- sample {c.index} ({c.finish_reason}, {c.completion_tokens} tokens) ---\n")
        printer = Printer(out, color)
        if request.is_chat:
            printer.reasoning(c.reasoning_content or "")
            printer.content(c.content or "")
        else:
            printer.content(c.text)
        printer.end()


def generate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanoseek generate", description="generate from a prompt")
    parser.add_argument("prompt", help="the user message (or, with --raw, the text to continue)")
    parser.add_argument("--raw", action="store_true", help="continue the text as is, no chat format")
    parser.add_argument("--n", type=int, default=1, help="samples of the prompt")
    add_sampling_args(parser)
    args = parser.parse_args(argv)
    engine = load_engine(args)
    params = sampling_params(args, n=args.n)
    if args.raw:
        request = GenerationRequest(prompt=args.prompt, params=params)
    else:
        request = GenerationRequest(
            messages=[{"role": "user", "content": args.prompt}], params=params, think=not args.no_think
        )
    if args.n > 1:
        print_completions(engine, request, sys.stdout, sys.stdout.isatty())
    else:
        stream_reply(engine, request, sys.stdout, sys.stdout.isatty())
    return 0


def chat_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanoseek chat", description="chat in the terminal")
    parser.add_argument("--system", default=None, help="system prompt")
    add_sampling_args(parser)
    args = parser.parse_args(argv)
    engine = load_engine(args)
    color = sys.stdout.isatty()
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    print("nanoseek chat: /reset clears the conversation, /quit (or Ctrl-D) leaves.")
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history = []
            print("(conversation cleared)")
            continue
        history.append({"role": "user", "content": line})
        request = GenerationRequest(
            messages=system + history, params=sampling_params(args), think=not args.no_think
        )
        try:
            reply = stream_reply(engine, request, sys.stdout, color)
        except KeyboardInterrupt:  # stop this answer, keep the session
            print("\n(interrupted)")
            history.pop()
            continue
        # R1 practice: earlier turns go back without their reasoning
        history.append({"role": "assistant", "content": reply["content"]})
