"""A hand-written C kernel for the one- and two-row fp32 matmuls of decoding, built on first use.

    from nanoseek.engine import kernels
    if kernels.available():
        y = kernels.matmul(x, w)                      # x (N, in) @ w^T, w (out, in): fp32, CPU
        kernels.matmul(x, w, out=h, alpha=0.3)        # h += 0.3 * x @ w^T, in place

Why: at batch 1 a decode step streams every active weight once, so its speed is memory bandwidth.
On this project's CPU (AMD EPYC, one thread) a plain read streams 22-27 GB/s, MKL's fp32 gemv
reaches 9-16 GB/s on d10's matrices cold (reading the matrix first and multiplying from cache, the
fallback below, 13-17 GB/s), and the loop in kernels.c 18-26 GB/s: it walks each weight row once,
front to back, with 16 partial sums the compiler vectorizes.

How: kernels.c is compiled once per machine with `cc -O3 -march=native -shared -fPIC` into
$NANOSEEK_CACHE_DIR (default ~/.cache/nanoseek)/kernels/<hash of source, compiler and CPU>.so and
loaded with ctypes, which releases the GIL for the call. No C compiler, a failed build, a non-x86/ARM
CPU or NANOSEEK_KERNELS=0: `available()` is False (with one warning for a failed build) and the
decode path uses torch's matmuls instead. Set CC to choose the compiler.
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

SOURCE = Path(__file__).with_name("kernels.c")
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
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + cc.encode() + " ".join(FLAGS).encode() + _cpu_id().encode()).hexdigest()
    target = cache_dir() / f"kernels-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)  # then an atomic rename: two processes
    os.close(fd)  # building at once (the speedrun's parallel stages) never load a half-written file
    try:
        done = subprocess.run(
            [cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed on {SOURCE}:\n{done.stderr.strip()}")
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


def matmul(
    x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None, alpha: float = 1.0
) -> torch.Tensor:
    """x (N, in) @ w^T for w (out_features, in), both fp32, CPU and contiguous -> (N, out_features).
    With `out` (N, out_features): out += alpha * x @ w^T in place, and returns out. Meant for N of 1
    or 2 (decode rows); each further row costs a pass over w from cache."""
    lib = _lib if _tried else _load()
    if lib is None:
        raise RuntimeError("the decode kernel is not available (see kernels.available())")
    N, K = x.shape
    M = w.shape[0]
    if w.shape[1] != K or x.dtype != torch.float32 or w.dtype != torch.float32:
        raise ValueError(f"matmul: x {tuple(x.shape)} {x.dtype} and w {tuple(w.shape)} {w.dtype}")
    if not w.is_contiguous() or x.device.type != "cpu" or w.device.type != "cpu":
        raise ValueError("matmul: x and w must be CPU tensors, w contiguous")
    x = x.contiguous()
    accumulate = out is not None
    if out is None:
        out = torch.empty(N, M, dtype=torch.float32)
    elif out.shape != (N, M) or not out.is_contiguous() or out.dtype != torch.float32:
        raise ValueError(f"matmul: out {tuple(out.shape)} {out.dtype} for a ({N}, {M}) result")
    lib.matmul_f32(x.data_ptr(), w.data_ptr(), out.data_ptr(), N, K, M, alpha, int(accumulate))
    return out
