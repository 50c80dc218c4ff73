"""POST /v1/chat/completions: OpenAI's chat API with DeepSeek's `reasoning_content`.

    curl 127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"messages": [{"role": "user", "content": "What is 2+2?"}], "stream": true}'

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
    r = client.chat.completions.create(model="nanoseek", messages=[{"role": "user", "content": "2+2?"}])
    r.choices[0].message.reasoning_content, r.choices[0].message.content

The prompt is rendered with the model's own chat template, or THE chat format for nanoseek's models
(R1 opens a think block; `thinking: {"type": "disabled"}` or `chat_template_kwargs: {"enable_thinking":
false}` answers directly). The generated text is split at `</think>`: the thinking goes to
`message.reasoning_content` (and `message.reasoning`, vLLM's name), the answer to `message.content`.
Whether a reply starts as thinking is read from the rendered prompt (`prompt_opens_think`: R1's format
and R1-distill's template open `<think>`, Qwen3 lets the model open it, Llama and SmolLM2 have no think
tokens), so a model that answers directly has all of its reply in `content`, none counted as reasoning.
Streamed, a chunk carries either thinking (`delta.reasoning_content`, `content` null) or answer
(`delta.content`, `reasoning_content` null), never both. With `logprobs` the answer's tokens are in
`logprobs.content` and the thinking's (up to `</think>`) in `logprobs.reasoning_content`.

Token limits: `max_completion_tokens` bounds everything generated, thinking included (OpenAI's
meaning); when the prompt opens a think block `max_tokens` bounds the answer only (DeepSeek-reasoner's
meaning), the thinking then being bounded by the server's `--max-reasoning-tokens` and the context;
otherwise `max_tokens` bounds everything too. Without either the model may fill the context.
Logprobs leave out the stop tokens (EOS, the template's end of turn), as the text does.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from nanoseek.engine import Delta, GenerationRequest
from nanoseek.serve.bridge import EngineBridge, Generation, Sample
from nanoseek.serve.envelope import Bridge, View, respond
from nanoseek.serve.errors import APIError
from nanoseek.serve.logprobs import TokenTexts, chat_logprobs
from nanoseek.serve.openai_schema import ChatCompletionRequest, context_error, sampling_params
from nanoseek.tokenizer.chat_format import prompt_opens_think, split_completion

router = APIRouter()


def build_request(
    body: ChatCompletionRequest, bridge: EngineBridge
) -> tuple[GenerationRequest, int, int | None]:
    """(engine request, prompt tokens, answer limit) for a chat body; 400s for what cannot be served.
    The request's `think` is whether the rendered prompt opens a think block (`prompt_opens_think`)."""
    if body.top_logprobs and not body.logprobs:
        raise APIError(400, "top_logprobs requires logprobs to be true.", param="top_logprobs")
    conversation = body.conversation()
    asked = body.think()
    prompt_ids = bridge.encode(GenerationRequest(messages=conversation, think=asked), "messages")
    think = prompt_opens_think(bridge.tokenizer, prompt_ids)
    context, prompt = bridge.context, len(prompt_ids)
    room = context - prompt
    if room < 1:
        raise context_error(context, prompt, None, "messages")
    max_new, answer_limit = room, None
    if body.max_completion_tokens is not None:
        if body.max_completion_tokens > room:
            raise context_error(context, prompt, body.max_completion_tokens, "max_completion_tokens")
        max_new = body.max_completion_tokens
    if body.max_tokens is not None:
        if think:  # the answer only; thinking gets the configured budget
            answer_limit = body.max_tokens
            budget = bridge.config.max_reasoning_tokens
            if body.max_completion_tokens is None and budget is not None:
                max_new = min(room, budget + body.max_tokens)
        else:
            if body.max_tokens > room:
                raise context_error(context, prompt, body.max_tokens, "max_tokens")
            max_new = min(max_new, body.max_tokens)
    top = body.top_logprobs or 0
    params = sampling_params(body, bridge, max_new, logprobs=body.logprobs, top_logprobs=top)
    request = GenerationRequest(messages=conversation, params=params, think=asked)
    return request, prompt, answer_limit, think


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, bridge: Bridge) -> Response:
    bridge.check_size(1, body.n)  # before any work
    bridge.check_capacity(body.n)
    # tokenizing a long prompt takes a while: keep it off the event loop
    engine_request, prompt_tokens, answer_limit, think = await anyio.to_thread.run_sync(
        build_request, body, bridge
    )
    generation = bridge.start([engine_request], [prompt_tokens], think=think, answer_limit=answer_limit)
    return await respond(ChatView(bridge, body, generation), request)


