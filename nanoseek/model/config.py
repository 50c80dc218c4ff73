"""ModelConfig: every shape and routing knob of a DeepSeek-V3 or DeepSeek-V2 model, under HF's field names.

The field names are those of `transformers.DeepseekV3Config` / `DeepseekV2Config` (and DeepSeek's own
config.json), so a config.json written by either loads here and ours loads there:

    cfg = ModelConfig.from_hf_dict(json.load(open("config.json")))
    json.dump(cfg.to_hf_dict(), open("config.json", "w"))

`model_type` says which DeepSeek generation the config describes; both run on the same model code and
differ in the router (what transformers' two classes hard-wire, so the pair is fixed by model_type):

    deepseek_v3: scoring_func sigmoid, topk_method noaux_tc (bias-corrected, groups scored by their
                 top-2), norm_topk_prob true as V3 ships it, multi-token prediction allowed
    deepseek_v2: scoring_func softmax, topk_method greedy or group_limited_greedy (groups scored by
                 their best expert), norm_topk_prob false, no e_score_correction_bias, no MTP

`scoring_func`, `topk_method` and `norm_topk_prob` left as None take the model_type's value above.
V2 with norm_topk_prob true is refused: transformers' DeepseekV2 ignores the field while DeepSeek's own
code would then normalize and drop routed_scaling_factor, so no reading of it is the published one.

A few fields are nanoseek's own training knobs (marked below); they ride along in config.json and
other loaders ignore them. A dense model is the same config with `n_routed_experts = 0`. Every field's
type and range is checked on construction: a bad one raises ValueError("field: expected ..., got ..."),
which the loader turns into a CheckpointError naming config.json.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

# model_type -> (architectures entry, scoring_func, allowed topk_methods (the first is the default),
# norm_topk_prob default)
GENERATIONS = {
    "deepseek_v3": ("DeepseekV3ForCausalLM", "sigmoid", ("noaux_tc",), True),
    "deepseek_v2": ("DeepseekV2ForCausalLM", "softmax", ("greedy", "group_limited_greedy"), False),
}


@dataclass
class ModelConfig:
    model_type: str = "deepseek_v3"  # config.json's model_type: the registry's family (GENERATIONS)
    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 192  # dense MLP width (layers < first_k_dense_replace, or all if dense)
    moe_intermediate_size: int = 32  # width of one routed / shared expert
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    # MLA
    q_lora_rank: int = 0  # 0 (or None in HF files) means a direct q_proj, no low-rank query
    kv_lora_rank: int = 32
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16
    # DeepSeekMoE
    n_routed_experts: int = 8  # 0 means a dense model
    n_shared_experts: int = 1
    num_experts_per_tok: int = 2
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool | None = None  # None: the model_type's (V3 true, V2 false)
    first_k_dense_replace: int = 1
    moe_layer_freq: int = 1  # layer i >= first_k_dense_replace is MoE when i % moe_layer_freq == 0
    scoring_func: str | None = None  # None: the model_type's (sigmoid for V3, softmax for V2)
    topk_method: str | None = None  # None: the model_type's (noaux_tc for V3, greedy for V2)
    # MTP
    num_nextn_predict_layers: int = 0
    # positions
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = (
        None  # {"type": "yarn", "factor", "original_max_position_embeddings", ...}
    )
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    bos_token_id: int = 0
    eos_token_id: int = 1
    # training knobs (transformers ignores them; aux_loss_alpha and seq_aux are DeepSeek's own fields)
    aux_loss_alpha: float = 0.0  # weight of the expert-level balance loss (V3 used 1e-4, V2 1e-3)
    seq_aux: bool = True  # balance loss per sequence (V2, V3); false: over the whole batch
    bias_update_speed: float = 0.001  # gamma of auxiliary-loss-free balancing
    mtp_loss_weight: float = 0.3  # lambda of the MTP loss
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown HF fields, kept for round trips

    def __post_init__(self):
        if self.q_lora_rank is None:
            self.q_lora_rank = 0
        if not isinstance(self.model_type, str) or self.model_type not in GENERATIONS:
            raise ValueError(
                f"model_type: expected one of {', '.join(GENERATIONS)}, got {show_value(self.model_type)}"
            )
        _, scoring, methods, norm = GENERATIONS[self.model_type]
        self.scoring_func = scoring if self.scoring_func is None else self.scoring_func
        self.topk_method = methods[0] if self.topk_method is None else self.topk_method
        self.norm_topk_prob = norm if self.norm_topk_prob is None else self.norm_topk_prob
        check_fields(self)
        check_routing(self)
        if self.n_routed_experts:
            if self.num_experts_per_tok < 1:
                raise ValueError(
                    f"num_experts_per_tok: must be >= 1 in an MoE model, got {self.num_experts_per_tok}"
                )
            if self.n_routed_experts % self.n_group:
                raise ValueError(
                    f"n_group: {self.n_group} groups do not divide n_routed_experts={self.n_routed_experts}"
                )
            if not 1 <= self.topk_group <= self.n_group:
                raise ValueError(f"topk_group: {self.topk_group} must be in [1, n_group={self.n_group}]")
            grouped = self.topk_method != "greedy"  # greedy routing ignores the groups
            if grouped and self.num_experts_per_tok > self.topk_group * (
                self.n_routed_experts // self.n_group
            ):
                raise ValueError(
                    f"num_experts_per_tok: {self.num_experts_per_tok} exceeds the experts in the selected "
                    f"groups (topk_group {self.topk_group} x {self.n_routed_experts // self.n_group} per group)"
                )
            if not grouped and self.num_experts_per_tok > self.n_routed_experts:
                raise ValueError(
                    f"num_experts_per_tok: {self.num_experts_per_tok} exceeds n_routed_experts {self.n_routed_experts}"
                )
            if (
                self.topk_method == "noaux_tc"
                and self.n_routed_experts // self.n_group < 2
                and self.n_group > 1
            ):
                raise ValueError(
                    "n_group: group-limited routing scores a group by its top-2 experts: need >= 2 per group"
                )

    # ------------------------------------------------------------------ derived shapes
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    def layer_is_moe(self, layer_idx: int) -> bool:
        return (
            self.is_moe and layer_idx >= self.first_k_dense_replace and layer_idx % self.moe_layer_freq == 0
        )

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(d_qk), times mscale^2 under YaRN (DeepSeek's long-context attention temperature)."""
        scale = self.qk_head_dim**-0.5
        rs = self.rope_scaling
        if rs and rs.get("type", rs.get("rope_type")) == "yarn":
            mscale_all_dim = rs.get("mscale_all_dim", 0)
            if mscale_all_dim:
                m = yarn_mscale(rs["factor"], mscale_all_dim)
                scale = scale * m * m
        return scale

    # ------------------------------------------------------------------ HF conversion
    def to_hf_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d["q_lora_rank"] = self.q_lora_rank or None
        d["num_key_value_heads"] = self.num_attention_heads
        d["hidden_act"] = "silu"
        d["attention_bias"] = False
        if self.model_type == "deepseek_v3":  # transformers' V2 always reads the pairs interleaved
            d["rope_interleave"] = True
        d["architectures"] = [GENERATIONS[self.model_type][0]]
        d["torch_dtype"] = "float32"
        d |= _PUBLISHED_CONSTANTS  # what DeepSeek's own config.json carries and other loaders read
        if self.rope_scaling is not None:
            d["rope_scaling"] = dict(self.rope_scaling)
        return {**self.extra, **d}

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Reads a config.json written by nanoseek, transformers (v4 or v5) or DeepSeek. A field of the
        wrong type or range raises ValueError("field: expected ..., got ...")."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object of config fields, got {show_value(d)}")
        d = dict(d)
        # transformers v5 folds rope_theta and rope_scaling into `rope_parameters`
        rp = d.pop("rope_parameters", None)
        if rp:
            if not isinstance(rp, dict):
                raise ValueError(f"rope_parameters: expected an object, got {show_value(rp)}")
            d.setdefault("rope_theta", rp.get("rope_theta", 10000.0))
            rope_type = rp.get("rope_type", rp.get("type", "default"))
            if rope_type != "default" and not d.get("rope_scaling"):
                d["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
        rs = d.get("rope_scaling")
        if rs:
            if not isinstance(rs, dict):
                raise ValueError(f"rope_scaling: expected an object (or null), got {show_value(rs)}")
            rs = dict(rs)
            rs["type"] = rs.pop("rope_type", rs.get("type"))
            if rs["type"] not in ("yarn", "default", None):
                raise ValueError(f"rope_scaling: type {rs['type']!r} is not supported (only yarn)")
            d["rope_scaling"] = rs if rs["type"] == "yarn" else None
        if d.get("num_mtp_layers") is not None and "num_nextn_predict_layers" not in d:
            d["num_nextn_predict_layers"] = d["num_mtp_layers"]
        for key, default in (("n_group", 1), ("topk_group", 1), ("first_k_dense_replace", 0)):
            if d.get(key) is None:
                d[key] = default
        if isinstance(d.get("eos_token_id"), list):
            if not d["eos_token_id"]:
                raise ValueError("eos_token_id: expected an integer or a non-empty list, got []")
            d["eos_token_id"] = d["eos_token_id"][0]
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names and v is not None}
        extra = {k: v for k, v in d.items() if k not in names and k not in _DERIVED_HF_FIELDS}
        return cls(**known, extra=extra)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# fields of DeepSeek's published config.json with one value for every nanoseek checkpoint: ep_size
