"""nanoseek.engine: the `Generator` protocol, the native inference engine and a remote generator.

    from nanoseek.engine import Engine, GenerationRequest, SamplingParams
    engine = Engine.from_pretrained("runs/sft/model")                  # int8=True, speculative=True
    [c] = engine.generate([GenerationRequest(messages=[{"role": "user", "content": "2+2?"}])])
    c.reasoning_content, c.content, c.token_ids, c.finish_reason

    remote = RemoteGenerator("https://api.deepseek.com", model="deepseek-reasoner")  # same protocol

A trainer that samples from the model it trains calls `engine.sync_weights(model)` after each
update (the engine refuses to decode on weights changed since the last sync).

Modules:
- `protocol`: SamplingParams, GenerationRequest, Completion, Delta, TokenLogprob, Generator.
- `engine`: Engine (continuous batching, streaming, abort, sync_weights) and its Stats.
- `scheduler`: slots, the waiting queue, the per-step token budget.
- `runner`: the model, its cache (`model.new_cache`), prefill on the model's forward, decode on the
  fast path where it runs; the weight-sync snapshot.
- `sampling`: penalties, temperature, top-k/p, min-p, per-sample generators, logprobs.
- `detok`: streamed text, stop strings, the thinking / answer split.
- `speculative`: MTP draft-and-verify decoding.
- `decode`: FastDecoder, the decode step on fused copies of a DeepSeek-V3 model's weights, and
  `supports(model)`, which says why a model takes its own forward instead.
- `decode_step` (+ decode_step.c): that step in one C call; `kernels` (+ kernels.c): its C matmuls,
  built on first use.
- `reference`: the decode step written out in torch, the specification the C step is tested against
  (tests only, not a runtime path).
- `quant`: int8 weights. `naive`: greedy generation by full recompute, perplexity.
- `remote`: RemoteGenerator (OpenAI-compatible HTTP) and the SSE client parser. `cli`: generate, chat.
- `vllm`: VLLMGenerator, the protocol on vLLM's offline engine in this process (nanoseek[vllm]).
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
    "VLLMGenerator",
    "quantize_int8",
]


def __getattr__(name: str):
    # the remote generator needs httpx; import it only when asked for
    if name == "RemoteGenerator":
        from nanoseek.engine.remote import RemoteGenerator

        return RemoteGenerator
    if name == "VLLMGenerator":  # vLLM is optional (nanoseek[vllm]); nothing of it loads until used
        from nanoseek.engine.vllm import VLLMGenerator

        return VLLMGenerator
    raise AttributeError(f"module 'nanoseek.engine' has no attribute {name!r}")
