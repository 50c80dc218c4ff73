"""Cost accounting for any run (pretrain, SFT, GRPO, eval, distill, speedrun): tokens, FLOPs, time, MFU, $.

    meter = CostMeter.for_device(torch.device("cuda"), num_devices=8, price_per_device_hour=2.0)
    meter.add(tokens=batch_tokens, flops=batch_tokens * train_flops_per_token(cfg, seq_len), seconds=dt)
    summary = meter.summary()            # tokens, flops, device_hours, mfu, dollars, ...
    print(cost_markdown(summary))        # the table report.md shows, beside DeepSeek-V3's bill

Definitions:
- FLOPs are model FLOPs from `nanoseek.model.account` (6 x active matmul params + attention, per token,
  forward + backward), plus the MTP modules (the same per-layer cost for each MTP block, plus its
  eh_proj and its pass through the output head). Recomputation and padding waste are not counted.
- compute seconds: time spent in training steps (what MFU is measured over); wall seconds: the whole
  run, including evaluation and checkpoints (what device-hours and dollars are charged on).
- MFU = FLOPs / (compute seconds x peak FLOP/s per device x devices).
- peak: the declared dense bf16 tensor-core peak of a known GPU (`KNOWN_PEAK_FLOPS`, by name), or on
  the CPU the fp32 matmul rate measured here (`measure_matmul_peak_flops`: the best of timed large
  matmuls, measured once per process; the best of all measurements is kept in
  ~/.cache/nanoseek/peak_flops.json, or $NANOSEEK_CACHE_DIR, since load only ever lowers it).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nanoseek.markdown import table
from nanoseek.model import account

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, FLOP/s per device.
# Matched by substring of torch.cuda.get_device_name(), first match wins (so "H100 PCIe" precedes "H100").
KNOWN_PEAK_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("H800", 989e12),  # SXM; what DeepSeek-V3 trained on
    ("A100", 312e12),
    ("4090", 165e12),  # with fp32 accumulation
]

# DeepSeek-V3 technical report, Table 1: pretraining + context extension + post-training.
DEEPSEEK_V3 = {"device": "H800", "device_hours": 2.788e6, "price_per_device_hour": 2.0, "dollars": 5.576e6}


def train_flops_per_token(cfg, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token of a model with this config (DeepSeek-V3's or a
    dense family's), MTP included."""
    main = account(cfg, seq_len).train_flops_per_token
    k = getattr(cfg, "num_nextn_predict_layers", 0)  # a dense family has no MTP
    if not k:
        return main
    # an MTP block costs what one more (MoE) layer of the main model costs, counted by the same rules
    deeper = cfg.replace(num_hidden_layers=cfg.num_hidden_layers + k, num_nextn_predict_layers=0)
    blocks = account(deeper, seq_len).train_flops_per_token - main
    C, V = cfg.hidden_size, cfg.vocab_size
    return main + blocks + 6 * k * (2 * C * C + V * C)  # + eh_proj and the output head per depth


def _cache_file() -> Path:
    root = os.environ.get("NANOSEEK_CACHE_DIR") or Path.home() / ".cache" / "nanoseek"
    return Path(root) / "peak_flops.json"


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


@functools.cache
def measure_matmul_peak_flops(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None
) -> float:
    """The best FLOP/s of large square matmuls on `device` in `dtype`: the practical peak MFU is measured
    against on hardware without a declared one. Measured once per process (under a second) and kept
    as the best of every measurement so far per (device, dtype, threads, torch version): a busy
    machine can only make a measurement low, so the running maximum converges to the real peak
    instead of freezing a value measured under load."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    key = f"{device_name(device)}|{dtype}|{size}|torch {torch.__version__}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for i in range(8):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        if i:  # the first round warms up
            best = min(best, (time.perf_counter() - t0) / 4)
    peak = max(2 * size**3 / best, float(known.get(key, 0.0)))
    if known.get(key) == peak:
        return peak
    known[key] = peak
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=2) + "\n")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs a re-measurement
    return peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device | str, declared: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s per device, where the number comes from) for MFU on `device`."""
    device = torch.device(device)
    if declared > 0:
        return declared, "declared in the recipe (cost.peak_flops)"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in KNOWN_PEAK_FLOPS:
            if key in name:
                return flops, f"{key} dense bf16 datasheet peak"
        return measure_matmul_peak_flops(device, torch.bfloat16), f"measured bf16 matmul peak of {name}"
    return measure_matmul_peak_flops(device, torch.float32), "measured fp32 matmul peak of this CPU"


