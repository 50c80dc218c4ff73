"""DeepSeek-V3 and DeepSeek-V2 in the registry: their Hugging Face key map and what a strict load checks.

Both generations are the DeepSeekV3 class under one key map; config.json's model_type ("deepseek_v3",
"deepseek_v2") picks the router (config.py). transformers' DeepseekV2ForCausalLM uses the same names
as V3 without `e_score_correction_bias` (V2's router has no bias) and without MTP layers.

    from nanoseek.model.deepseek_hf import from_hf_state_dict, to_hf_state_dict
    hf = to_hf_state_dict(model)                    # our names -> HF names, experts split per expert
    state = from_hf_state_dict(model.config, hf)    # and back

The HF names (`transformers`' DeepseekV3ForCausalLM, vLLM, DeepSeek's own files):

    model.embed_tokens.weight, model.norm.weight, lm_head.weight
    model.layers.N.self_attn.{q_proj | q_a_proj, q_a_layernorm, q_b_proj}.weight
    model.layers.N.self_attn.{kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj}.weight
    model.layers.N.mlp.{gate,up,down}_proj.weight                              (dense layers)
    model.layers.N.mlp.gate.weight, model.layers.N.mlp.gate.e_score_correction_bias
    model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight                    (per expert)
    model.layers.N.mlp.shared_experts.{gate,up,down}_proj.weight
    model.layers.{L+k}.{enorm,hnorm,eh_proj,shared_head.norm,shared_head.head,embed_tokens}.weight
        + the block's own keys                                                 (MTP module k)

Our model stores the routed experts stacked, (E, in, out); MTP module k is `mtp.k` (its block at
`mtp.k.block`). Loading also accepts experts fused as transformers v5 keeps them in memory
(`mlp.experts.gate_up_proj` (E, 2I, C), `mlp.experts.down_proj` (E, C, I)).

The load hints: the weights must hold exactly layers 0 .. num_hidden_layers - 1 and then
num_nextn_predict_layers MTP layers (a wrong layer count is named first, on its own; MTP layers
config.json declares but the files lack load as a model without MTP, with a warning); a small table
(`SHAPES`, `PRESENCE`) names the config fields that set each dimension or decide whether a tensor
exists; parameters are counted in closed form (`accounting.account`) for the memory check.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from nanoseek.model.accounting import account
from nanoseek.model.attention import LatentCache
from nanoseek.model.config import ModelConfig
from nanoseek.model.errors import CheckpointError, some
from nanoseek.model.registry import Family, LoadHints, register
from nanoseek.model.transformer import DeepSeekV3

log = logging.getLogger(__name__)

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
    """HF names -> our parameter names, per-expert (or v5-fused) experts stacked as (E, in, out).
    Experts that cannot be stacked (a gap in their numbering, unequal shapes) raise ValueError."""
    try:
        return _from_hf(cfg, hf)
    except (IndexError, RuntimeError) as e:  # experts of unequal shapes, fused experts of too few dims
        raise ValueError(f"experts of an unexpected layout ({e})") from None


def _from_hf(cfg: ModelConfig, hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    L = cfg.num_hidden_layers
    ours: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for name, t in hf.items():
        name = name.removeprefix("model.")
        m = re.match(r"layers\.(\d+)\.(.*)", name)
        if m and L <= int(m.group(1)) < L + cfg.num_nextn_predict_layers:  # an MTP layer
            k, rest = int(m.group(1)) - L, m.group(2)
            if rest in ("embed_tokens.weight", "shared_head.head.weight"):
                continue  # vLLM's copies of the main model's embedding and head
            name = f"mtp.{k}.{rest}" if rest.startswith(_MTP_OWN) else f"mtp.{k}.block.{rest}"
        # (a layer beyond num_hidden_layers + num_nextn_predict_layers keeps its name: unexpected)
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
        # stacked as found (E experts); a count other than n_routed_experts is the loader's shape error
        if sorted(per_expert) != list(range(len(per_expert))):
            absent = sorted(set(range(max(per_expert) + 1)) - set(per_expert))
            raise ValueError(
                f"model.{prefix}.{absent[0]}.{param}.weight: missing (the experts must be numbered 0..E-1)"
            )
        ours[f"{prefix}.{param}"] = torch.stack([per_expert[e] for e in range(len(per_expert))])
    return ours


# ------------------------------------------------------------------------------ load hints
def fit_config(cfg: ModelConfig, hf: dict[str, torch.Tensor], where: Path) -> ModelConfig:
    """Without MTP when config.json declares MTP layers that the files do not hold (with a warning)."""
    L = cfg.num_hidden_layers
    if not cfg.num_nextn_predict_layers or any(re.match(rf"model\.layers\.{L}\.", k) for k in hf):
        return cfg
    log.warning(
        "%s: config.json declares %d MTP layer(s) but the weights have none (no model.layers.%d.*); "
        "loading without MTP, so MTP speculative decoding and the MTP loss are off",
        where,
        cfg.num_nextn_predict_layers,
        L,
    )
    return cfg.replace(num_nextn_predict_layers=0)


def check_layers(cfg: ModelConfig, hf: dict[str, torch.Tensor], where: Path) -> None:
    """The weights hold exactly layers 0 .. num_hidden_layers - 1, then num_nextn_predict_layers MTP
    layers (those with an eh_proj); a wrong layer count is the likeliest config error, so it is named
    first and on its own."""
    layers: dict[int, list[str]] = {}
    for name in hf:
        m = re.match(r"model\.layers\.(\d+)\.", name)
        if m:
            layers.setdefault(int(m.group(1)), []).append(name)
    mtp = sorted(i for i, names in layers.items() if any(".eh_proj." in n for n in names))
    main = sorted(set(layers) - set(mtp))
    L, K = cfg.num_hidden_layers, cfg.num_nextn_predict_layers
    if main == list(range(L)) and mtp == list(range(L, L + K)):
        return
    if len(main) != L or main != list(range(len(main))):
        field, says, holds = "num_hidden_layers", L, f"{len(main)} layers ({_span(main)})"
    else:
        field, says, holds = "num_nextn_predict_layers", K, f"{len(mtp)} MTP layer(s) ({_span(mtp)})"
    expected = set(range(L + K))
    extra = sorted(n for i in sorted(set(layers) - expected) for n in sorted(layers[i]))
    absent = sorted(expected - set(layers))
    found = f"unexpected {some(extra)}" if extra else ""
    if absent:
        found += ("; " if found else "") + f"no tensors for {_span(absent)}"
    problem = f"{field}: config.json says {says}, but the weights hold {holds}: {found}"
    raise CheckpointError(where, problem, field)


def _span(layers: list[int]) -> str:
    if not layers:
        return "none"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"model.layers.{layers[0]}" + (f"..{layers[-1]}" if len(layers) > 1 else "")
    return "model.layers." + ",".join(map(str, layers[:8])) + (",..." if len(layers) > 8 else "")


def hf_name(cfg: ModelConfig, name: str) -> str:
    """Our parameter name as it is called in the files (stacked experts: experts.*.X.weight)."""
    m = re.match(r"mtp\.(\d+)\.(?:block\.)?(.*)", name)
    if m:
        name = f"layers.{cfg.num_hidden_layers + int(m.group(1))}.{m.group(2)}"
    name = re.sub(r"\.experts\.(gate_proj|up_proj|down_proj)$", r".experts.*.\1.weight", name)
    return name if name.startswith("lm_head") else f"model.{name}"


def shown_shape(name: str, shape: torch.Size) -> tuple[int, ...]:
    """A shape in the files' orientation: stacked experts (E, in, out) shown as (E, out, in)."""
    if re.search(r"\.experts\.(gate|up|down)_proj$", name) and len(shape) == 3:
        return (shape[0], shape[2], shape[1])
    return tuple(shape)


