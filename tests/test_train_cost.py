"""Cost accounting: FLOPs per token with MTP, declared GPU peaks, the measured CPU peak (best kept), MFU, $."""

import json

import pytest
import torch

from nanoseek.model import account, config_for_depth
from nanoseek.train import cost
from nanoseek.train.cost import (
    CostMeter,
    cost_markdown,
    measure_matmul_peak_flops,
    peak_flops,
    train_flops_per_token,
)


def test_flops_per_token_counts_mtp():
    cfg = config_for_depth(4, vocab_size=1000)
    no_mtp = cfg.replace(num_nextn_predict_layers=0)
    assert train_flops_per_token(no_mtp, 256) == account(no_mtp, 256).train_flops_per_token
    extra = train_flops_per_token(cfg, 256) - account(cfg, 256).train_flops_per_token
    per_layer = (account(cfg, 256).train_flops_per_token - 6 * 2 * 1000 * 256) / 4  # rough mean layer cost
    assert 0.3 * per_layer < extra < 3 * per_layer


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H800", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
    ],
)
def test_declared_gpu_peaks(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    value, source = peak_flops(torch.device("cuda", 0))
    assert value == peak and "datasheet" in source
    assert peak_flops("cpu", declared=1e12) == (1e12, "declared in the recipe (cost.peak_flops)")


def test_cpu_peak_keeps_the_best_measurement(monkeypatch, tmp_path):
    """The peak is measured in each process and the file keeps the best so far: a value cached while the
    machine was busy (too low, so MFU reads high) is replaced, a higher cached value is kept."""
    monkeypatch.setenv("NANOSEEK_CACHE_DIR", str(tmp_path))
    measure_matmul_peak_flops.cache_clear()
    first = measure_matmul_peak_flops("cpu", torch.float32, 256)
    assert 1e8 < first < 1e14
    cached = json.loads((tmp_path / "peak_flops.json").read_text())
    assert list(cached.values()) == [first]
    (key,) = cached
    (tmp_path / "peak_flops.json").write_text(json.dumps({key: 1.0}))  # measured under heavy load
    measure_matmul_peak_flops.cache_clear()
    assert measure_matmul_peak_flops("cpu", torch.float32, 256) > 1e8
    assert json.loads((tmp_path / "peak_flops.json").read_text())[key] > 1e8
    (tmp_path / "peak_flops.json").write_text(json.dumps({key: 1e15}))  # a quiet moment's best
    measure_matmul_peak_flops.cache_clear()
    assert measure_matmul_peak_flops("cpu", torch.float32, 256) == 1e15
    measure_matmul_peak_flops.cache_clear()


def test_meter_summary_and_resume():
    meter = CostMeter("Test GPU", num_devices=8, peak_flops_per_device=1e15, price_per_device_hour=2.0)
    meter.add(tokens=1000, flops=4e15, seconds=1.0)
    meter.add(tokens=1000, flops=4e15, seconds=1.0)
    meter.wall_seconds = 3600.0 - meter.elapsed()  # pretend the run has lasted an hour
    s = meter.summary()
    assert s["tokens"] == 2000 and s["flops"] == 8e15
    assert s["mfu"] == pytest.approx(8e15 / 2.0 / 8e15)  # half of 8 devices' peak
    assert s["device_hours"] == pytest.approx(8.0, rel=1e-3) and s["dollars"] == pytest.approx(16.0, rel=1e-3)
    assert s["tokens_per_second"] == pytest.approx(1000.0)
    again = CostMeter("Test GPU", 8, 1e15)
    again.load_state_dict(meter.state_dict())
    assert again.tokens == 2000 and again.elapsed() >= 3600.0


def test_report_table_shows_deepseek_v3_for_scale():
    meter = CostMeter("CPU", 1, 5e10, "measured", 2.0)
    meter.add(100, 1e12, 10.0)
    table = cost_markdown(meter.summary())
    assert "2.788M H800 GPU-hours" in table and "$5.576M at $2/GPU-hour" in table
    assert "| MFU | 200.00% |" in table  # 1e12 FLOPs in 10 s against 5e10 FLOP/s
    assert cost.DEEPSEEK_V3["device_hours"] * 2.0 == cost.DEEPSEEK_V3["dollars"]
