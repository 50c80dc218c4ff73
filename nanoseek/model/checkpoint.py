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

Loading is strict, and fails in one CheckpointError line (errors.py) naming the file, the config field
that probably disagrees and what was expected. In order: config.json parses and every field has its
type and range (ModelConfig); the model the config describes fits in the memory it is to be built in
(`check_memory`, from accounting's parameter counts, before anything is allocated); each weights file
is safetensors; the weights hold exactly the config's layers (a wrong num_hidden_layers is the
commonest mistake and is named on its own); then every tensor is used, every parameter filled and
every shape the one config.json implies, a small table (`_SHAPES`, `_NAMES`) naming the fields that
set each dimension or decide whether a tensor exists. The checks cost ~1.5 ms on a 10-layer model
(~0.1 s of key matching on DeepSeek-V3's 47k tensor names) and leave the loaded bits unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nanoseek.model.accounting import account, human
from nanoseek.model.config import ModelConfig
from nanoseek.model.errors import CheckpointError
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
    """The ModelConfig of a model directory; CheckpointError names config.json and the field at fault."""
    path = Path(path)
    config_file = path / "config.json"
    if not path.is_dir():
        raise CheckpointError(path, "no such model directory")
    if not config_file.is_file():
        raise CheckpointError(config_file, f"no config.json; is {path} a model directory?")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(config_file, "not UTF-8 text; expected a JSON object") from None
    except json.JSONDecodeError as e:
        problem = f"not JSON ({e.msg} at line {e.lineno}, column {e.colno}); expected a JSON object"
        raise CheckpointError(config_file, problem) from None
    try:
        return ModelConfig.from_hf_dict(config)
    except ValueError as e:
        field = re.match(r"[\w.]+(?=: )", str(e))  # the messages open with the field they are about
        raise CheckpointError(config_file, str(e), field and field.group()) from None


def weight_files(path: str | Path) -> list[Path]:
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise CheckpointError(path, "no *.safetensors weights in the model directory")
    return files


def read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """Every tensor in `files` (HF names); CheckpointError names a file that is not safetensors."""
    hf: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors = load_file(str(f))
        except (SafetensorError, OSError) as e:
            problem = f"not a readable safetensors file ({e}); is it truncated or corrupt?"
            raise CheckpointError(f, problem) from None
        twice = sorted(hf.keys() & tensors.keys())
        if twice:
            raise CheckpointError(f, f"holds {_some(twice)} again (already in another *.safetensors file)")
        hf.update(tensors)
    return hf


def load_model(path: str | Path, device=None, dtype=None) -> DeepSeekV3:
    """A model directory as a DeepSeekV3, strictly: every tensor in the files is used, every parameter
    filled, every shape as config.json implies; anything else raises CheckpointError (see errors.py)."""
    path = Path(path)
    cfg = read_config(path)
    check_memory(cfg, path / "config.json", device)
    files = weight_files(path)
    hf = read_weights(files)
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
    model.load_state_dict(checked_state(model, hf, files[0] if len(files) == 1 else path))
    if dtype is not None:
        model.to(dtype)
    return model


def checked_state(model: DeepSeekV3, hf: dict[str, torch.Tensor], where: str | Path) -> dict:
    """The weights `hf` (HF names) under `model`'s parameter names, for `model.load_state_dict`, after
    checking that they are exactly the model's: the layers, then the names, then the shapes. `where`
    (the weights file or directory) heads the CheckpointError."""
    cfg = model.config
    _check_layers(cfg, hf, where)
    try:
        state = from_hf_state_dict(cfg, hf)
    except ValueError as e:  # per-expert tensors with a gap in their numbering
        raise CheckpointError(where, str(e)) from None
    except (IndexError, RuntimeError) as e:  # experts of unequal shapes, fused experts of too few dims
        raise CheckpointError(where, f"experts of an unexpected layout ({e})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        field = _field_for_names(missing + unexpected)
        parts = [f"missing {_some([_hf_name(cfg, n) for n in missing])}"] if missing else []
        parts += [f"unexpected {_some([_hf_name(cfg, n) for n in unexpected])}"] if unexpected else []
        blame = f"; check {field} (config.json: {_values(cfg, field)})" if field else ""
        raise CheckpointError(
            where, f"the weights do not match config.json: {'; '.join(parts)}{blame}", field
        )
    wrong = [n for n in sorted(state) if state[n].shape != expected[n].shape]
    if wrong:
        suspects = [_shape_fields(n, state[n].shape, expected[n].shape) for n in wrong]
        common = [f for f in suspects[0][1] if all(f in fields for _, fields in suspects)]
        field = " / ".join(common or suspects[0][1]) or None
        name = wrong[0]
        got, want = _shown_shape(name, state[name].shape), _shown_shape(name, expected[name].shape)
        problem = f"{_hf_name(cfg, name)} has shape {got} in the weights; config.json implies {want}"
        problem += f" ({suspects[0][0]})" if suspects[0][0] else ""
        if len(wrong) > 1:
            problem += f", and so do {_some([_hf_name(cfg, n) for n in wrong[1:]], 2)}"
        blame = f"; check {field} (config.json: {_values(cfg, field)})" if field else ""
        raise CheckpointError(where, problem + blame, field)
    return state


# ------------------------------------------------------------------------------ strictness helpers
# (pattern on our parameter name, what sets each dimension), in HF orientation: nn.Linear weights are
# (out, in); stacked experts are shown per expert, n_routed_experts x (out, in). First match wins.
_QK_HEADS = "num_attention_heads x (qk_nope_head_dim + qk_rope_head_dim)"
_SHAPES = (
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
# (pattern on a missing or unexpected parameter name, the field that decides whether it exists)
_NAMES = (
    (r"\.(q_proj|q_a_proj|q_b_proj|q_a_layernorm)\.", "q_lora_rank"),
    (r"\.shared_experts\.", "n_shared_experts"),
    (r"\.mlp\.(experts|gate)\.|\.mlp\.(gate|up|down)_proj", "n_routed_experts / first_k_dense_replace"),
    (r"^mtp\.", "num_nextn_predict_layers"),
)
_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
_FIELD_WORD = re.compile(r"[a-z][a-z_]+")


def _check_layers(cfg: ModelConfig, hf: dict[str, torch.Tensor], where: str | Path) -> None:
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
    found = f"unexpected {_some(extra)}" if extra else ""
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


def _some(names: list[str], shown: int = 3) -> str:
    """The first few names, then how many more: one line however many there are."""
    head = ", ".join(names[:shown])
    return f"{head} and {len(names) - shown} more" if len(names) > shown else head


def _hf_name(cfg: ModelConfig, name: str) -> str:
    """Our parameter name as it is called in the files (stacked experts: experts.*.X.weight)."""
    m = re.match(r"mtp\.(\d+)\.(?:block\.)?(.*)", name)
    if m:
        name = f"layers.{cfg.num_hidden_layers + int(m.group(1))}.{m.group(2)}"
    name = re.sub(r"\.experts\.(gate_proj|up_proj|down_proj)$", r".experts.*.\1.weight", name)
    return name if name.startswith("lm_head") else f"model.{name}"


def _shown_shape(name: str, shape: torch.Size) -> tuple[int, ...]:
    """A shape in the files' orientation: stacked experts (E, in, out) shown as (E, out, in)."""
    if re.search(r"\.experts\.(gate|up|down)_proj$", name) and len(shape) == 3:
        return (shape[0], shape[2], shape[1])
    return tuple(shape)


def _shape_fields(name: str, got: torch.Size, want: torch.Size) -> tuple[str, list[str]]:
    """Which dimensions of `name` differ, said in words, and the config fields that set them."""
    got, want = _shown_shape(name, got), _shown_shape(name, want)
    dims = next((dims for pattern, dims in _SHAPES if re.search(pattern, name)), ())
    if len(got) != len(want) or len(dims) != len(want):
        return "", []
    differ = [i for i in range(len(want)) if got[i] != want[i]]
    words = ", ".join(f"dim {i} is {dims[i]}" for i in differ)
    fields = [f for i in differ for f in _FIELD_WORD.findall(dims[i]) if f in _FIELDS]
    return words, list(dict.fromkeys(fields))


def _field_for_names(names: list[str]) -> str | None:
    for name in names:
        for pattern, field in _NAMES:
            if re.search(pattern, name):
                return field
    return None


def _values(cfg: ModelConfig, fields: str) -> str:
    return ", ".join(f"{f} {getattr(cfg, f)}" for f in fields.split(" / "))


# ------------------------------------------------------------------------------ memory
def build_bytes(cfg: ModelConfig) -> int:
    """Bytes that `DeepSeekV3(cfg)` allocates in the default dtype (float32): accounting's parameter
    counts (main model, MTP modules, the head even when tied, as the model always has its own) and
    the rope cos/sin tables; a few small buffers aside."""
    acct = account(cfg)
    params = acct.total_params + acct.mtp_params
    params += acct.embedding_params if cfg.tie_word_embeddings else 0
    rope = 2 * cfg.max_position_embeddings * (cfg.qk_rope_head_dim // 2)
    return (params + rope) * torch.get_default_dtype().itemsize


def memory_size(device=None) -> tuple[int, str] | None:
    """(bytes, what) of the memory a model on `device` lives in: a GPU's total memory, or this
    machine's RAM (or the container's memory limit, if lower); None where it cannot be told."""
    device = torch.device(device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():  # (without CUDA, torch says so itself)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {index}"
    if device.type != "cpu":
        return None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(limit_file).read_text().strip())
        except (OSError, ValueError):  # absent, or "max"
            continue
        if 0 < limit < ram:
            return limit, "this container's memory limit"
    return ram, "this machine's RAM"


# the size fields a runaway value most likely sits in, for naming one in the error
_SIZE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "n_routed_experts",
    "n_shared_experts",
    "num_nextn_predict_layers",
    "max_position_embeddings",
)


def check_memory(cfg: ModelConfig, where: str | Path, device=None) -> None:
    """Refuse, before allocating anything, a config whose model would not fit in the memory it is to
    be built in (a lower bound on what loading needs: the file's tensors come on top)."""
    have = memory_size(device)
    need = build_bytes(cfg)
    if have is None or need <= have[0]:
        return
    field = max(_SIZE_FIELDS, key=lambda f: need / max(_bytes_with_default(cfg, f), 1))
    acct = account(cfg)
    dtype = str(torch.get_default_dtype()).removeprefix("torch.")
    problem = (
        f"{field}: the model needs {_bytes(need)} ({human(acct.total_params + acct.mtp_params)} "
        f"parameters in {dtype}) but {have[1]} is {_bytes(have[0])}; {field} = "
        f"{getattr(cfg, field)} is the largest factor"
    )
    raise CheckpointError(where, problem, field)


def _bytes(n: int) -> str:
    for unit, div in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{n} bytes"


def _bytes_with_default(cfg: ModelConfig, field: str) -> int:
    try:
        return build_bytes(cfg.replace(**{field: getattr(ModelConfig, field)}))
    except ValueError:  # the default breaks another constraint (expert groups): not this one
        return build_bytes(cfg)