# In HF orientation: nn.Linear weights are (out, in); stacked experts are shown per expert,
# n_routed_experts x (out, in). First match wins.
_QK_HEADS = "num_attention_heads x (qk_nope_head_dim + qk_rope_head_dim)"
SHAPES = (
    (r"(embed_tokens|lm_head)\.weight$", ("vocab_size", "hidden_size")),
    (r"\.q_a_layernorm\.", ("q_lora_rank",)),
    (r"\.kv_a_layernorm\.", ("kv_lora_rank",)),
    (r"\.q_proj\.", (_QK_HEADS, "hidden_size")),
    (r"\.q_a_proj\.", ("q_lora_rank", "hidden_size")),
    (r"\.q_b_proj\.", (_QK_HEADS, "q_lora_rank")),
    (r"\.kv_a_proj_with_mqa\.", ("kv_lora_rank + qk_rope_head_dim", "hidden_size")),
    (r"\.kv_b_proj\.", ("num_attention_heads x (qk_nope_head_dim + v_head_dim)", "kv_lora_rank")),
    (r"\.o_proj\.", ("hidden_size", "num_attention_heads x v_head_dim")),
    (r"\.shared_experts\.(gate|up)_proj", ("n_shared_experts x moe_intermediate_size", "hidden_size")),
    (r"\.shared_experts\.down_proj", ("hidden_size", "n_shared_experts x moe_intermediate_size")),
    (r"\.experts\.(gate|up)_proj$", ("n_routed_experts", "moe_intermediate_size", "hidden_size")),
    (r"\.experts\.down_proj$", ("n_routed_experts", "hidden_size", "moe_intermediate_size")),
    (r"\.mlp\.gate\.", ("n_routed_experts", "hidden_size")),
    (r"\.mlp\.(gate|up)_proj\.", ("intermediate_size", "hidden_size")),
    (r"\.mlp\.down_proj\.", ("hidden_size", "intermediate_size")),
    (r"eh_proj", ("hidden_size", "2 x hidden_size")),
    (r"norm", ("hidden_size",)),
)
PRESENCE = (
    (r"\.(q_proj|q_a_proj|q_b_proj|q_a_layernorm)\.", "q_lora_rank"),
    (r"\.gate\.e_score_correction_bias$", "model_type / topk_method"),  # V3's router only
    (r"\.shared_experts\.", "n_shared_experts"),
    (r"\.mlp\.(experts|gate)\.|\.mlp\.(gate|up|down)_proj", "n_routed_experts / first_k_dense_replace"),
    (r"^mtp\.", "num_nextn_predict_layers"),
)


def build_counts(cfg: ModelConfig) -> tuple[int, int]:
    """(parameters, rope-table numbers) that `DeepSeekV3(cfg)` allocates: accounting's counts (main
    model, MTP modules, the head even when tied, as the model always has its own); a few small
    buffers aside."""
    acct = account(cfg)
    params = acct.total_params + acct.mtp_params
    params += acct.embedding_params if cfg.tie_word_embeddings else 0
    return params, 2 * cfg.max_position_embeddings * (cfg.qk_rope_head_dim // 2)


# the families: (model_type, model_cls, config_cls, cache_cls, to_hf, from_hf, hints), as registry.Family
HINTS = LoadHints(fit_config, check_layers, hf_name, shown_shape, SHAPES, PRESENCE, build_counts)
DEEPSEEK_V3 = register(
    Family("deepseek_v3", DeepSeekV3, ModelConfig, LatentCache, to_hf_state_dict, from_hf_state_dict, HINTS)
)
DEEPSEEK_V2 = register(
    Family("deepseek_v2", DeepSeekV3, ModelConfig, LatentCache, to_hf_state_dict, from_hf_state_dict, HINTS)
)
