"""nanoseek.model: decoder families in plain PyTorch, by config.json's model_type; DeepSeek-V3 first,
then the dense GQA decoders of Llama, Qwen2 and Qwen3 (one class, `DenseTransformer`).

from nanoseek.model import DeepSeekV3, ModelConfig, from_pretrained, preset
model = DeepSeekV3(preset("d2"))
logits = model(input_ids)                      # (batch, seq, vocab)
model.save_pretrained("out/")
model = from_pretrained("out/")                # any registered family; CheckpointError if it cannot
DeepSeekV3.from_pretrained("out/")             # the same, insisting on DeepSeek-V3

Modules: config.py (ModelConfig), layers.py (RMSNorm, SwiGLU MLP: shared by every family), rope.py,
attention.py (MLA and its latent cache), moe.py (DeepSeekMoE), transformer.py (DeepSeekV3, MTP),
dense.py (DenseTransformer, DenseConfig, KVCache; registered as llama, qwen2 and qwen3),
kernels.py (the CPU speed kernels the architecture calls), registry.py (families by model_type),
deepseek_hf.py (DeepSeek-V3's HF key map and its registration), checkpoint.py (HF model directories,
loaded strictly), run_dirs.py (a run or checkpoint directory -> its model directory), accounting.py,
presets.py, info.py (`nanoseek info`).
"""

from nanoseek.model.accounting import Accounting, account
from nanoseek.model.attention import MLA, LatentCache
from nanoseek.model.checkpoint import from_pretrained
from nanoseek.model.config import ModelConfig
from nanoseek.model.deepseek_hf import DEEPSEEK_V3
from nanoseek.model.dense import DenseConfig, DenseTransformer, KVCache
from nanoseek.model.errors import CheckpointError
from nanoseek.model.moe import MoE
from nanoseek.model.presets import PRESETS, config_for_depth, dense_config_for_depth, preset
from nanoseek.model.registry import Family, families, get_family, register
from nanoseek.model.transformer import DeepSeekV3, Losses

__all__ = [
    "Accounting",
    "CheckpointError",
    "DEEPSEEK_V3",
    "DeepSeekV3",
    "DenseConfig",
    "DenseTransformer",
    "Family",
    "KVCache",
    "LatentCache",
    "Losses",
    "MLA",
    "MoE",
    "ModelConfig",
    "PRESETS",
    "account",
    "config_for_depth",
    "dense_config_for_depth",
    "families",
    "from_pretrained",
    "get_family",
    "preset",
    "register",
]