# (DeepSeek's expert-parallel hint for its own inference code; 1 = none), pretraining_tp, attention_dropout, use_cache; and
# pad_token_id, which SGLang's DeepseekV2Model reads without a default (tests/test_config_fields.py)
_PUBLISHED_CONSTANTS = {
    "ep_size": 1,
    "pretraining_tp": 1,
    "attention_dropout": 0.0,
    "use_cache": True,
    "pad_token_id": None,
}

# fields that transformers or we derive; never stored in `extra`
_DERIVED_HF_FIELDS = {
    "ep_size",
    "num_key_value_heads",
    "hidden_act",
    "attention_bias",
    "rope_interleave",
    "architectures",
    "torch_dtype",
    "dtype",
    "num_mtp_layers",
    "qk_head_dim",
    "head_dim",
    "transformers_version",
    "use_cache",
    "pad_token_id",
    "attention_dropout",
    "pretraining_tp",
    "output_router_logits",
}


# Type and range of every field, checked on construction (so a config.json field of the wrong type or
# sign fails here, naming the field, instead of deep inside torch). Sizes have no upper bound here: what
# a config may ask for is bounded by the memory check in `checkpoint.from_pretrained`.
_POSITIVE_INTS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "n_group",
    "topk_group",
    "max_position_embeddings",
    "moe_layer_freq",
)
_NON_NEGATIVE_INTS = (
    "q_lora_rank",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "first_k_dense_replace",
    "num_nextn_predict_layers",
    "bos_token_id",
    "eos_token_id",
)
_POSITIVE_FLOATS = ("rope_theta", "rms_norm_eps", "routed_scaling_factor")
_NON_NEGATIVE_FLOATS = ("initializer_range", "aux_loss_alpha", "bias_update_speed", "mtp_loss_weight")
_BOOLS = ("norm_topk_prob", "tie_word_embeddings", "seq_aux")
_STRINGS = ("scoring_func", "topk_method")


