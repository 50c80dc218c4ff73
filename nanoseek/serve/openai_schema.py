"""The request bodies of the OpenAI-compatible endpoints (pydantic) and their mapping to SamplingParams.

    body = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    params = sampling_params(body, bridge, max_new_tokens=256)      # bridge: the server's EngineBridge

FastAPI validates bodies with these models (and publishes them in /openapi.json); a value of the wrong
type or out of range becomes a 400 naming the parameter (see `errors.validation_error`). Types are
strict, as OpenAI's are: "0.7" is not a temperature and 1.0 is not an `n`. Fields nobody here knows
are ignored. Besides OpenAI's parameters the bodies accept the extensions that vLLM and DeepSeek
clients send: `top_k`, `min_p`, `repetition_penalty`, `ignore_eos`, and, for chat, turning thinking
off with `thinking: {"type": "disabled"}` (DeepSeek) or `chat_template_kwargs: {"enable_thinking":
false}` (vLLM). History messages may carry `reasoning_content` (or `reasoning`); it is accepted and
dropped, as DeepSeek's API does, so a client can send back the assistant messages it received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from nanoseek.engine import SamplingParams
from nanoseek.serve.errors import APIError

if TYPE_CHECKING:
    from nanoseek.serve.bridge import EngineBridge

MAX_STOP = 16  # stop strings per request
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20
SEED_RANGE = 2**63 - 2**16  # the engine seeds sample j with seed + j; keep it inside torch's range
MIN_TEMPERATURE = 1e-5  # below it sampling is greedy (as in vLLM)


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (it contains a lone surrogate)") from exc
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
StopText = Annotated[Text, Field(max_length=MAX_STOP_CHARS)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(Body):
    include_usage: bool = False


class TextPart(Body):
    type: Literal["text"]
    text: Text


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart] | None = None
    name: str | None = None
    reasoning_content: str | None = None  # accepted and ignored (DeepSeek's API drops it too)
    reasoning: str | None = None  # vLLM's spelling, likewise

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class Thinking(Body):
    type: Literal["enabled", "disabled"] = "enabled"


class SamplingFields(Body):
    """Parameters both endpoints share."""

    model: str | None = None  # informational: this server serves one model
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # -1 or 0: no top-k (vLLM)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: StopText | list[StopText] | None = Field(None, max_length=MAX_STOP)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's benchmark switch: generate max tokens even past EOS
    user: str | None = Field(None, max_length=256)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # the answer (reasoning not counted)
    max_completion_tokens: int | None = Field(None, ge=1)  # everything generated, reasoning included
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    thinking: Thinking | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def think(self) -> bool:
        """Whether the model thinks first (R1's default) or answers directly."""
        if self.thinking is not None:
            return self.thinking.type == "enabled"
        kwargs = self.chat_template_kwargs or {}
        for key in ("enable_thinking", "thinking"):
            if isinstance(kwargs.get(key), bool):
                return kwargs[key]
        return True

    def conversation(self) -> list[dict[str, str]]:
        """The messages in the chat format's shape: developer -> system, text parts joined, reasoning
        of earlier assistant turns dropped."""
        out = []
        for m in self.messages:
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": m.text()})
        return out


TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(SamplingFields):
    prompt: Text | list[Text] | TokenIds | list[TokenIds]
    max_tokens: int | None = Field(None, ge=0)  # None: 16, as OpenAI
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=128)

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts, each text or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt must not be empty.", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # one prompt of token ids
        return list(p)


def stop_strings(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [s for s in ([stop] if isinstance(stop, str) else stop) if s]


def sampling_params(
    body: SamplingFields,
    bridge: EngineBridge,
    max_new_tokens: int,
    logprobs: bool = False,
    top_logprobs: int = 0,
) -> SamplingParams:
    """The engine's SamplingParams for a request body (defaults from the server config), with the
    values that mean "no limit" or "greedy" normalized so that no request can upset the batch."""
    config, n_max = bridge.config, bridge.max_slots
    if body.n > n_max:
        raise APIError(
            400, f"n must be at most {n_max} on this server (it decodes {n_max} samples at once).", param="n"
        )
    temperature = config.temperature if body.temperature is None else body.temperature
    top_p = config.top_p if body.top_p is None else body.top_p
    top_k = config.top_k if body.top_k is None else max(body.top_k, 0)
    if top_p == 0:  # OpenAI allows 0: only the most likely token
        top_p, top_k = 1.0, 1
    if top_k >= bridge.vocab_size:  # no limit (and no 2**63 reaching torch)
        top_k = 0
    if temperature < MIN_TEMPERATURE:  # logits / 1e-300 overflow: that is greedy
        temperature = 0.0
    seed = None if body.seed is None else body.seed % SEED_RANGE
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        seed=seed,
        stop=stop_strings(body.stop),
        ignore_eos=body.ignore_eos,
        n=body.n,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def context_error(
    context: int, prompt_tokens: int, requested: int | None, param: str, at_least: bool = False
) -> APIError:
    """The 400 for a prompt (plus the tokens asked for) that does not fit the model's context;
    `at_least`: `prompt_tokens` is a lower bound (the prompt was refused before tokenizing)."""
    some = "at least " if at_least else ""
    if requested is None:
        message = (
            f"This model's maximum context length is {context} tokens. However, your prompt has "
            f"{some}{prompt_tokens} tokens, which leaves no room for a completion. Please shorten the prompt."
        )
    else:
        message = (
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{some}{prompt_tokens + requested} tokens ({some}{prompt_tokens} in the prompt, {requested} "
            f"for the completion). Please reduce the length of the prompt or the completion."
        )
    return APIError(400, message, param=param, code="context_length_exceeded")
