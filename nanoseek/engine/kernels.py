"""Hand-written C kernels for the matmuls of decoding (fp32 and int8 weights), built on first use.

    from nanoseek.engine import kernels
    if kernels.available():
        y = kernels.matmul(x, w)                      # x (N, in) @ w^T, w (out, in): fp32, CPU
        kernels.matmul(x, w, out=h, alpha=0.3)        # h += 0.3 * x @ w^T, in place
        y = kernels.matmul_int8(x, q, scale)          # x @ (q * scale[:, None])^T, q int8 (out, in)
        y = kernels.bmatmul(x, w)                     # x[b] @ w[b]^T per head: (B, N, in), (B, out, in)

Why: at batch 1 a decode step streams every active weight once, so its speed is memory bandwidth,
and MKL's fp32 gemv and torch's int8 kernel (bf16 activations) read a cold matrix well below what a
plain read of it reaches on one core. The fp32 loop in kernels.c walks each weight row once, front to
back, with 16 partial sums the compiler vectorizes. For int8 weights kernels.c rounds each activation
row to 16-bit integers and sums the products exactly in integers (vpmaddwd / vpdpwssd): faster than
torch's kernel and ~100x closer to the dequantized product than bf16 activations. Exact integer sums
also make each int8 result independent of the batch it is computed in.

From a few rows on (a batch), the arithmetic dominates: blocks of rows x weight rows share each
load, written with intrinsics where the compiler targets them, the same numbers in the same order as
the portable loops: AVX-512, 4 x 4 blocks (2 x 4 for a last pair of rows) from 2 rows (close to
oneDNN's packed GEMM at 16 rows and faster at 4-8 rows); AVX2 with FMA, 2 x 3 blocks from 2 rows,
walked in spans of 512 inputs (faster than oneDNN's packed GEMM from 2 to 16 rows on this project's
AVX2 machine; `f32_path()` says which).
int8 gets 4 x 4 VNNI blocks, or 4 x 3 AVX2 vpmaddwd blocks, from 4 rows. A row's fp32 result is the
same bits in any batch too: every path sums the same 16 lanes, with the same fused multiply-adds, in
the same order. docs/engine.md has the measured bandwidths and rates.

decode_step.c, built into the same library, runs a whole decode step on these matmuls (see
decode_step.py).

How: kernels.c and decode_step.c are compiled once per machine with `cc -O3 -march=native -shared
-fPIC` into $NANOSEEK_CACHE_DIR (default ~/.cache/nanoseek)/kernels/<hash of sources, compiler
and CPU>.so and loaded with ctypes, which releases the GIL for the call. No C compiler, a failed
build, a non-x86/ARM CPU or NANOSEEK_KERNELS=0: `available()` is False (with one warning for a
failed build) and the engine decodes with the model's own forward instead (`FastDecoder.supports`).
Set CC to choose the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCES = [Path(__file__).with_name(name) for name in ("kernels.c", "decode_step.c")]
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def _cpu_id() -> str:
    """What -march=native compiles for: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() + platform.machine()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(keep)) + platform.machine()


def cache_dir() -> Path:
    root = os.environ.get("NANOSEEK_CACHE_DIR") or Path.home() / ".cache" / "nanoseek"
    return Path(root) / "kernels"


