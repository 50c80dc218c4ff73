"""nanoseek.engine: the `Generator` protocol, the native inference engine and a remote generator.

    from nanoseek.engine import Engine, GenerationRequest, SamplingParams
    engine = Engine.from_pretrained("runs/sft/model")                  # int8=True, speculative=True
    [c] = engine.generate([GenerationRequest(messages=[{"role": "user", "content": "2+2?"}])])
    c.reasoning_content, c.content, c.token_ids, c.finish_reason

    remote = RemoteGenerator("https://api.deepseek.com", model="deepseek-reasoner")  # same protocol

Modules: `protocol` (SamplingParams, GenerationRequest, Completion, Delta, Generator), `engine`
(Engine: continuous batching, streaming, abort), `scheduler` (slots, queue, token budget),
`runner` (model + latent cache), `sampling`, `detok` (streamed text, stop strings, thinking split),
`speculative` (MTP draft-and-verify), `fast` and `decode` (decode fast paths), `kernels` (the C
matmul of one- and two-row decode steps, built on first use), `quant` (int8 weights),
`naive` (reference generation, perplexity), `remote` (OpenAI-compatible HTTP), `cli`.
"""

from nanoseek.engine.engine import Engine, RequestHandle
from nanoseek.engine.protocol import (
    Completion,
    Delta,
    GenerationRequest,
    Generator,
    SamplingParams,
    TokenLogprob,
)
from nanoseek.engine.quant import quantize_int8

__all__ = [
    "Completion",
    "Delta",
    "Engine",
    "GenerationRequest",
    "Generator",
    "RemoteGenerator",
    "RequestHandle",
    "SamplingParams",
    "TokenLogprob",
    "quantize_int8",
]


def __getattr__(name: str):
    # the remote generator needs httpx; import it only when asked for
    if name == "RemoteGenerator":
        from nanoseek.engine.remote import RemoteGenerator

        return RemoteGenerator
    raise AttributeError(f"module 'nanoseek.engine' has no attribute {name!r}")
