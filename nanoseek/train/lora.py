"""LoRA: low-rank adapters on a model's projections, trained alone and merged into plain weights on save.

    nanoseek sft recipes/cpu_toy_sft.toml --init runs/base lora.rank=8 --out runs/sft-lora
    nanoseek grpo recipes/grpo_r1_zero.toml --init runs/base lora.rank=8 --out runs/grpo-lora

    model = add_lora(model, LoRASection(rank=8, alpha=16))   # freezes the model, wraps its projections
    plain = merged_model(model)        # the same family, W + (alpha/r) B A, sharing every frozen tensor
    merge_into(plain, model)           # refresh plain's merged weights after an optimizer step

The math (Hu et al. 2021), for a projection y = x W^T (+ b), W (out, in), and rank r:

    y = x W^T + (alpha / r) * dropout(x) A^T B^T       A (r, in) ~ kaiming-uniform, B (out, r) = 0
    merged: W' = W + (alpha / r) B A                   so x W'^T = y exactly (without dropout)

B starts at zero, so the adapted model starts as the model itself. W (and every other tensor of the
model) is frozen; the optimizer sees A and B only. Targets are the decoder blocks' projections:
q/k/v/o and the SwiGLU MLPs' gate/up/down in the dense families; MLA's q_proj or q_a_proj/q_b_proj,
kv_a_proj_with_mqa, kv_b_proj, o_proj and the dense MLPs (the first layers and the shared experts) in
DeepSeek-V2/V3. Routed experts are stacked (E, in, out) tensors, not layers: they stay frozen.

Why our own module rather than `peft`: our architecture code reads some weights directly, e.g. MLA's
absorbed decode form folds `kv_b_proj.weight` into the queries (attention.py), and GRPO's
log-probabilities run through that cached path. peft's wrapped layer answers `.weight` with the
frozen base weight, so the adapter on kv_b_proj would silently vanish there. `LoRALinear.weight` is
the effective weight W + (alpha / r) B A (differentiable while the adapters train), so every reader
of `.weight` sees the adapted layer; its forward runs the factored form above, whose cost is
O(tokens x r x (in + out)) on top of the frozen matmul, and never forms W's gradient.

Where the adapters go (the choices made for each stage):
- Checkpoints (`nanoseek.train.checkpointing`): `model/` holds the merged weights, a plain Hugging
  Face checkpoint of the family that transformers and every nanoseek command load; `adapters.safetensors`
  beside it holds A and B (and the buffers training moves: MoE router biases), with which `--resume`
  rebuilds exactly the run's state from the frozen base (`model.init`) — never by adapting the merged
  weights a second time.
- GRPO rollouts (`nanoseek.rl.trainer`): the rollout Generator gets `merged_model(policy)`, a plain
  model of the family whose frozen tensors are the policy's own (no copy) and whose adapted
  projections hold W + (alpha / r) B A, refreshed in place by `merge_into` before every
  `sync_weights`. The engine thus decodes a plain model (its fast paths and int8 apply), an engine in
  another process loads a plain state dict, and rollout log-probabilities equal the trainer's (tested).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nanoseek.model.errors import CheckpointError, some
from nanoseek.model.kernels import linear
from nanoseek.train.config import ConfigError, LoRASection

log = logging.getLogger(__name__)

# the decoder blocks' projections of every family (names as transformers writes them)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROJECTIONS += ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj")
ADAPTERS_FILE = "adapters.safetensors"


class LoRALinear(nn.Module):
    """y = base(x) + scaling * dropout(x) A^T B^T with scaling = alpha / rank; `base` frozen, B = 0 at
    the start. `weight` is the effective weight W + scaling B A, `bias` the base's."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear's (and peft's) A
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._merged: torch.Tensor | None = None  # `weight` outside autograd, updated in place
        self._merged_key: tuple | None = None

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # (.., r) -> (.., out)
        return linear(x, self.base_layer) + self.scaling * delta

    def delta_weight(self) -> torch.Tensor:
        """scaling B A (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    @property
    def weight(self) -> torch.Tensor:
        """W + scaling B A. Differentiable while the adapters train; otherwise one tensor kept and
        rewritten in place when W, A or B change, so a reader that caches what it derives from a
        weight by (version, pointer), as MLA's absorbed form does, notices every change."""
        if torch.is_grad_enabled() and (self.lora_A.requires_grad or self.lora_B.requires_grad):
            return self.base_layer.weight + self.delta_weight()
        tensors = (self.base_layer.weight, self.lora_A, self.lora_B)
        key = tuple((t._version, t.data_ptr()) for t in tensors)
        if self._merged is None or self._merged_key != key:
            with torch.no_grad():
                merged = self.base_layer.weight + self.delta_weight()
                if self._merged is None or self._merged.shape != merged.shape:
                    self._merged = merged
                else:
                    self._merged.copy_(merged)
            self._merged_key = key
        return self._merged

    def merged_weight(self) -> torch.Tensor:
        """A fresh, detached W + scaling B A."""
        with torch.no_grad():
            return self.base_layer.weight + self.delta_weight()

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


# ------------------------------------------------------------------------------------ adapting a model


def add_lora(model: nn.Module, cfg: LoRASection) -> nn.Module:
    """Freeze `model` and wrap its target projections (`cfg.targets`, or every one of PROJECTIONS it
    has) in LoRALinear, in place; returns it. A no-op when cfg.rank == 0. ConfigError for a target
    that names no linear layer of the model, or for a tied output head."""
    if cfg.rank == 0:
        return model
    names = _targets(model, cfg.targets)
    model.requires_grad_(False)
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, LoRALinear(getattr(owner, attr), cfg.rank, cfg.alpha, cfg.dropout))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    kinds = sorted({n.rpartition(".")[2] for n in names})
    log.info(
        "LoRA rank %d (alpha %g) on %d layers (%s): %s trainable parameters of %s",
        cfg.rank, cfg.alpha, len(names), ", ".join(kinds), f"{trainable:,}", f"{total:,}",
    )  # fmt: skip
    return model