def build(compiler: str | None = None) -> Path:
    """Compile kernels.c for this machine (or reuse the cached build); returns the library's path.
    Raises RuntimeError with the compiler's message when it fails."""
    cc = shutil.which(compiler or os.environ.get("CC") or "cc")
    if cc is None:
        raise RuntimeError(f"no C compiler found (looked for {compiler or os.environ.get('CC') or 'cc'!r})")
    source = b"".join(path.read_bytes() for path in SOURCES)
    key = hashlib.sha256(source + cc.encode() + " ".join(FLAGS).encode() + _cpu_id().encode()).hexdigest()
    target = cache_dir() / f"kernels-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)  # then an atomic rename: two processes
    os.close(fd)  # building at once (the speedrun's parallel stages) never load a half-written file
    try:
        command = [cc, *FLAGS, *map(str, SOURCES), "-o", tmp, "-lm"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed on {', '.join(map(str, SOURCES))}:\n{done.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _load() -> ctypes.CDLL | None:
    global _lib, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("NANOSEEK_KERNELS", "1") == "0" or platform.machine().lower() not in (
            "x86_64",
            "amd64",
            "aarch64",
            "arm64",
        ):
            return None
        try:
            lib = ctypes.CDLL(str(build()))
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            warnings.warn(f"nanoseek: decode kernel unavailable, using torch's matmuls ({e})", stacklevel=3)
            return None
        p, n = ctypes.c_void_p, ctypes.c_long
        lib.matmul_f32.argtypes = [p, p, p, n, n, n, ctypes.c_float, ctypes.c_int]
        lib.matmul_f32.restype = None
        lib.bmatmul_f32.argtypes = [p, p, p, n, n, n, n]
        lib.bmatmul_f32.restype = None
        lib.matmul_i8.argtypes = [p, p, p, p, n, n, n, ctypes.c_float, ctypes.c_int]
        lib.matmul_i8.restype = ctypes.c_int
        lib.decode_tokens.argtypes = [p, n, p, p, p, n, p, p, p, n, p, p, p, p]
        lib.decode_tokens.restype = ctypes.c_int
        lib.matmul_f32_path.argtypes = []
        lib.matmul_f32_path.restype = ctypes.c_int
        lib.decode_tokens_work.argtypes = [p, n, n, n]
        lib.decode_tokens_work.restype = n
        _lib = lib
        return _lib


def available() -> bool:
    """True when the kernel is built and loaded (builds it on the first call)."""
    return (_lib if _tried else _load()) is not None


def reset(enabled: bool | None = None) -> None:
    """Forget the loaded kernel; enabled=False keeps it off (tests of the fallback), True reloads."""
    global _lib, _tried
    with _lock:
        _lib, _tried = None, enabled is False
    if enabled:
        _load()


def f32_path() -> str:
    """Which fp32 matmul loops the build runs: "avx512" (4 x 4 blocks from 4 rows), "avx2" (2 x 3
    blocks from 2 rows) or "portable"; raises when the kernels are not available."""
    return ("portable", "avx2", "avx512")[_lib_or_raise().matmul_f32_path()]


def library() -> ctypes.CDLL:
    """The loaded library (decode_step.py calls its `decode_step`); raises when it is not available."""
    return _lib_or_raise()


def _lib_or_raise() -> ctypes.CDLL:
    lib = _lib if _tried else _load()
    if lib is None:
        raise RuntimeError("the decode kernels are not available (see kernels.available())")
    return lib


F32, I8, CPU = torch.float32, torch.int8, torch.device("cpu")


def _result(name: str, x: torch.Tensor, w: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None):
    """Check x (N, in) fp32 and w (M, in) of `dtype` (cheap checks: ~100 calls per token);
    returns out, or a new (N, M) fp32 tensor."""
    (N, K), (M, K_w) = x.shape, w.shape
    if K_w != K or x.dtype is not F32 or w.dtype is not dtype or x.device != CPU or w.device != CPU:
        raise ValueError(
            f"{name}: x {tuple(x.shape)} {x.dtype} {x.device}, w {tuple(w.shape)} {w.dtype} {w.device}"
        )
    if not w.is_contiguous():
        raise ValueError(f"{name}: w must be contiguous")
    if out is None:
        return torch.empty((N, M), dtype=F32)
    if out.shape != (N, M) or out.dtype is not F32 or not out.is_contiguous():
        raise ValueError(f"{name}: out {tuple(out.shape)} {out.dtype} for a ({N}, {M}) result")
    return out


def matmul(
    x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None, alpha: float = 1.0
) -> torch.Tensor:
    """x (N, in) @ w^T for w (out_features, in), both fp32, CPU, w contiguous -> (N, out_features).
    With `out` (N, out_features): out += alpha * x @ w^T in place, and returns out. Meant for the
    rows of a decode step: w is read from memory once; from 4 rows on, in blocks of 4 x 4."""
    lib = _lib or _lib_or_raise()
    y = _result("matmul", x, w, F32, out)
    x = x.contiguous()
    N, K = x.shape
    lib.matmul_f32(x.data_ptr(), w.data_ptr(), y.data_ptr(), N, K, w.shape[0], alpha, out is not None)
    return y


def bmatmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (B, N, in) @ w[b]^T for w (B, out_features, in), fp32 CPU -> (B, N, out_features): one
    matrix per batch entry (per attention head), N of 1 or 2."""
    lib = _lib or _lib_or_raise()
    (B, N, K), (B_w, M, K_w) = x.shape, w.shape
    if B_w != B or K_w != K or x.dtype is not F32 or w.dtype is not F32 or x.device != CPU or w.device != CPU:
        raise ValueError(f"bmatmul: x {tuple(x.shape)} {x.dtype} and w {tuple(w.shape)} {w.dtype}")
    if not w.is_contiguous():
        raise ValueError("bmatmul: w must be contiguous")
    x = x.contiguous()
    y = torch.empty((B, N, M), dtype=F32)
    lib.bmatmul_f32(x.data_ptr(), w.data_ptr(), y.data_ptr(), B, N, K, M)
    return y


def matmul_int8(
    x: torch.Tensor,
    q: torch.Tensor,
    scale: torch.Tensor,
    out: torch.Tensor | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:
    """x (N, in) fp32 @ (q * scale[:, None])^T for int8 q (out_features, in) and fp32 per-row scales
    (out_features,) -> (N, out_features) fp32; `out` and `alpha` as in `matmul`. Each row of x is
    rounded to 16-bit integers (scale max|x| / 32767) and the products are summed exactly in
    integers, so a row's result does not depend on the other rows or on how the weights are split
    or fused."""
    lib = _lib or _lib_or_raise()
    y = _result("matmul_int8", x, q, I8, out)
    if scale.shape[0] != q.shape[0] or scale.dtype is not F32 or not scale.is_contiguous():
        raise ValueError(f"matmul_int8: scale {tuple(scale.shape)} {scale.dtype} for {q.shape[0]} rows")
    x = x.contiguous()
    N, K = x.shape
    args = (x.data_ptr(), q.data_ptr(), scale.data_ptr(), y.data_ptr(), N, K, q.shape[0], alpha)
    if lib.matmul_i8(*args, out is not None) != 0:
        raise MemoryError(f"matmul_int8: no memory for {N} x {K} int16 activations")
    return y
