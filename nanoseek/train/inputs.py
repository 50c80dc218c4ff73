"""What a training run starts from: the tokenizer, the data loaders and the model.

    inputs = prepare_pretrain(cfg, run_dir, env)     # or prepare_sft(cfg, run_dir, env)
    model = build_model(cfg, inputs.tokenizer)        # fresh (seeded) or from model.init

Pretraining data (`data.train`) is either one token-shard directory (with a manifest.json, from
`nanoseek.data.tokenize_corpus`) or corpus files/directories/Hub ids in any format `nanoseek.records`
reads (.txt, .jsonl, .json, .parquet, .arrow, .csv, compressed .gz/.zst, ...). Corpus files are
tokenized into `run_dir/data`, with the tokenizer named by `data.tokenizer`, else the `model.init`
checkpoint's, else one trained on the corpus into `run_dir/tokenizer` (`data.vocab_size`). Prepared
shards and tokenizers are reused when the run is resumed. With `data.synthetic` the corpus is first
written into `run_dir/corpus`.

`data.synthetic` names `nanoseek.tasks` synthetic tasks whose train-split problems and solution
traces become the corpus or the chat data (`nanoseek.train.toy_data`).

SFT data is chat data in any of those formats and in any shape `nanoseek.data.chat` reads (OpenAI
messages with optional reasoning_content or `<think>` in content, ShareGPT, OpenR1-Math, prompt/response
pairs: `data.format` and `data.*_field`), rendered by THE chat format (`nanoseek.data.ChatLoader`); it
needs a base checkpoint (`model.init` / `--init`) whose tokenizer it uses. Validation is `data.val`,
else every round(1 / data.val_fraction)-th conversation.

Only the main process writes files; the others wait at a barrier and read them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanoseek.data import (
    ChatFields,
    ChatLoader,
    PackedLoader,
    expand_files,
    load_chat,
    read_manifest,
    tokenize_corpus,
)
from nanoseek.engine.engine import model_tokenizer
from nanoseek.model import ModelConfig, config_for_depth, dense_config_for_depth, from_pretrained, preset
from nanoseek.model.registry import get_family
from nanoseek.model.run_dirs import resolve_model_dir
from nanoseek.tokenizer import Tokenizer, render_prompt, train_tokenizer
from nanoseek.train.config import ConfigError, TrainConfig
from nanoseek.train.distributed import DistEnv, barrier
from nanoseek.train.evaluate import unigram_entropy
from nanoseek.train.toy_data import write_task_chat, write_task_corpus

log = logging.getLogger(__name__)


@dataclass
class RunInputs:
    tokenizer: Tokenizer
    train_loader: Any  # PackedLoader or ChatLoader: __next__ -> (inputs, targets), state_dict()
    val_loader: Any = None  # a callable giving a fresh, finite validation loader; None without val data
    val_bytes_per_token: float | None = None  # text bytes per token of the val split (for bits per byte)
    unigram_entropy: float | None = None  # nats per token of the train split's unigram distribution
    prompts: list[tuple[str, list[int]]] = field(default_factory=list)  # (label, ids) to sample from
    chat: bool = False  # samples are chat completions, split into reasoning_content and content
    notes: list[str] = field(default_factory=list)  # what the report says about the data


# ----------------------------------------------------------------------------------- pretraining


def prepare_pretrain(cfg: TrainConfig, run_dir: Path, env: DistEnv) -> RunInputs:
    d, t = cfg.data, cfg.train
    files = list(d.train) + _synthetic(cfg, run_dir, env, ".jsonl", write_task_corpus, cfg.run.seed)
    if not files:
        raise ConfigError(
            "data.train: pretraining needs corpus files or a token-shard directory (or data.synthetic)"
        )

    if len(files) == 1 and (Path(files[0]) / "manifest.json").is_file():
        shard_dir = Path(files[0])
        tok_dir = _tokenizer_dir(cfg) or _tokenizer_beside_shards(shard_dir)
    else:
        shard_dir = run_dir / "data"
        tok_dir = _tokenizer_dir(cfg) or run_dir / "tokenizer"
        corpus = [str(f) for f in expand_files(files)]
        if env.is_main:
            if not (tok_dir / "tokenizer.json").is_file():
                log.info("training a %d-token tokenizer on %s", d.vocab_size, corpus)
                train_tokenizer(corpus, d.vocab_size, tok_dir, text_field=d.text_field, show_progress=False)
            if not _shards_match(shard_dir, corpus, tok_dir):
                tokenize_corpus(
                    corpus,
                    tok_dir,
                    shard_dir,
                    text_field=d.text_field,
                    num_workers=d.num_workers or None,
                    val_fraction=d.val_fraction,
                    show_progress=cfg.run.progress,
                )
        barrier()
    tokenizer = Tokenizer.from_dir(tok_dir)
    manifest = read_manifest(shard_dir)
    if manifest["tokenizer_sha256"] != _sha256(tok_dir / "tokenizer.json"):
        raise ConfigError(
            f"data.tokenizer: {tok_dir} is not the tokenizer that made the shards in {shard_dir}"
        )

    seed = cfg.run.seed
    loader = PackedLoader(shard_dir, t.device_batch_size, t.seq_len, "train", seed, env.rank, env.world_size)
    val = manifest["splits"].get("val", {})
    val_loader, bytes_per_token = None, None
    if val.get("documents", 0) >= env.world_size:

        def val_loader():
            return PackedLoader(
                shard_dir, t.device_batch_size, t.seq_len, "val", seed, env.rank, env.world_size
            )

        bytes_per_token = val["text_bytes"] / val["tokens"]
    train = manifest["splits"]["train"]
    prompts = [(p, [tokenizer.bos_id, *tokenizer.encode_ordinary(p)]) for p in cfg.eval.sample_prompts]
    notes = [
        f"token shards: `{shard_dir}` ({train['tokens']:,} train tokens in {train['documents']:,} documents, "
        f"{val.get('tokens', 0):,} val tokens), tokenizer `{tok_dir}` (vocab {tokenizer.vocab_size})"
    ]
    return RunInputs(
        tokenizer,
        loader,
        val_loader,
        bytes_per_token,
        unigram_entropy(shard_dir),
        prompts,
        chat=False,
        notes=notes,
    )


def _synthetic(cfg: TrainConfig, run_dir: Path, env: DistEnv, suffix: str, write, seed: int) -> list[str]:
    """[the data.synthetic file in run_dir/corpus, written by the main process on first use], or []."""
    d = cfg.data
    if not d.synthetic:
        return []
    path = run_dir / "corpus" / f"{d.synthetic.replace(',', '+')}{suffix}"
    if env.is_main and not path.is_file():
        write(path.with_suffix(".tmp"), d.synthetic, d.synthetic_examples, seed).replace(path)
    barrier()
    return [str(path)]


def _tokenizer_dir(cfg: TrainConfig) -> Path | None:
    if cfg.data.tokenizer:
        return Path(cfg.data.tokenizer)
    if cfg.model.init:
        return resolve_model_dir(cfg.model.init)
    return None


def _tokenizer_beside_shards(shard_dir: Path) -> Path:
    for candidate in (shard_dir, shard_dir.parent / "tokenizer"):
        if (candidate / "tokenizer.json").is_file():
            return candidate
    raise ConfigError(f"data.tokenizer: no tokenizer.json in or beside {shard_dir}; name its directory")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shards_match(shard_dir: Path, corpus: list[str], tok_dir: Path) -> bool:
    try:
        manifest = read_manifest(shard_dir)
    except (FileNotFoundError, ValueError):
        return False
    return manifest["sources"] == corpus and manifest["tokenizer_sha256"] == _sha256(
        tok_dir / "tokenizer.json"
    )


# ----------------------------------------------------------------------------------- SFT


def prepare_sft(cfg: TrainConfig, run_dir: Path, env: DistEnv) -> RunInputs:
    d, t = cfg.data, cfg.train
    if not cfg.model.init:
        raise ConfigError(
            "model.init: sft starts from a base checkpoint; pass --init PATH (a model or run dir)"
        )
    files = list(d.train) + _synthetic(cfg, run_dir, env, "_chat.jsonl", write_task_chat, cfg.run.seed + 1)
    if not files:
        raise ConfigError("data.train: sft needs chat data: files, folders or a Hub id (or data.synthetic)")
    tok_dir = _tokenizer_dir(cfg)
    tokenizer = model_tokenizer(tok_dir) or Tokenizer.from_dir(tok_dir)  # a GGUF init brings its own

    fields = ChatFields(d.format, d.messages_field, d.prompt_field, d.response_field, d.reasoning_field)
    conversations, skipped = [], 0
    for f in files:
        loaded = load_chat(f, skip_bad=d.skip_bad, fields=fields)
        conversations += loaded
        skipped += loaded.num_skipped
        for error in loaded.errors[:3]:
            log.warning("skipped: %s", error)
    if d.val:
        val_conversations = [c for f in d.val for c in load_chat(f, skip_bad=d.skip_bad, fields=fields)]
    elif d.val_fraction > 0:
        every = round(1 / d.val_fraction)
        val_conversations = conversations[::every]
        conversations = [c for i, c in enumerate(conversations) if i % every]
    else:
        val_conversations = []

    source = ", ".join(map(str, files))  # what a DataError about the whole data set names
    shape = (tokenizer, t.device_batch_size, t.seq_len, cfg.run.seed, env.rank, env.world_size)
    loader = ChatLoader(conversations, *shape, source=source)
    val_loader = None
    if len(val_conversations) >= env.world_size:
        val_source = ", ".join(map(str, d.val)) if d.val else f"{source} (held-out part)"

        def val_loader():
            return ChatLoader(val_conversations, *shape, shuffle=False, loop=False, source=val_source)

        val_loader()  # a DataError now, before the run writes anything, not at the first evaluation

    prompts = []
    answered = [c for c in val_conversations or conversations if any(m["role"] == "assistant" for m in c)]
    for conversation in answered[: cfg.eval.num_samples]:
        last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
        history = conversation[:last]
        prompts.append((history[-1]["content"], render_prompt(tokenizer, history)))
    notes = [
        f"chat data: {', '.join(map(str, files))}: {len(conversations):,} training conversations "
        f"({loader.num_dropped} without assistant tokens dropped, {skipped} malformed skipped), "
        f"{len(val_conversations):,} held out; tokenizer `{tok_dir}`"
    ]
    return RunInputs(tokenizer, loader, val_loader, None, None, prompts, chat=True, notes=notes)


# ----------------------------------------------------------------------------------- the model


def model_config(cfg: TrainConfig, tokenizer: Tokenizer):
    """The architecture of a fresh model of `model.family`: model.preset or config_for_depth(model.depth)
    for DeepSeek-V3, dense_config_for_depth(model.depth) for a dense family; sized to the tokenizer and
    the sequence length, with the recipe's overrides."""
    m, seq_len = cfg.model, cfg.train.seq_len
    changes: dict[str, Any] = {"vocab_size": tokenizer.vocab_size}
    changes |= {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
    try:
        if m.family != "deepseek_v3":
            base = dense_config_for_depth(
                m.depth, m.family, kv_heads=m.kv_heads, tie_word_embeddings=m.tie_embeddings
            )
            return base.replace(**changes, max_position_embeddings=max(base.max_position_embeddings, seq_len))
        base = preset(m.preset) if m.preset else config_for_depth(m.depth, vocab_size=tokenizer.vocab_size)
        changes["max_position_embeddings"] = max(base.max_position_embeddings, seq_len)
        if m.mtp is not None:
            changes["num_nextn_predict_layers"] = m.mtp
        if m.n_routed_experts is not None:
            changes["n_routed_experts"] = m.n_routed_experts
        return _loss_overrides(cfg, base.replace(**changes))
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None


def _loss_overrides(cfg: TrainConfig, mc):
    m = cfg.model
    for name in ("aux_loss_alpha", "bias_update_speed", "mtp_loss_weight"):
        if getattr(m, name) is not None:
            if not isinstance(mc, ModelConfig):
                raise ConfigError(
                    f"model.{name}: only for DeepSeek-V3, but model.init is a {mc.model_type} model"
                )
            mc = mc.replace(**{name: getattr(m, name)})
    return mc


def build_model(cfg: TrainConfig, tokenizer: Tokenizer) -> torch.nn.Module:
    """A fresh model of model.family seeded by run.seed, or the model.init checkpoint of any registered
    family (its config.json's model_type decides); in fp32 on the CPU."""
    if cfg.model.init:
        model = from_pretrained(resolve_model_dir(cfg.model.init), dtype=torch.float32)
        model.config = _loss_overrides(cfg, model.config)
        for moe in model.moe_layers():
            moe.cfg = model.config
        if model.config.vocab_size < tokenizer.vocab_size:
            raise ConfigError(
                f"model.init: the checkpoint's vocabulary ({model.config.vocab_size}) is smaller than the "
                f"tokenizer's ({tokenizer.vocab_size})"
            )
        if model.config.max_position_embeddings < cfg.train.seq_len:
            raise ConfigError(
                f"train.seq_len: {cfg.train.seq_len} exceeds the checkpoint's max_position_embeddings "
                f"({model.config.max_position_embeddings})"
            )
        return model
    torch.manual_seed(cfg.run.seed)
    mc = model_config(cfg, tokenizer)
    return get_family(mc.model_type).model_cls(mc)