def check_fields(cfg: ModelConfig) -> None:
    """Raise ValueError("field: expected ..., got ...") for the first field of the wrong type or range."""
    for name in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
        value, least = getattr(cfg, name), 1 if name in _POSITIVE_INTS else 0
        if not _is_int(value) or value < least:
            what = "a positive integer" if least else "an integer >= 0"
            raise ValueError(f"{name}: expected {what}, got {show_value(value)}")
    for name in _POSITIVE_FLOATS + _NON_NEGATIVE_FLOATS:
        value, positive = getattr(cfg, name), name in _POSITIVE_FLOATS
        if not _is_number(value) or not math.isfinite(value) or value < 0 or (positive and value == 0):
            what = "a positive number" if positive else "a number >= 0"
            raise ValueError(f"{name}: expected {what}, got {show_value(value)}")
    for name, kind, what in [(n, bool, "true or false") for n in _BOOLS] + [
        (n, str, "a string") for n in _STRINGS
    ]:
        if not isinstance(getattr(cfg, name), kind):
            raise ValueError(f"{name}: expected {what}, got {show_value(getattr(cfg, name))}")
    if cfg.qk_rope_head_dim % 2:
        raise ValueError(
            f"qk_rope_head_dim: expected an even number (rotated in pairs), got {cfg.qk_rope_head_dim}"
        )
    if cfg.rope_scaling is not None:
        _check_rope_scaling(cfg.rope_scaling)


def check_routing(cfg: ModelConfig) -> None:
    """The router fields against the model_type's (GENERATIONS): transformers picks the router by
    model_type alone, so a config.json that says otherwise would run differently there."""
    _, scoring, methods, _ = GENERATIONS[cfg.model_type]
    if cfg.scoring_func != scoring:
        raise ValueError(
            f"scoring_func: {cfg.model_type} scores experts with {scoring!r}, got {cfg.scoring_func!r}"
        )
    if cfg.topk_method not in methods:
        expected = " or ".join(repr(m) for m in methods)
        raise ValueError(f"topk_method: {cfg.model_type} routes with {expected}, got {cfg.topk_method!r}")
    if cfg.model_type == "deepseek_v2":
        if cfg.norm_topk_prob:
            raise ValueError(
                "norm_topk_prob: expected false for deepseek_v2 (as V2 and V2-Lite ship it; transformers' "
                "DeepseekV2 never normalizes the top-k weights), got true"
            )
        if cfg.num_nextn_predict_layers:
            raise ValueError(
                f"num_nextn_predict_layers: deepseek_v2 has no multi-token prediction, got {cfg.num_nextn_predict_layers}"
            )


def _check_rope_scaling(rs: Any) -> None:
    if not isinstance(rs, dict):
        raise ValueError(f"rope_scaling: expected an object (or null), got {show_value(rs)}")
    if rs.get("type") != "yarn":
        return
    factor, original = rs.get("factor"), rs.get("original_max_position_embeddings")
    if not _is_number(factor) or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"rope_scaling.factor: expected a positive number, got {show_value(factor)}")
    if not _is_int(original) or original < 1:
        raise ValueError(
            f"rope_scaling.original_max_position_embeddings: expected a positive integer, got {show_value(original)}"
        )
    for key in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor"):
        value = rs.get(key)
        if value is not None and (not _is_number(value) or not math.isfinite(value)):
            raise ValueError(f"rope_scaling.{key}: expected a number, got {show_value(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def show_value(value: Any) -> str:
    """A value for an error message: its repr, cut short, with its JSON type when that is the problem."""
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = {bool: "a boolean", str: "a string", float: "a number", list: "a list", dict: "an object"}
    return f"{text} ({kind[type(value)]})" if type(value) in kind else text


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention-temperature correction: 0.1 * mscale * ln(scale) + 1 (1 when not extending)."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0