@dataclass
class CostMeter:
    """Accumulates what a run spent; `state_dict`/`load_state_dict` carry it across resumes."""

    device: str  # e.g. "NVIDIA H100 80GB HBM3" or the CPU's model name
    num_devices: int
    peak_flops_per_device: float
    peak_source: str = ""
    price_per_device_hour: float = 2.0
    tokens: int = 0
    flops: float = 0.0
    compute_seconds: float = 0.0  # inside training (or generation) steps
    wall_seconds: float = 0.0  # of earlier sessions of this run (resumes add up)
    _session_start: float = field(default_factory=time.perf_counter, repr=False)

    @classmethod
    def for_device(
        cls,
        device: torch.device | str,
        num_devices: int = 1,
        price_per_device_hour: float = 2.0,
        declared_peak: float = 0.0,
    ) -> CostMeter:
        peak, source = peak_flops(device, declared_peak)
        return cls(device_name(device), num_devices, peak, source, price_per_device_hour)

    def add(self, tokens: int, flops: float, seconds: float) -> None:
        self.tokens += int(tokens)
        self.flops += float(flops)
        self.compute_seconds += float(seconds)

    def elapsed(self) -> float:
        """Wall seconds of the run so far, earlier sessions included."""
        return self.wall_seconds + time.perf_counter() - self._session_start

    def mfu(self, flops: float, seconds: float) -> float:
        """Model FLOPs utilization of `flops` done in `seconds` on all devices of the run."""
        return flops / max(seconds, 1e-12) / (self.peak_flops_per_device * self.num_devices)

    def summary(self) -> dict:
        wall = self.elapsed()
        device_hours = wall * self.num_devices / 3600
        return {
            "device": self.device,
            "num_devices": self.num_devices,
            "peak_flops_per_device": self.peak_flops_per_device,
            "peak_source": self.peak_source,
            "tokens": self.tokens,
            "flops": self.flops,
            "compute_seconds": self.compute_seconds,
            "wall_seconds": wall,
            "tokens_per_second": self.tokens / max(self.compute_seconds, 1e-12),
            "mfu": self.mfu(self.flops, self.compute_seconds) if self.compute_seconds else 0.0,
            "device_hours": device_hours,
            "price_per_device_hour": self.price_per_device_hour,
            "dollars": device_hours * self.price_per_device_hour,
        }

    def state_dict(self) -> dict:
        state = asdict(self)
        state.pop("_session_start")
        state["wall_seconds"] = self.elapsed()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Carry over the totals of earlier sessions (the device description stays this session's)."""
        self.tokens = int(state["tokens"])
        self.flops = float(state["flops"])
        self.compute_seconds = float(state["compute_seconds"])
        self.wall_seconds = float(state["wall_seconds"])
        self._session_start = time.perf_counter()


def human(x: float, unit: str = "") -> str:
    """1.5e9 -> '1.50G' (SI prefixes, for FLOPs and tokens)."""
    for prefix, div in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{prefix}{unit}"
    return f"{x:.3g}{unit}"


def cost_markdown(s: dict) -> str:
    """A Markdown table of a summary, with DeepSeek-V3's published training bill for scale."""
    v3 = DEEPSEEK_V3
    share = s["device_hours"] / v3["device_hours"]
    rows = [
        ("devices", f"{s['num_devices']} x {s['device']}"),
        ("peak per device", f"{human(s['peak_flops_per_device'], 'FLOP/s')} ({s['peak_source']})"),
        ("tokens", f"{s['tokens']:,}"),
        ("model FLOPs", human(s["flops"])),
        ("compute time", f"{s['compute_seconds']:.1f} s"),
        ("wall time", f"{s['wall_seconds']:.1f} s"),
        ("throughput", f"{s['tokens_per_second']:,.0f} tokens/s"),
        ("MFU", f"{100 * s['mfu']:.2f}%"),
        ("device-hours", f"{s['device_hours']:.4g}"),
        ("cost", f"${s['dollars']:.4g} at ${s['price_per_device_hour']:g}/device-hour"),
        (
            "DeepSeek-V3, for scale",
            f"{v3['device_hours'] / 1e6:.3f}M {v3['device']} GPU-hours, ${v3['dollars'] / 1e6:.3f}M at "
            f"${v3['price_per_device_hour']:g}/GPU-hour (this run: {share:.2g} of its device-hours)",
        ),
    ]
    return table(["", ""], rows)
