"""What /v1/chat/completions and /v1/completions share: the envelope, the usage and the SSE stream.

    class ChatView(View):                  # chat_routes.py; CompletionView in completions.py
        prefix, object, chunk_object = "chatcmpl", "chat.completion", "chat.completion.chunk"
        def choice(self, sample): ...      # one choice of the complete response
        def first_choices(self): ...       # the stream's opening chunk ([] for none)
        def delta_choices(self, batch): ...  # the chunk choices for a batch of engine deltas
    return await respond(ChatView(bridge, body, generation), request)

A response is `{id, object, created, model, system_fingerprint, choices, usage}`; streamed, every
chunk has the same envelope (`usage: null` when `stream_options.include_usage` asks for a last chunk
with `choices: []` and the usage), and the stream ends with `data: [DONE]`. An error after the
headers went out is sent in the stream as an OpenAI error object, then `[DONE]`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from nanoseek import __version__
from nanoseek.engine import Delta
from nanoseek.serve.bridge import ClientDisconnected, EngineBridge, Generation, Sample
from nanoseek.serve.errors import APIError
from nanoseek.serve.usage import usage_dict

FINGERPRINT = f"nanoseek-{__version__}"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def get_bridge(request: Request) -> EngineBridge:
    return request.app.state.bridge


Bridge = Annotated[EngineBridge, Depends(get_bridge)]


def sse(payload: dict[str, Any] | str) -> str:
    data = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    )
    return f"data: {data}\n\n"


class View:
    """Renders one generation as a complete response or as a stream of chunks."""

    prefix = object = chunk_object = ""

    def __init__(self, bridge: EngineBridge, body: Any, generation: Generation):
        self.bridge, self.body, self.generation = bridge, body, generation
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def prepare(self) -> None:
        """Work before the first byte of the response (none unless a view needs it)."""

    def choice(self, sample: Sample) -> dict[str, Any]:
        raise NotImplementedError

    def first_choices(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def delta_choices(self, batch: list[Delta]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.bridge.config.model_name,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }

    def usage(self) -> dict[str, Any]:
        prompt, completion, reasoning = self.generation.usage_counts()  # reasoning: 0 unless thinking
        cached = self.generation.cached_tokens()  # prompt tokens the prefix cache served
        return usage_dict(prompt, completion, reasoning, cached, self.bridge.config.prices)

    def response(self) -> dict[str, Any]:
        choices = [self.choice(sample) for sample in self.generation.ordered_samples()]
        return {**self.envelope(self.object, choices), "usage": self.usage()}

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        out = self.envelope(self.chunk_object, choices)
        if self.include_usage:
            out["usage"] = None
        return out

    async def stream(self) -> AsyncIterator[str]:
        gen = self.generation
        try:
            first = self.first_choices()
            if first:
                yield sse(self.chunk(first))
            async for batch in gen.updates():
                yield "".join(sse(self.chunk([choice])) for choice in self.delta_choices(batch))
            if self.include_usage:
                yield sse({**self.chunk([]), "usage": self.usage()})
            yield sse("[DONE]")
        except APIError as exc:  # after the headers went out: report it in the stream
            yield sse(exc.body()) + sse("[DONE]")
        finally:
            gen.close()


async def respond(view: View, request: Request) -> Response:
    """The view's stream, or its complete response once the generation is done (499 if the client left)."""
    stream = view.body.stream
    try:
        await view.prepare()
        if stream:
            return StreamingResponse(view.stream(), media_type="text/event-stream", headers=SSE_HEADERS)
        await view.generation.collect(request)
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is listening; this is for the access log
    finally:
        if not stream:
            view.generation.close()
    return JSONResponse(view.response())
