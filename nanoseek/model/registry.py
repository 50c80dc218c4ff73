"""The model registry: config.json's `model_type` -> the family that builds, caches and loads it.

    from nanoseek.model import from_pretrained       # any registered family, by config.json's model_type
    model = from_pretrained("runs/x/model")
    family = get_family("deepseek_v3")               # Family(model_cls=DeepSeekV3, config_cls=ModelConfig, ...)
    families()                                        # ['deepseek_v3']

A family is one line of `register(Family(...))` beside its model code (deepseek_hf.py for DeepSeek-V3 and V2):
the model class, its config class (`from_hf_dict`, `to_hf_dict`, and a `model_type` attribute naming
the family), its cache class, and its Hugging Face key map as two functions. The generic loader
(checkpoint.py) reads config.json, finds the family by model_type, builds the config and the model,
maps the file's tensors with `from_hf` and loads them strictly; saving maps them back with `to_hf`.

What every registered model offers the engine and trainers: `config` (vocab_size, num_hidden_layers,
max_position_embeddings, ...), `hidden_states(ids, positions, cache, slots)`, `norm`, `lm_head`,
`embed_tokens`, `new_cache(num_slots, max_len, with_mtp=False, dtype=None)`, `device`,
`save_pretrained(path)`; models with multi-token prediction also `mtp_hidden` and `mtp_logits`.
Every cache: `kv`, one tensor per layer shaped (num_slots, max_len, width) (MLA: width = kv_lora_rank +
qk_rope_head_dim; a GQA K/V cache: 2 * kv_heads * head_dim), `copy_slot(src, dst, length)`,
`num_slots`, `max_len`, `bytes_per_token`. Code outside nanoseek.model makes caches only through
`model.new_cache(...)`.

A model class inherits `PretrainedModel` (from_pretrained, save_pretrained, device).

`LoadHints` are what a family tells the strict loader so that a mismatch is one CheckpointError line
naming the files' tensor and the config field at fault; each has a neutral default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanoseek.model.errors import CheckpointError


@dataclass(frozen=True)
class LoadHints:
    # the config to build for these weights (DeepSeek-V3: none of the MTP layers config.json declares
    # are in the files -> build without MTP, with a warning); may raise CheckpointError
    fit_config: Callable[[Any, dict[str, torch.Tensor], Path], Any] = lambda cfg, hf, where: cfg
    # checks of the files' tensors against the config before names and shapes (layer counts: the
    # commonest config error, named on its own); raises CheckpointError
    check_layers: Callable[[Any, dict[str, torch.Tensor], Path], None] = lambda cfg, hf, where: None
    hf_name: Callable[[Any, str], str] = lambda cfg, name: name  # our parameter name as the files call it
    # a shape as the files hold it
    shown_shape: Callable[[str, torch.Size], tuple[int, ...]] = lambda name, shape: tuple(shape)
    # (regex on our parameter name, what sets each dimension in config-field words); first match wins
    shapes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (regex on a missing or unexpected parameter name, the config field deciding that it exists)
    presence: tuple[tuple[str, str], ...] = ()
    # (parameters, other numbers such as rope tables) that model_cls(cfg) allocates, in closed form,
    # so a config too large for the machine is refused before allocating; None: not checked
    build_counts: Callable[[Any], tuple[int, int]] | None = None


@dataclass(frozen=True)
class Family:
    model_type: str  # config.json's model_type
    model_cls: type[nn.Module]
    config_cls: type  # from_hf_dict(dict) (ValueError naming the field), to_hf_dict(), model_type
    cache_cls: type  # what model_cls.new_cache returns
    to_hf: Callable[[nn.Module], dict[str, torch.Tensor]]  # model -> tensors under HF names
    from_hf: Callable[[Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]]  # (config, HF) -> state_dict
    hints: LoadHints = field(default_factory=LoadHints)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Adds (or replaces) the family for its model_type; returns it."""
    _FAMILIES[family.model_type] = family
    return family


def families() -> list[str]:
    """The model_types that load, sorted."""
    return sorted(_FAMILIES)


def get_family(model_type: Any, where: str | Path = "config.json") -> Family:
    """The family registered for `model_type`; CheckpointError (at `where`, field model_type) naming
    it and the supported ones if there is none."""
    family = _FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        got = "missing" if model_type is None else f"{model_type!r} is not supported"
        raise CheckpointError(where, f"model_type: {got}; supported: {', '.join(families())}", "model_type")
    return family


class PretrainedModel(nn.Module):
    """What every family's model class inherits: loading and saving a Hugging Face model directory, and
    the device its weights are on (its `embed_tokens`)."""

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, dtype=None):
        """A model directory of this class's family (CheckpointError if it is another's)."""
        from nanoseek.model.checkpoint import from_pretrained

        return from_pretrained(path, device=device, dtype=dtype, model_cls=cls)

    def save_pretrained(self, path: str | Path) -> None:
        from nanoseek.model.checkpoint import save_model

        save_model(self, path)

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device


def family_of(model: nn.Module) -> Family:
    """The family of a model (by its config's model_type)."""
    return get_family(model.config.model_type)
