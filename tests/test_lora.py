"""LoRA (nanoseek.train.lora): the layer against its formula, merging (the merged model's logits equal the
adapted model's on every family, MLA's absorbed path included), only adapters training, LoRA SFT on a
transformers-written Qwen2 and on DeepSeek-V3 (merged checkpoints that transformers and nanoseek load,
exact resume from the adapters), and LoRA GRPO raising the reward of a tiny model with rollouts that
see every update."""

import math
import re
import shutil

import pytest
import torch
from helpers import small_config, tiny_config, tokenizer_on
from safetensors.torch import load_file
from sevens import Sevens
from torch import nn

from nanoseek.model import CheckpointError, DeepSeekV3, from_pretrained
from nanoseek.model.dense import DenseConfig, DenseTransformer
from nanoseek.rl import GRPOTrainer, completion_logprobs, load_grpo_config
from nanoseek.rl.micro import write_corpus
from nanoseek.tokenizer import Tokenizer, train_tokenizer
from nanoseek.train import load_config, train
from nanoseek.train import lora as lora_mod
from nanoseek.train.config import ConfigError, LoRASection
from nanoseek.train.lora import LoRALinear, add_lora, lora_layers, merge_into, merged_model
from nanoseek.train.optim import build_optimizer, optimizer_step
from nanoseek.train.report import read_metrics
from nanoseek.train.toy_data import write_task_chat

pytestmark = pytest.mark.usefixtures("one_thread")


def logit_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest |a - b| relative to a's scale (at least 1): float32 rounding grows with the logits,
    and a different CPU or summation order moves the last bits, while a wrong merge moves them by 1e-2+."""
    return (a - b).abs().max().item() / max(1.0, a.abs().max().item())


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every weight random at unit scale (our init zeroes output projections and the head)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(
                1 + 0.1 * torch.randn_like(p) if p.ndim == 1 else torch.randn_like(p) * p.shape[-1] ** -0.5
            )
    return model.eval()


def perturb_adapters(model: nn.Module, std: float = 0.3, seed: int = 1) -> None:
    """B = 0 makes the adapted model the model itself; give every B values so a test can see it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * std)


# ------------------------------------------------------------------------------------------ the layer


def test_lora_linear_is_the_formula():
    """y = x W^T + b + (alpha / r) x A^T B^T; B = 0 at the start; `weight` is W + (alpha / r) B A, both
    under autograd (differentiable) and outside it (one tensor rewritten in place as the adapters move)."""
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    W, b = base.weight.detach().clone(), base.bias.detach().clone()
    layer = LoRALinear(base, rank=3, alpha=6.0)
    x = torch.randn(4, 5, 12)
    assert torch.equal(layer.lora_B, torch.zeros(7, 3)) and layer.lora_A.shape == (3, 12)
    torch.testing.assert_close(layer(x), x @ W.T + b)  # the adapted layer starts as the layer
    with torch.no_grad():
        layer.lora_B.normal_()
    A, B = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    torch.testing.assert_close(layer(x), x @ W.T + b + 2.0 * (x @ A.T @ B.T), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight, W + 2.0 * B @ A)
    assert layer.weight.requires_grad  # under autograd: gradients reach A and B through it
    with torch.no_grad():
        before = layer.weight
        ptr, version = before.data_ptr(), before._version
        layer.lora_B.add_(1.0)
        after = layer.weight
    assert after.data_ptr() == ptr and after._version > version  # same tensor, rewritten: caches notice
    torch.testing.assert_close(after, W + 2.0 * (B + 1.0) @ A)
    layer.lora_B.grad = None
    layer(x).sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None
    assert base.weight.grad is None and base.bias.grad is None  # the base is frozen


def test_dropout_acts_on_the_adapter_input_in_training_only():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 16, bias=False), rank=4, alpha=4.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(8, 16)
    plain = x @ layer.weight.detach().T
    layer.eval()
    torch.testing.assert_close(layer(x), plain, rtol=1e-5, atol=1e-5)
    layer.train()
    assert not torch.allclose(layer(x), plain, atol=1e-3)


# ------------------------------------------------------------------------------------------ merging

