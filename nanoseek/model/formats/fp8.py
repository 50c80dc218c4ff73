"""DeepSeek's FP8 checkpoints, dequantized while they are read.

    source = Fp8Source(SafetensorsSource.from_dir("DeepSeek-V3"), block=(128, 128))
    source.meta()          # X.weight as float32; no X.weight_scale_inv: the scales are consumed
    w = dequantize_blockwise(w_fp8, scale_inv)          # (M, N) float32

DeepSeek-V3/R1 ship most matrices as `float8_e4m3fn` with one float32 scale per 128 x 128 block,
stored beside the weight as `X.weight_scale_inv` of shape (ceil(M/128), ceil(N/128)) (config.json:
`quantization_config = {"quant_method": "fp8", "weight_block_size": [128, 128], ...}`). As DeepSeek's
`inference/fp8_cast_bf16.py` computes it, the real weight is

    W[i, j] = W_fp8[i, j] * scale_inv[i // 128, j // 128]

with the last row and column of blocks partial when M or N is not a multiple of 128. The name
`scale_inv` is the quantizer's view (it divided by the scale); reading multiplies.

A scale is consumed by exactly one float8 weight. A float8 weight without its scale, or with a
scale of the wrong shape, is refused in one CheckpointError line; a scale without a float8 weight is
left in place, so the strict loader names it as an unexpected tensor instead of dropping it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from nanoseek.model.errors import CheckpointError

SCALE_SUFFIX = "_scale_inv"
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def has_fp8(meta: dict[str, torch.Tensor]) -> bool:
    """Whether a source holds float8 weights."""
    return any(t.dtype in FP8_DTYPES for t in meta.values())


def dequantize_blockwise(
    weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128)
) -> torch.Tensor:
    """`weight` (M, N, float8) times its per-block scale (ceil(M/bm), ceil(N/bn)), as float32; edge
    blocks partial. Works one row of blocks at a time, so the temporary is one block row's scales."""
    bm, bn = block
    M, N = weight.shape
    rows, cols = -(-M // bm), -(-N // bn)
    if tuple(scale_inv.shape) != (rows, cols):
        raise ValueError(
            f"expected a scale of shape ({rows}, {cols}) for a ({M}, {N}) weight in {bm}x{bn} blocks, "
            f"got {tuple(scale_inv.shape)}"
        )
    out = weight.to(torch.float32)
    scale = scale_inv.to(torch.float32)
    for r in range(rows):
        stripe = out[r * bm : (r + 1) * bm]
        stripe *= scale[r].repeat_interleave(bn)[:N]
    return out


class Fp8Source:
    """A tensor source whose float8 weights come out dequantized (float32) and whose scales are gone."""

    def __init__(self, inner, block: tuple[int, int] = (128, 128)):
        self.inner, self.block, self.where = inner, tuple(block), inner.where
        meta = inner.meta()
        self._scale_of = {
            name: name + SCALE_SUFFIX
            for name, t in meta.items()
            if t.dtype in FP8_DTYPES and t.dim() == 2 and name + SCALE_SUFFIX in meta
        }
        self._meta = {n: t for n, t in meta.items() if n not in set(self._scale_of.values())}
        for name in self._scale_of:
            self._meta[name] = torch.empty(meta[name].shape, dtype=torch.float32, device="meta")
        for name, scale in self._scale_of.items():
            rows, cols = (-(-d // b) for d, b in zip(meta[name].shape, self.block))
            if tuple(meta[scale].shape) != (rows, cols):
                problem = (
                    f"{scale} has shape {tuple(meta[scale].shape)}; a {tuple(meta[name].shape)} weight in "
                    f"{self.block[0]}x{self.block[1]} blocks needs ({rows}, {cols})"
                )
                raise CheckpointError(self.where, problem, "quantization_config")
        stray = [n for n, t in self._meta.items() if t.dtype in FP8_DTYPES]
        if stray:
            raise CheckpointError(
                self.where,
                f"{stray[0]} is float8 without a {stray[0]}{SCALE_SUFFIX} beside it; cannot dequantize it",
            )

    @staticmethod
    def block_of(config: dict, where: Path) -> tuple[int, int]:
        """quantization_config.weight_block_size of a config.json (DeepSeek's [128, 128] by default)."""
        q = config.get("quantization_config") or {}
        block = q.get("weight_block_size", [128, 128]) if isinstance(q, dict) else None
        if not (
            isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)
        ):
            raise CheckpointError(
                where,
                f"quantization_config.weight_block_size: expected [rows, cols], got {block!r}",
                "quantization_config",
            )
        return tuple(block)

    def meta(self) -> dict[str, torch.Tensor]:
        return dict(self._meta)

    def load(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        names = list(names)
        wanted = names + [self._scale_of[n] for n in names if n in self._scale_of]
        raw = self.inner.load(wanted)
        out = {}
        for n in names:
            if n not in self._scale_of:
                out[n] = raw.pop(n)
                continue
            out[n] = dequantize_blockwise(raw.pop(n), raw.pop(self._scale_of[n]), self.block)
        return out
