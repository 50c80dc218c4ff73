"""Hugging Face checkpoint format for DeepSeek-V3: save and load model directories.

    save_model(model, "out/")          # config.json, model.safetensors, generation_config.json
    model = load_model("out/")         # also reads directories written by transformers or DeepSeek

The directory is what `transformers.AutoModelForCausalLM.from_pretrained` and vLLM read:
`config.json` (model_type deepseek_v3, HF field names), `model.safetensors` with HF key names:

    model.embed_tokens.weight, model.norm.weight, lm_head.weight
    model.layers.N.self_attn.{q_proj | q_a_proj, q_a_layernorm, q_b_proj}.weight
    model.layers.N.self_attn.{kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj}.weight
    model.layers.N.mlp.{gate,up,down}_proj.weight                              (dense layers)
    model.layers.N.mlp.gate.weight, model.layers.N.mlp.gate.e_score_correction_bias
    model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight                    (per expert)
    model.layers.N.mlp.shared_experts.{gate,up,down}_proj.weight
    model.layers.{L+k}.{enorm,hnorm,eh_proj,shared_head.norm,shared_head.head,embed_tokens}.weight
        + the block's own keys                                                 (MTP module k)

Loading also accepts experts fused as transformers v5 keeps them in memory
(`mlp.experts.gate_up_proj` (E, 2I, C), `mlp.experts.down_proj` (E, C, I)) and sharded safetensors.
Training state (optimizer, RNG, data position) never goes in here; it lives beside it in the run dir.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nanoseek.model.config import ModelConfig
from nanoseek.model.transformer import DeepSeekV3

log = logging.getLogger(__name__)

_EXPERT_PARAMS = ("gate_proj", "up_proj", "down_proj")
_MTP_OWN = ("enorm", "hnorm", "eh_proj", "shared_head")


def to_hf_state_dict(model: DeepSeekV3) -> dict[str, torch.Tensor]:
    """Our parameter names -> HF names, stacked experts split per expert (transposed to (out, in))."""
    L = model.config.num_hidden_layers
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        m = re.match(r"mtp\.(\d+)\.(.*)", name)
        if m:
            k, rest = int(m.group(1)), m.group(2)
            rest = rest.removeprefix("block.")
            name = f"layers.{L + k}.{rest}"
        m = re.match(r"(layers\.\d+\.mlp\.experts)\.(gate_proj|up_proj|down_proj)$", name)
        if m:
            for e in range(t.shape[0]):
                out[f"model.{m.group(1)}.{e}.{m.group(2)}.weight"] = t[e].T.contiguous()
            continue
        out[name if name.startswith("lm_head") else f"model.{name}"] = t.contiguous()
    for k in range(model.config.num_nextn_predict_layers):  # vLLM expects each MTP layer's own copies
        out[f"model.layers.{L + k}.embed_tokens.weight"] = model.embed_tokens.weight.detach().clone()
        out[f"model.layers.{L + k}.shared_head.head.weight"] = model.lm_head.weight.detach().clone()
    return out


def from_hf_state_dict(cfg: ModelConfig, hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names -> our parameter names, per-expert (or v5-fused) experts stacked as (E, in, out)."""
    L = cfg.num_hidden_layers
    ours: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for name, t in hf.items():
        name = name.removeprefix("model.")
        m = re.match(r"layers\.(\d+)\.(.*)", name)
        if m and int(m.group(1)) >= L:  # an MTP layer
            k, rest = int(m.group(1)) - L, m.group(2)
            if k >= cfg.num_nextn_predict_layers or rest in (
                "embed_tokens.weight",
                "shared_head.head.weight",
            ):
                continue  # shared with the main model, or beyond what the config asks for
            name = f"mtp.{k}.{rest}" if rest.startswith(_MTP_OWN) else f"mtp.{k}.block.{rest}"
        m = re.match(r"(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$", name)
        if m:
            experts.setdefault((m.group(1), m.group(3)), {})[int(m.group(2))] = t.T
            continue
        m = re.match(r"(.*\.mlp\.experts)\.gate_up_proj$", name)
        if m:  # transformers v5 fused layout (E, 2I, C)
            gate, up = t.chunk(2, dim=1)
            ours[f"{m.group(1)}.gate_proj"], ours[f"{m.group(1)}.up_proj"] = (
                gate.transpose(1, 2),
                up.transpose(1, 2),
            )
            continue
        m = re.match(r"(.*\.mlp\.experts)\.down_proj$", name)
        if m:  # (E, C, I)
            ours[f"{m.group(1)}.down_proj"] = t.transpose(1, 2)
            continue
        ours[name] = t
    for (prefix, param), per_expert in experts.items():
        if sorted(per_expert) != list(range(cfg.n_routed_experts)):
            raise ValueError(
                f"{prefix}: expected experts 0..{cfg.n_routed_experts - 1}, found {sorted(per_expert)}"
            )
        ours[f"{prefix}.{param}"] = torch.stack([per_expert[e] for e in range(cfg.n_routed_experts)])
    return ours


def save_model(model: DeepSeekV3, path: str | Path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    config = cfg.to_hf_dict()
    config["torch_dtype"] = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
    }  # DeepSeek-R1's recommended sampling
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    save_file(to_hf_state_dict(model), str(path / "model.safetensors"), metadata={"format": "pt"})


def read_config(path: str | Path) -> ModelConfig:
    config_file = Path(path) / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file}: no config.json; is {path} a model directory?")
    return ModelConfig.from_hf_dict(json.loads(config_file.read_text()))


def load_model(path: str | Path, device=None, dtype=None) -> DeepSeekV3:
    path = Path(path)
    cfg = read_config(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors weights")
    hf: dict[str, torch.Tensor] = {}
    for f in files:
        hf.update(load_file(str(f)))
    L = cfg.num_hidden_layers
    has_mtp = any(re.match(rf"model\.layers\.{L}\.", k) for k in hf)
    if cfg.num_nextn_predict_layers and not has_mtp:
        log.warning(
            "%s: config.json declares %d MTP layer(s) but the weights have none (no model.layers.%d.*); "
            "loading without MTP, so MTP speculative decoding and the MTP loss are off",
            path,
            cfg.num_nextn_predict_layers,
            L,
        )
        cfg = cfg.replace(num_nextn_predict_layers=0)
    with torch.device(device or "cpu"):
        model = DeepSeekV3(cfg)
    state = from_hf_state_dict(cfg, hf)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match config.json; missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    for name, t in state.items():
        if t.shape != expected[name].shape:
            want = tuple(expected[name].shape)
            raise ValueError(f"{path}: {name} has shape {tuple(t.shape)}; config.json implies {want}")
    model.load_state_dict(state)
    if dtype is not None:
        model.to(dtype)
    return model
