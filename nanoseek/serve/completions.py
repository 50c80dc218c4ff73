"""POST /v1/completions: OpenAI's legacy text completions, with `echo` and `logprobs` for scoring.

    curl 127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0}'

    # what lm-evaluation-harness's `local-completions` sends for a loglikelihood request:
    {"prompt": [[12, 7, 99, ...], ...], "max_tokens": 1, "echo": true, "logprobs": 1, "temperature": 0}

`prompt` is a string, a list of strings, a list of token ids, or a list of lists of token ids; each
prompt yields `n` choices (choice index = prompt index * n + sample index), all generated together
by the engine. A request may hold `max_prompts` prompts and `max_queue` samples (prompts x n): a
larger one is refused whole before anything is tokenized. A text prompt is encoded like a pretraining
document (BOS first); token ids are used as given. `echo` prepends the prompt to the text; with
`logprobs` too, the prompt's tokens come with their log-probabilities (the first has none), which the
engine computes during the request's own prefill (`SamplingParams.prompt_logprobs`, vLLM's option;
such a request skips the prefix cache), so lm-eval's `token_logprobs[ctxlen:-1]` are the
continuation's. With `max_tokens: 0` nothing is generated (echo alone scores a text): the prompt may
then fill the whole context, and only an echo with logprobs takes a cache slot (for its prefill).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from nanoseek.engine import Delta, GenerationRequest, TokenLogprob
from nanoseek.serve.bridge import EngineBridge, Generation, Sample
from nanoseek.serve.envelope import Bridge, View, respond
from nanoseek.serve.errors import APIError
from nanoseek.serve.logprobs import legacy_logprobs, text_offsets
from nanoseek.serve.openai_schema import CompletionRequest, context_error, sampling_params

router = APIRouter()
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint


@dataclasses.dataclass
class Prompt:
    text: str  # what echo prepends
    ids: list[int]
    logprobs: list[float | None] | None = None  # echo + logprobs: the prompt's own
    tops: list[list[tuple[int, float]] | None] | None = None


def build_requests(
    body: CompletionRequest, bridge: EngineBridge
) -> tuple[list[GenerationRequest], list[Prompt]]:
    if body.suffix:
        raise APIError(400, "suffix (insertion) is not supported by this model.", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise APIError(400, "best_of is not supported unless it equals n.", param="best_of")
    prompts = body.prompts()
    max_tokens = DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    top = body.logprobs or 0
    base = sampling_params(body, bridge, max_tokens, logprobs=body.logprobs is not None, top_logprobs=top)
    if scores_prompt(body):  # the engine scores the prompt during its prefill
        base = dataclasses.replace(base, prompt_logprobs=top)
    context = bridge.context
    requests, infos = [], []
    for i, prompt in enumerate(prompts):
        param = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
        if isinstance(prompt, list) and not prompt:
            raise APIError(400, "a prompt must have at least one token.", param=param)
        # with max_tokens 0 the prompt is only scored (echo): it may fill the whole context
        ids = bridge.encode(
            GenerationRequest(prompt=prompt),
            param,
            room=0 if max_tokens == 0 else 1,
            requested=body.max_tokens,
        )
        room = context - len(ids)
        if body.max_tokens is not None and max_tokens > room:
            raise context_error(context, len(ids), max_tokens, "max_tokens")
        params = dataclasses.replace(base, max_new_tokens=min(max_tokens, room))
        text = prompt if isinstance(prompt, str) else bridge.tokenizer.decode(ids, skip_special_tokens=True)
        requests.append(GenerationRequest(prompt=ids, params=params))
        infos.append(Prompt(text, ids))
    return requests, infos


def scores_prompt(body: CompletionRequest) -> bool:
    """echo with logprobs: the prompt's own tokens get their log-probabilities."""
    return bool(body.echo) and body.logprobs is not None


def wait_prompt_logprobs(generation: Generation, count: int) -> list[list[TokenLogprob | None]]:
    """Each prompt's logprobs from its engine request, once its prefill is done (a worker thread
    blocks here; the request's deadline bounds the wait)."""
    handles = {h.request_index: h for h in generation.handles}
    out = []
    for i in range(count):
        try:
            scored = handles[i].prompt_logprobs(timeout=max(0.0, generation.deadline - time.monotonic()))
        except TimeoutError:
            generation.outcome = "timeout"
            limit = generation.bridge.config.request_timeout
            raise APIError(
                408,
                f"The request took longer than the server's limit of {limit:g} seconds.",
                code="request_timeout",
            ) from None
        except RuntimeError:
            scored = None
        if scored is None:
            generation.outcome = "error"
            raise APIError(500, "The engine failed while scoring this prompt.", code="engine_error")
        out.append(scored)
    return out


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, bridge: Bridge) -> Response:
    # refuse what cannot be served before any work: too many prompts or samples, a full queue
    count = len(body.prompts())
    bridge.check_size(count, body.n)
    bridge.check_capacity(count * body.n if body.max_tokens != 0 or scores_prompt(body) else 0)
    requests, prompts = await anyio.to_thread.run_sync(build_requests, body, bridge)  # off the loop
    generation = bridge.start(requests, [len(p.ids) for p in prompts])
    return await respond(CompletionView(bridge, body, generation, prompts), request)


