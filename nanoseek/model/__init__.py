"""nanoseek.model: the DeepSeek-V3 architecture (MLA, DeepSeekMoE, MTP) in plain PyTorch.

from nanoseek.model import DeepSeekV3, ModelConfig, preset
model = DeepSeekV3(preset("d2"))
logits = model(input_ids)                      # (batch, seq, vocab)
model.save_pretrained("out/"); DeepSeekV3.from_pretrained("out/")   # strict; CheckpointError if not
"""

from nanoseek.model.accounting import Accounting, account
from nanoseek.model.attention import MLA, LatentCache
from nanoseek.model.config import ModelConfig
from nanoseek.model.errors import CheckpointError
from nanoseek.model.moe import MoE
from nanoseek.model.presets import PRESETS, config_for_depth, preset
from nanoseek.model.transformer import DeepSeekV3, Losses

__all__ = [
    "Accounting",
    "CheckpointError",
    "DeepSeekV3",
    "LatentCache",
    "Losses",
    "MLA",
    "MoE",
    "ModelConfig",
    "PRESETS",
    "account",
    "config_for_depth",
    "preset",
]