FAMILIES = {
    "deepseek_v3": lambda: DeepSeekV3(tiny_config()),  # MLA with q_lora, MoE + shared experts, MTP
    "deepseek_v2": lambda: DeepSeekV3(
        tiny_config(
            model_type="deepseek_v2",
            q_lora_rank=None,
            num_nextn_predict_layers=0,
            topk_method="greedy",
            n_group=1,
            topk_group=1,
            scoring_func="softmax",
        )
    ),
    "llama": lambda: DenseTransformer(DenseConfig(model_type="llama", num_key_value_heads=2)),
    "qwen2": lambda: DenseTransformer(
        DenseConfig(model_type="qwen2", num_key_value_heads=1, tie_word_embeddings=True)
    ),
    "qwen3": lambda: DenseTransformer(DenseConfig(model_type="qwen3", num_key_value_heads=2, head_dim=24)),
}
MLP = {"gate_proj", "up_proj", "down_proj"}
ADAPTED = {  # the layers each family adapts by default (MLA: with and without q_lora; routed experts never)
    "deepseek_v3": {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", *MLP},
    "deepseek_v2": {"q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", *MLP},
    **dict.fromkeys(("llama", "qwen2", "qwen3"), {"q_proj", "k_proj", "v_proj", "o_proj", *MLP}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_merged_model_is_the_adapted_model(family):
    """The merged plain model's logits equal the adapted model's (1e-5), on the training forward and on
    the cached one (MLA's absorbed form reads kv_b_proj.weight: it must see the adapter); only the
    adapted projections take new memory; merge_into follows the adapters."""
    model = randomize(FAMILIES[family]())
    vocab = model.config.vocab_size
    add_lora(model, LoRASection(rank=4, alpha=8.0))
    assert {name.rpartition(".")[2] for name in lora_layers(model)} == ADAPTED[family]
    perturb_adapters(model)
    x = torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(0))
    plain = merged_model(model)
    assert not lora_layers(plain) and not any(p.requires_grad for p in plain.parameters())
    with torch.no_grad():
        adapted, merged = model(x), plain(x)
        cache = model.new_cache(2, 16)
        h, _ = model.hidden_states(x, torch.arange(10).expand(2, 10), cache, torch.arange(2))
        cached = model.lm_head(model.norm(h))
    assert logit_gap(adapted, merged) < 1e-5
    assert (cached - adapted).abs().max().item() < 1e-4
    assert plain.embed_tokens.weight.data_ptr() == model.embed_tokens.weight.data_ptr()  # shared, not copied
    layer_name = "layers.0.self_attn.o_proj"
    assert (
        plain.get_submodule(layer_name).weight.data_ptr()
        != model.get_submodule(layer_name).base_layer.weight.data_ptr()
    )

    perturb_adapters(model, seed=2)  # the adapters move: the merged model follows after merge_into
    with torch.no_grad():
        moved = model(x)
        assert (plain(x) - moved).abs().max().item() > 1e-2
        merge_into(plain, model)
        assert logit_gap(moved, plain(x)) < 1e-5


def test_without_the_adapter_on_the_absorbed_path_the_cached_forward_would_differ(monkeypatch):
    """The check above can fail: were `.weight` the frozen base weight (as a peft-wrapped layer answers),
    MLA's cached path would drop kv_b_proj's adapter and disagree with the training forward."""
    model = randomize(FAMILIES["deepseek_v3"]())
    add_lora(model, LoRASection(rank=4, targets=["kv_b_proj"]))
    perturb_adapters(model)
    x = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))

    def cached_minus_naive():
        with torch.no_grad():
            h, _ = model.hidden_states(x, torch.arange(8)[None], model.new_cache(1, 8), torch.arange(1))
            return (model.lm_head(model.norm(h)) - model(x)).abs().max().item()

    assert cached_minus_naive() < 1e-4
    monkeypatch.setattr(LoRALinear, "weight", property(lambda self: self.base_layer.weight))
    assert cached_minus_naive() > 1e-2