class ChatView(View):
    """Renders one generation as a chat.completion object or a stream of chat.completion.chunk."""

    prefix, object, chunk_object = "chatcmpl", "chat.completion", "chat.completion.chunk"

    def __init__(self, bridge: EngineBridge, body: ChatCompletionRequest, generation: Generation):
        super().__init__(bridge, body, generation)
        self.texts: TokenTexts = bridge.token_texts
        self.think = generation.think
        self.stop_ids = frozenset(bridge.tokenizer.stop_ids)  # left out of logprobs, as out of the text
        self.think_id = bridge.tokenizer.think_id
        self.answering: dict[tuple[int, int], bool] = {}  # per sample: past </think> (streaming)
        self.answered: set[tuple[int, int]] = set()  # samples that streamed answer tokens

    def choice(self, sample: Sample) -> dict[str, Any]:
        reasoning, content = split_completion(sample.text, think=self.think)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.think or reasoning:
            message["reasoning_content"] = message["reasoning"] = reasoning
        return {
            "index": self.generation.choice_index(sample.request_index, sample.index),
            "message": message,
            "logprobs": self.sample_logprobs(sample) if self.body.logprobs else None,
            "finish_reason": sample.finish_reason,
        }

    def sample_logprobs(self, sample: Sample) -> dict[str, Any]:
        n_reasoning = self.generation.reasoning_tokens(sample)
        reasoning = [lp for lp in sample.logprobs[:n_reasoning] if lp.token_id not in self.stop_ids]
        content = [lp for lp in sample.logprobs[n_reasoning:] if lp.token_id not in self.stop_ids]
        return {
            "content": chat_logprobs(self.texts, content),
            "reasoning_content": chat_logprobs(self.texts, reasoning) if self.think or n_reasoning else None,
            "refusal": None,
        }

    def first_choices(self) -> list[dict[str, Any]]:
        first = {"role": "assistant", "content": None if self.think else ""}
        gen = self.generation
        return [
            {"index": gen.choice_index(*key), "delta": first, "logprobs": None, "finish_reason": None}
            for key in sorted(gen.samples)
        ]

    def delta_choices(self, batch: list[Delta]) -> list[dict[str, Any]]:
        """Chunk choices for a batch of deltas: adjacent pieces of one sample and one kind merged."""
        pieces: list[list[Any]] = []  # [key, kind, text, logprob entries, finish_reason]
        for delta in batch:
            key = (delta.request_index, delta.index)
            for kind, text, lps in self.split_delta(key, delta):
                last = pieces[-1] if pieces else None
                if last is not None and last[0] == key and last[1] == kind and last[4] is None:
                    last[2] += text
                    last[3] += lps
                else:
                    pieces.append([key, kind, text, lps, None])
            if delta.finish_reason is not None:
                pieces.append([key, "finish", "", [], delta.finish_reason])
        choices = []
        for key, kind, text, lps, reason in pieces:
            index = self.generation.choice_index(*key)
            if kind == "finish":
                choices.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": reason})
                continue
            if kind == "reasoning":
                delta = {"content": None, "reasoning_content": text, "reasoning": text}
                logprobs = {"content": None, "reasoning_content": lps, "refusal": None}
            else:
                delta = {"content": text, "reasoning_content": None, "reasoning": None}
                logprobs = {"content": lps, "reasoning_content": None, "refusal": None}
            choices.append(
                {
                    "index": index,
                    "delta": delta,
                    "logprobs": logprobs if self.body.logprobs else None,
                    "finish_reason": None,
                }
            )
        return choices

    def split_delta(self, key: tuple[int, int], delta: Delta) -> list[tuple[str, str, list[dict[str, Any]]]]:
        """(kind, text, logprob entries) pieces of one delta: thinking first, then answer. A token is
        thinking from the prompt's open think block, or from a `<think>` the model writes before any
        answer (Qwen3), through the `</think>` (as `reasoning_token_count` counts them)."""
        reasoning_lps: list[Any] = []
        content_lps: list[Any] = []
        answering = self.answering.get(key, not self.think)
        for i, token in enumerate(delta.token_ids):
            if answering and token == self.think_id and key not in self.answered:
                answering = False  # the model opens its own think block
            lp = delta.logprobs[i] if delta.logprobs and i < len(delta.logprobs) else None
            if lp is not None and token not in self.stop_ids:
                (content_lps if answering else reasoning_lps).append(lp)
                if answering:
                    self.answered.add(key)
            if token == self.bridge.end_think_id:
                answering = True
        self.answering[key] = answering
        pieces = []
        if delta.reasoning_content or reasoning_lps:
            pieces.append(("reasoning", delta.reasoning_content, chat_logprobs(self.texts, reasoning_lps)))
        if delta.content or content_lps:
            pieces.append(("content", delta.content, chat_logprobs(self.texts, content_lps)))
        return pieces
