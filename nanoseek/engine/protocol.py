"""The `Generator` protocol: what every text generator in nanoseek speaks (native engine, remote API).

    from nanoseek.engine import GenerationRequest, SamplingParams
    requests = [GenerationRequest(messages=[{"role": "user", "content": "2+2?"}],
                                  params=SamplingParams(temperature=0.6, n=4, seed=1))]
    completions = generator.generate(requests)        # one Completion per sample, request-major
    for delta in generator.stream(requests):          # text deltas as they are generated
        print(delta.text, end="")

A request's prompt is token ids, text, or chat messages (rendered with THE chat format, so the
completion is split into `reasoning_content` and `content`). `SamplingParams` are OpenAI's and vLLM's
knobs. `generate` returns `sum(r.params.n for r in requests)` completions: request 0's n samples,
then request 1's, ...; `Completion.request_index` and `Completion.index` say which is which.

Consumers: GRPO rollouts (token ids + logprobs of n samples), eval (n samples per prompt, text),
distillation teachers and arena contestants (chat text), the server (streaming, see `Engine.submit`).
A trainer hands its updated weights to its rollout generator with `sync_weights(model)` after
every update.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import nn

FinishReason = Literal["stop", "length", "abort"]


@dataclass
class SamplingParams:
    """How to sample. temperature 0 is greedy. Penalties follow OpenAI (frequency, presence: on the
    generated tokens) and vLLM/transformers (repetition: on prompt and generated tokens)."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0  # nucleus: smallest set of tokens with probability >= top_p
    top_k: int = 0  # 0: all tokens
    min_p: float = 0.0  # drop tokens with probability < min_p * max probability
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in prompt or output
    frequency_penalty: float = 0.0  # logit -= frequency_penalty * count in the output
    presence_penalty: float = 0.0  # logit -= presence_penalty * (count in the output > 0)
    seed: int | None = None  # sample j of a request uses seed + j; same seed -> same text, any batch
    stop: list[str] = field(default_factory=list)  # stop strings (not included in the text)
    stop_token_ids: list[int] = field(default_factory=list)  # besides EOS (included in token_ids)
    ignore_eos: bool = False  # keep generating past EOS (benchmarks)
    n: int = 1  # samples of the prompt (prefilled once, the cache forked)
    logprobs: bool = False  # per-token logprob of each sampled token (raw model distribution)
    top_logprobs: int = 0  # and that many most likely alternatives per position
    # the prompt's own tokens' logprobs (vLLM's prompt_logprobs): None off, k >= 0 with k alternatives;
    # computed during the request's prefill (which then skips the prefix cache)
    prompt_logprobs: int | None = None

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        checks = [
            (self.max_new_tokens >= 0, "max_new_tokens must be >= 0"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (self.n >= 1, "n must be >= 1"),
            (self.top_logprobs >= 0, "top_logprobs must be >= 0"),
            (self.prompt_logprobs is None or self.prompt_logprobs >= 0, "prompt_logprobs must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def penalized(self) -> bool:
        """Whether a penalty reads the tokens generated so far (or the prompt's)."""
        return self.repetition_penalty != 1 or bool(self.frequency_penalty) or bool(self.presence_penalty)


@dataclass
class GenerationRequest:
    """One prompt: exactly one of `prompt` (token ids or text) and `messages` (chat)."""

    prompt: list[int] | str | None = None
    messages: list[dict[str, Any]] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    think: bool = True  # chat only: open a think block (R1) or answer directly (closed, empty block)
    request_id: str | None = None

    def __post_init__(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt (ids or text) and messages")

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass
class TokenLogprob:
    """The logprob of one token (generated, or a prompt token with `prompt_logprobs`) and, if asked, the
    most likely alternatives at its position."""

    token_id: int  # -1 when unknown (a remote API that returns token strings only)
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), most likely first
    token: str = ""  # the token's text, when the generator knows it (remote APIs)
    top_tokens: list[str] = field(default_factory=list)  # texts of `top`, likewise


@dataclass
class Completion:
    """One sample. `token_ids` include a generated EOS / stop token (GRPO trains on it); `text` does
    not, and ends before a stop string. For chat requests `reasoning_content` and `content` are the
    text split by the chat format; for plain prompts they are None."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None = None
    reasoning_content: str | None = None
    content: str | None = None
    request_index: int = 0  # position of the request in the list given to generate / stream
    index: int = 0  # sample index within the request (0..n-1), OpenAI's choice index
    request_id: str | None = None
    completion_tokens: int = -1  # len(token_ids); remote APIs report it without the ids
    cached_tokens: int = 0  # prompt tokens whose cache rows were reused (prefix cache), not recomputed
    # with params.prompt_logprobs: one entry per prompt token, None for the first (nothing precedes it)
    prompt_logprobs: list[TokenLogprob | None] | None = None

    def __post_init__(self):
        if self.completion_tokens < 0:
            self.completion_tokens = len(self.token_ids)


@dataclass
class Delta:
    """A streamed piece of one sample. `text` never ends inside a multi-byte character or inside a
    possible stop string. For chat requests, the same text is also split into `reasoning_content` /
    `content` pieces (the `</think>` and surrounding whitespace dropped, as in `split_completion`).
    The last delta of a sample has `finish_reason` set."""

    request_index: int
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    reasoning_content: str = ""
    content: str = ""
    finish_reason: FinishReason | None = None
    request_id: str | None = None


@runtime_checkable
class Generator(Protocol):
    """Anything that turns requests into completions: the native Engine, RemoteGenerator, vLLM later."""

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]: ...

    def stream(self, requests: list[GenerationRequest]) -> Iterator[Delta]: ...

    def sync_weights(self, model: nn.Module) -> None:
        """Make every later generate() use these weights (the trainer's model after its update k).

        A trainer calls it once before its first rollouts and after every optimizer update, so
        rollouts of step k see update k: the contract between a trainer and its rollout engine is
        this call, never shared tensors. The native Engine rebuilds its derived decode weights
        (no copy when `model` is its own model) and raises RuntimeError when asked to generate on
        weights changed since the last sync; an engine in another process (vLLM) would load the
        weights; a generator that holds no weights (a remote API) raises NotImplementedError."""
        ...