class CompletionView(View):
    """Renders one generation as a text_completion object or a stream of them."""

    prefix, object, chunk_object = "cmpl", "text_completion", "text_completion"

    def __init__(
        self, bridge: EngineBridge, body: CompletionRequest, generation: Generation, prompts: list[Prompt]
    ):
        super().__init__(bridge, body, generation)
        self.prompts = prompts
        self.offsets: dict[tuple[int, int], int] = {}  # streaming: text offset of the next token

    async def prepare(self) -> None:
        """With echo and logprobs: every prompt token's log-probability, from the engine's prefill of
        each prompt (waited for off the loop, before the first byte of the response)."""
        if not scores_prompt(self.body):
            return
        try:
            results = await anyio.to_thread.run_sync(wait_prompt_logprobs, self.generation, len(self.prompts))
        except BaseException:
            self.generation.close()
            raise
        for prompt, scored in zip(self.prompts, results):
            prompt.logprobs = [None if lp is None else lp.logprob for lp in scored]
            prompt.tops = [None if lp is None else lp.top for lp in scored]

    def echo_logprobs(self, prompt: Prompt) -> dict[str, Any]:
        assert prompt.logprobs is not None and prompt.tops is not None
        return legacy_logprobs(self.bridge.token_texts, prompt.ids, prompt.logprobs, prompt.tops)

    def token_logprobs(self, lps: list, offset: int) -> dict[str, Any]:
        ids = [lp.token_id for lp in lps]
        return legacy_logprobs(
            self.bridge.token_texts, ids, [lp.logprob for lp in lps], [lp.top for lp in lps], offset
        )

    def echo_offset(self, prompt: Prompt) -> int:
        return len(prompt.text) if self.body.echo else 0

    def choice(self, sample: Sample) -> dict[str, Any]:
        prompt = self.prompts[sample.request_index]
        logprobs = None
        if self.body.logprobs is not None:
            logprobs = self.token_logprobs(sample.logprobs, self.echo_offset(prompt))
            if self.body.echo:
                logprobs = merge_logprobs(self.echo_logprobs(prompt), logprobs)
        return {
            "index": self.generation.choice_index(sample.request_index, sample.index),
            "text": (prompt.text if self.body.echo else "") + sample.text,
            "logprobs": logprobs,
            "finish_reason": sample.finish_reason,
        }

    def first_choices(self) -> list[dict[str, Any]]:
        """With echo the stream opens with the prompts (and their log-probabilities)."""
        if not self.body.echo:
            return []
        first = []
        for key in sorted(self.generation.samples):
            prompt = self.prompts[key[0]]
            lps = self.echo_logprobs(prompt) if prompt.logprobs is not None else None
            first.append(
                {
                    "index": self.generation.choice_index(*key),
                    "text": prompt.text,
                    "logprobs": lps,
                    "finish_reason": None,
                }
            )
        return first

    def delta_choices(self, batch: list[Delta]) -> list[dict[str, Any]]:
        return [choice for delta in batch for choice in self.sample_delta(delta)]

    def sample_delta(self, delta: Delta) -> list[dict[str, Any]]:
        key = (delta.request_index, delta.index)
        index = self.generation.choice_index(*key)
        out = []
        if delta.text or delta.token_ids:
            logprobs = None
            if self.body.logprobs is not None and delta.logprobs:
                offset = self.offsets.get(key, self.echo_offset(self.prompts[key[0]]))
                logprobs = self.token_logprobs(delta.logprobs, offset)
                ids = [lp.token_id for lp in delta.logprobs]
                self.offsets[key] = text_offsets(self.bridge.token_texts, ids, offset)[1]
            out.append({"index": index, "text": delta.text, "logprobs": logprobs, "finish_reason": None})
        if delta.finish_reason is not None:
            out.append({"index": index, "text": "", "logprobs": None, "finish_reason": delta.finish_reason})
        return out


def merge_logprobs(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    return {
        key: first[key] + second[key] for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")
    }