def _targets(model: nn.Module, wanted: list[str]) -> list[str]:
    """Module names of the bias-free or biased nn.Linear layers whose last name is a target."""
    linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    have = sorted({name.rpartition(".")[2] for name in linears})
    for target in wanted:
        if target not in have:
            family = getattr(model.config, "model_type", type(model).__name__)
            raise ConfigError(
                f"lora.targets: {target!r} names no linear layer of this {family} model; it has {', '.join(have)}"
            )
    chosen = set(wanted) if wanted else set(PROJECTIONS)
    names = [name for name in linears if name.rpartition(".")[2] in chosen]
    if "lm_head" in names and getattr(model.config, "tie_word_embeddings", False):
        raise ConfigError(
            "lora.targets: lm_head shares its weight with embed_tokens (tie_word_embeddings); "
            "an adapter on it could not be merged into a tied checkpoint"
        )
    if not names:
        raise ConfigError(f"lora.targets: no layer of this model to adapt (targets {sorted(chosen)})")
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Module name -> LoRALinear of every adapted layer (empty for a model without adapters)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


# ------------------------------------------------------------------------------------ merging


def merged_model(model: nn.Module) -> nn.Module:
    """A plain model of `model`'s family (every LoRALinear an nn.Linear of weight W + scaling B A) that
    shares every other tensor with `model`: only the adapted projections take new memory. Frozen, like
    the tensors it shares."""
    layers = lora_layers(model)
    adapters = {id(t) for m in layers.values() for t in (m.lora_A, m.lora_B)}
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()] if id(t) not in adapters}
    for m in layers.values():
        memo[id(m)] = _plain_linear(m)  # deepcopy puts the plain layer where the adapted one was
    plain = copy.deepcopy(model, memo)
    plain.requires_grad_(False)
    return plain


def _plain_linear(layer: LoRALinear) -> nn.Linear:
    base = layer.base_layer
    out = nn.Linear(base.in_features, base.out_features, bias=False, device="meta")
    out.weight = nn.Parameter(layer.merged_weight(), requires_grad=False)
    out.bias = base.bias  # shared (frozen)
    return out


@torch.no_grad()
def merge_into(plain: nn.Module, model: nn.Module) -> None:
    """Write `model`'s current W + scaling B A into `plain` (a `merged_model(model)`), in place."""
    for name, layer in lora_layers(model).items():
        plain.get_submodule(name).weight.copy_(layer.merged_weight())


# ------------------------------------------------------------------------------------ checkpoints


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA run changes, under the model's state-dict names: every adapter's A and B and the
    persistent buffers (the MoE routers' biases, which balancing moves). Empty without adapters."""
    if not lora_layers(model):
        return {}
    params = dict(model.named_parameters(remove_duplicate=False))  # a tied head is a parameter too
    return {
        name: t.detach()
        for name, t in model.state_dict().items()
        if name not in params or name.endswith((".lora_A", ".lora_B"))
    }


def save_adapters(model: nn.Module, directory: str | Path) -> Path:
    """Write adapter_state(model) to directory/adapters.safetensors (rank and alpha in its metadata)."""
    from safetensors.torch import save_file

    layer = next(iter(lora_layers(model).values()))
    path = Path(directory) / ADAPTERS_FILE
    state = {name: t.contiguous() for name, t in adapter_state(model).items()}
    save_file(state, path, metadata={"rank": str(layer.rank), "alpha": repr(layer.alpha)})
    return path


def resume_state(model: nn.Module, checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """`model`'s state dict (its frozen base as built from model.init) with the adapters and buffers of
    `checkpoint`'s adapters.safetensors: what `load_state_dict` needs to resume a LoRA run exactly.
    CheckpointError naming lora.rank / lora.targets when the adapters do not fit the config."""
    from safetensors import safe_open

    path = Path(checkpoint) / ADAPTERS_FILE
    if not path.is_file():
        raise CheckpointError(
            path,
            "missing: the checkpoint has no LoRA adapters (it is not a LoRA run's); resume without lora.rank",
            "lora.rank",
        )
    with safe_open(str(path), "pt") as f:
        saved = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not iterable)
        meta = f.metadata() or {}
    want = adapter_state(model)
    if saved.keys() != want.keys():
        missing, extra = sorted(want.keys() - saved.keys()), sorted(saved.keys() - want.keys())
        problem = f"the adapters do not fit this config (missing {some(missing) or 'none'}; unexpected {some(extra) or 'none'})"
        raise CheckpointError(path, problem, "lora.targets")
    for name, t in saved.items():
        if t.shape != want[name].shape:
            raise CheckpointError(
                path,
                f"{name} has shape {tuple(t.shape)}, the config implies {tuple(want[name].shape)} "
                f"(the run was saved with rank {meta.get('rank', '?')})",
                "lora.rank",
            )
    return {**model.state_dict(), **saved}