def test_only_the_adapters_train():
    """The optimizer holds A and B only; a step leaves every other weight exactly as it was."""
    model = randomize(FAMILIES["deepseek_v3"]()).train()
    add_lora(model, LoRASection(rank=4))
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    optimizer = build_optimizer(model, load_config().train)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    adapters = {id(p) for name, p in model.named_parameters() if name.endswith(("lora_A", "lora_B"))}
    assert in_optimizer == adapters and len(adapters) == 2 * len(lora_layers(model))
    x = torch.randint(0, model.config.vocab_size, (2, 12))
    model(x, targets=x).total.backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None}
    assert grads and all(name.endswith(("lora_A", "lora_B")) for name in grads)
    optimizer_step(model, optimizer, 1e-2, 1.0)
    assert len(optimizer.state) == len(grads)  # AdamW state for adapters only
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "e_score_correction_bias" not in k)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lora.rank=8"], "lora.rank: LoRA adapts a trained model; set model.init (--init)"),
        (
            ["lora.rank=8", "model.init=x", "train.fsdp=true"],
            "lora.rank: LoRA runs under DDP or in one process",
        ),
        (["lora.dropout=1.0"], "lora.dropout: must be in [0, 1)"),
        (["lora.rank=-1"], "lora.rank: must be >= 0"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_targets_are_checked_against_the_model():
    model = FAMILIES["qwen2"]()
    with pytest.raises(ConfigError, match=r"lora.targets: 'kv_b_proj' names no linear layer of this qwen2 model; it has down_proj, gate_proj"):  # fmt: skip
        add_lora(model, LoRASection(rank=4, targets=["kv_b_proj"]))
    with pytest.raises(ConfigError, match="lora.targets: lm_head shares its weight with embed_tokens"):
        add_lora(model, LoRASection(rank=4, targets=["lm_head"]))
    add_lora(model, LoRASection(rank=4, targets=["q_proj", "v_proj"]))
    assert {n.rpartition(".")[2] for n in lora_layers(model)} == {"q_proj", "v_proj"}


# ------------------------------------------------------------------------------------------ SFT


def sft_overrides(base, data, out, *extra):
    overrides = ["run.kind=sft", "run.device=cpu", "run.progress=false", "cost.peak_flops=1e10"]
    overrides += [f"run.out={out}", f"model.init={base}", f'data.train=["{data}"]', "train.seq_len=224"]
    overrides += ["train.device_batch_size=4", "train.warmup_steps=2", "eval.every=0", "train.lr=1e-2"]
    overrides += [
        "eval.num_samples=1",
        "eval.sample_tokens=4",
        "train.schedule=constant",
        "lora.rank=8",
        *extra,
    ]
    return overrides


def train_losses(out):
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    return write_task_chat(tmp_path_factory.mktemp("lora_chat") / "chat.jsonl", "arithmetic", 200, seed=1)


@pytest.fixture(scope="module")
def qwen2_base(hf_dense_builder, tmp_path_factory):
    """A tiny Qwen2 written by transformers (q/k/v bias, tied embeddings) with a tokenizer beside it."""
    base = tmp_path_factory.mktemp("lora_qwen2") / "base"
    base.mkdir()
    corpus = "What is 12 + 34? Let me add: 12 + 34 = 46. The answer is 46.\n" * 40
    tok = tokenizer_on(corpus, base.parent, 300, out_dir=base)
    hf_dense_builder(
        base, "qwen2", vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id
    )
    return base


def test_lora_sft_on_a_transformers_qwen2_merges_into_a_checkpoint_transformers_loads(
    qwen2_base, chat_data, tmp_path
):
    """LoRA SFT learns; the checkpoint's model/ is the merged model, which transformers loads with the
    adapted model's logits; the base weights never moved; the adapters sit beside it; a run stopped and
    resumed ends with the same weights as one that was not."""
    transformers = pytest.importorskip("transformers")
    from nanoseek.train.distributed import setup
    from nanoseek.train.loop import Trainer

    out = tmp_path / "straight"
    cfg = load_config(
        None,
        sft_overrides(
            qwen2_base, chat_data, out, "train.max_steps=12", "checkpoint.every=5", "checkpoint.keep=5"
        ),
    )
    trainer = Trainer(cfg, setup("cpu"))
    s = trainer.run()
    losses = train_losses(out)
    assert losses[-1] < losses[0] - 0.5, losses
    model = trainer.model
    assert len(lora_layers(model)) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    init = from_pretrained(qwen2_base)
    adapted_base = {
        k.replace("base_layer.", ""): v for k, v in model.state_dict().items() if "lora_" not in k
    }
    assert all(torch.equal(v, adapted_base[k]) for k, v in init.state_dict().items())  # the base is frozen
    step_dir = out / "checkpoints" / "step_000012"
    assert set(load_file(step_dir / "adapters.safetensors")) == {f"{n}.{w}" for n in lora_layers(model) for w in ("lora_A", "lora_B")}  # fmt: skip

    merged = from_pretrained(s["model_dir"])
    assert type(merged) is DenseTransformer and merged.config.tie_word_embeddings
    hf = transformers.AutoModelForCausalLM.from_pretrained(s["model_dir"], dtype=torch.float32).eval()
    x = torch.randint(0, merged.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs, merged_logits = model.eval()(x), hf(x).logits, merged(x)
    assert logit_gap(ours, merged_logits) < 1e-5
    assert logit_gap(ours, theirs) < 1e-4
    assert (ours - init(x)).abs().max().item() > 1e-2  # (the adapters did change the model)

    # resume from the step-5 checkpoint of the same run (its later checkpoints removed, as after a crash)
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed, symlinks=True)
    for later in ("step_000010", "step_000012"):
        shutil.rmtree(resumed / "checkpoints" / later)
    train(load_config(None, sft_overrides(qwen2_base, chat_data, resumed, "train.max_steps=12")), resume=True)
    a = load_file(step_dir / "model" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "step_000012" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert train_losses(resumed) == losses


def test_resuming_without_adapters_names_the_lora_setting(qwen2_base, chat_data, tmp_path):
    out = tmp_path / "full"
    cfg = sft_overrides(qwen2_base, chat_data, out, "train.max_steps=1", "lora.rank=0")
    train(load_config(None, cfg))
    with pytest.raises(
        CheckpointError, match="adapters.safetensors: missing: the checkpoint has no LoRA adapters"
    ):
        train(load_config(None, [*cfg, "train.max_steps=2", "lora.rank=8"]), resume=True)


def test_lora_sft_on_deepseek_v3(chat_data, tmp_path):
    """MLA + MoE + MTP: the attention projections and the dense MLPs (shared experts) adapt, the routed
    experts stay frozen; the merged checkpoint loads with the adapted model's logits."""
    from nanoseek.train.distributed import setup
    from nanoseek.train.loop import Trainer

    base = tmp_path / "base"
    corpus = "What is 12 + 34? Let me add: 12 + 34 = 46. The answer is 46.\n" * 40
    tok = tokenizer_on(corpus, tmp_path, 300, out_dir=base)
    randomize(DeepSeekV3(small_config(tok.vocab_size, num_nextn_predict_layers=1, n_shared_experts=1))).save_pretrained(base)  # fmt: skip
    out = tmp_path / "sft"
    trainer = Trainer(
        load_config(None, sft_overrides(base, chat_data, out, "train.max_steps=12")), setup("cpu")
    )
    s = trainer.run()
    losses = train_losses(out)
    assert losses[-1] < losses[0] - 0.5, losses
    model = trainer.model.eval()
    kinds = {name.rpartition(".")[2] for name in lora_layers(model)}
    assert kinds == {
        "q_proj",
        "kv_a_proj_with_mqa",
        "kv_b_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert not any(p.requires_grad for name, p in model.named_parameters() if "experts." in name and "shared" not in name)  # fmt: skip
    merged = from_pretrained(s["model_dir"]).eval()
    x = torch.randint(0, tok.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(x), merged(x)
    assert logit_gap(ours, theirs) < 1e-5


# ------------------------------------------------------------------------------------------ GRPO


@pytest.fixture(scope="module")
def grpo_base(tmp_path_factory):
    """A tiny random DeepSeek-V3 (MLA + MoE) with a BPE trained on R1-Zero documents (as tests/test_grpo.py's)."""
    root = tmp_path_factory.mktemp("lora_grpo")
    write_corpus(
        "arithmetic?digits=1&ops=+&instruction=", root / "corpus.jsonl", shortcut_share=0.5, worked=1
    )
    tok = train_tokenizer([root / "corpus.jsonl"], 420, root / "model", show_progress=False)
    torch.manual_seed(0)
    model = DeepSeekV3(small_config(tok.vocab_size))
    with torch.no_grad():  # the zero-initialized head would make every sample a uniform draw
        model.lm_head.weight.normal_(std=0.5)
    model.save_pretrained(root / "model")
    return root / "model"


def grpo_config(base, out, *extra):
    return load_grpo_config(
        None,
        [
            f"run.out={out}", f"model.init={base}", "task.name=sevens", "run.device=cpu", "run.progress=false",
            "rollout.group_size=6", "rollout.prompts_per_step=4", "rollout.max_new_tokens=8", "rollout.stop=[]",
            "grpo.micro_batch=24", "train.lr=5e-2", "eval.every=0", "eval.problems=4", "cost.peak_flops=1e10",
            "lora.rank=4", "lora.alpha=8", *extra,
        ],
    )  # fmt: skip


@pytest.fixture()
def sevens(monkeypatch):
    import nanoseek.rl.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "parse_task_spec", lambda name: type("Spec", (), {"build": lambda self: Sevens()})())  # fmt: skip


def test_lora_grpo_raises_the_reward_and_rollouts_see_every_update(grpo_base, tmp_path, sevens):
    trainer = GRPOTrainer(grpo_config(grpo_base, tmp_path, "train.max_steps=16"))
    assert trainer.rollout_model is not trainer.model and not lora_layers(trainer.rollout_model)
    trainer.run()
    train_records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    rewards = [r["reward"] for r in train_records]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.25, str([round(r, 3) for r in rewards])
    # the engine sampled from the policy as updated: its logprobs equal the trainer's at every step
    assert all(r["logp_mismatch"] < 1e-3 for r in train_records), [r["logp_mismatch"] for r in train_records]
    saved = from_pretrained(tmp_path / "model").eval()
    x = torch.randint(0, saved.config.vocab_size, (1, 12))
    with torch.no_grad():
        assert logit_gap(trainer.model.eval()(x), saved(x)) < 1e-4


def test_without_the_merge_the_rollouts_would_be_stale(grpo_base, tmp_path, sevens, monkeypatch):
    """The mismatch check above can fail: with merge_into a no-op the engine keeps sampling the initial
    weights, and from the second step on its logprobs disagree with the trainer's."""
    import nanoseek.rl.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "merge_into", lambda plain, model: None)
    trainer = GRPOTrainer(grpo_config(grpo_base, tmp_path, "train.max_steps=3"))
    trainer.run()
    mismatch = [r["logp_mismatch"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert mismatch[0] < 1e-3 and max(mismatch[1:]) > 1e-2, mismatch


def test_rollout_logprobs_equal_the_trainers_after_an_update(grpo_base, tmp_path, sevens):
    """After sync, the engine's logprob of each sampled token is completion_logprobs' under the adapted
    policy (the direct form of the per-step mismatch metric)."""
    from nanoseek.engine import GenerationRequest, SamplingParams

    trainer = GRPOTrainer(grpo_config(grpo_base, tmp_path, "train.max_steps=1"))
    perturb_adapters(trainer.model, std=0.5)
    trainer.sync_rollouts()
    prompt = trainer.tokenizer.encode("Write 3 sevens:")
    out = trainer.generator.generate(
        [
            GenerationRequest(
                prompt=prompt,
                params=SamplingParams(max_new_tokens=8, n=3, seed=0, logprobs=True, ignore_eos=True),
            )
        ]  # fmt: skip
    )
    with torch.no_grad():
        logp, _, mask = completion_logprobs(trainer.model, [prompt] * 3, [o.token_ids for o in out], 0)
    engine = torch.tensor([[lp.logprob for lp in o.logprobs] for o in out])
    assert mask.all() and logit_gap(logp, engine) < 1e-4
    assert not math.isclose(float(logp.sum()), 0.0)


def test_grpo_resume_keeps_the_adapters(grpo_base, tmp_path, sevens):
    GRPOTrainer(grpo_config(grpo_base, tmp_path / "straight", "train.max_steps=3")).run()
    GRPOTrainer(grpo_config(grpo_base, tmp_path / "resumed", "train.max_steps=2")).run()
    resumed = GRPOTrainer(grpo_config(grpo_base, tmp_path / "resumed", "train.max_steps=3"), resume=True)
    assert resumed.step == 2
    resumed.run()
    a = load_file(tmp_path / "straight" / "checkpoints" / "step_000003" / lora_mod.ADAPTERS_FILE)
    b = load_file(tmp_path / "resumed" / "checkpoints" / "step_000003" / lora_mod.ADAPTERS_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def grpo_qwen2_base(grpo_base, hf_dense_builder, tmp_path_factory):
    """R1-Zero from a base model of another family: a tiny Qwen2 written by transformers, grpo_base's
    tokenizer beside it."""
    base = tmp_path_factory.mktemp("lora_grpo_qwen2") / "model"
    base.mkdir()
    tok = Tokenizer.from_dir(grpo_base)
    tok.save(base)
    hf_dense_builder(
        base, "qwen2", vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id
    )
    return base


def test_lora_grpo_from_a_transformers_qwen2(grpo_qwen2_base, tmp_path, sevens):
    """`grpo --init <a Qwen2 base> lora.rank=4`: the engine rolls out the merged dense model, its logprobs
    equal the trainer's at every step, and the merged checkpoint loads in transformers."""
    transformers = pytest.importorskip("transformers")
    trainer = GRPOTrainer(grpo_config(grpo_qwen2_base, tmp_path, "train.max_steps=3"))
    assert {n.rpartition(".")[2] for n in lora_layers(trainer.model)} == ADAPTED["qwen2"]
    trainer.run()
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert all(r["logp_mismatch"] < 1e-3 for r in records), [r["logp_mismatch"] for r in records]
    assert sum(r["active_sequences"] for r in records[1:]) > 0  # updates after the first rollouts
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32).eval()
    x = torch.randint(0, trainer.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, base = trainer.model.eval()(x), from_pretrained(grpo_qwen2_base)(x)
        assert logit_gap(ours, hf(x).logits) < 1e-4
        assert (ours - base).abs().max().item() > 1e-3  # the adapters moved
