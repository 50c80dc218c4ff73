"""The decode kernels (`nanoseek.engine.kernels`): the C fp32 and int8 matmuls against torch, their
in-place accumulate, batch independence, the build cache, and the fallback when they cannot be built."""

import os
from pathlib import Path

import pytest
import torch

from nanoseek.engine import kernels


@pytest.fixture(autouse=True)
def fresh_kernel_state():
    kernels.reset()
    yield
    kernels.reset()


@pytest.fixture
def kernel():
    if not kernels.available():
        pytest.skip("no C compiler for the decode kernel")


@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("shape", [(640, 960), (37, 5), (16, 1), (160, 640)], ids=str)
def test_matmul_equals_torch(kernel, rows, shape):
    K, M = shape
    g = torch.Generator().manual_seed(rows * K)
    x, w = torch.randn(rows, K, generator=g), torch.randn(M, K, generator=g)
    torch.testing.assert_close(kernels.matmul(x, w), x @ w.T, atol=1e-4, rtol=1e-5)
    residual = torch.randn(rows, M, generator=g)
    expected = residual + 0.3 * (x @ w.T)
    out = kernels.matmul(x, w, out=residual, alpha=0.3)
    assert out is residual  # in place
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("rows", [1, 2])
def test_bmatmul_equals_torch_per_head(kernel, rows):
    x, w = torch.randn(10, rows, 64), torch.randn(10, 160, 64)  # heads, rows, in; heads, out, in
    torch.testing.assert_close(kernels.bmatmul(x, w), torch.bmm(x, w.transpose(1, 2)), atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="bmatmul"):
        kernels.bmatmul(x, w[:9])


def test_a_row_does_not_depend_on_the_others(kernel):
    """Rows go four at a time, with the same arithmetic per row as one at a time: a row's result is
    the same bits in any batch (the same seed samples the same text alone or in a busy batch)."""
    x, w = torch.randn(7, 650), torch.randn(301, 650)  # rows and weight rows not multiples of 4
    full, residual = kernels.matmul(x, w), torch.randn(7, 301)
    accumulated = kernels.matmul(x, w, out=residual.clone(), alpha=0.3)
    for r in range(7):
        assert torch.equal(full[r], kernels.matmul(x[r : r + 1], w)[0])
        alone = kernels.matmul(x[r : r + 1], w, out=residual[r : r + 1].clone(), alpha=0.3)
        assert torch.equal(accumulated[r], alone[0])
    assert torch.equal(kernels.matmul(x, w)[:, 100:], kernels.matmul(x, w[100:].contiguous()))


@pytest.mark.parametrize("rows", [1, 3, 4, 9])
@pytest.mark.parametrize("shape", [(640, 1152), (37, 5), (1728, 64), (160, 640)], ids=str)
def test_int8_matmul_equals_the_dequantized_product(kernel, rows, shape):
    K, M = shape
    g = torch.Generator().manual_seed(rows + K)
    x = torch.randn(rows, K, generator=g)
    q = torch.randint(-127, 128, (M, K), generator=g, dtype=torch.int8)
    scale = torch.rand(M, generator=g) / 100
    exact = (x.double() @ q.double().T * scale.double()).float()
    y = kernels.matmul_int8(x, q, scale)
    # activations rounded to 16 bits per row: ~2^-16 of the row's largest product per term
    assert (y - exact).abs().max() <= 1e-4 * exact.abs().max()
    residual = torch.randn(rows, M, generator=g)
    expected = residual + 0.5 * y
    assert kernels.matmul_int8(x, q, scale, out=residual, alpha=0.5) is residual
    torch.testing.assert_close(residual, expected)


def test_int8_results_do_not_depend_on_the_batch_or_the_fusion(kernel):
    """Exact integer sums: a row's outputs are the same bits alone or in any batch, and with the
    weight rows split or reordered, which is why the engine's int8 decode equals the model's forward."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 640, generator=g)
    q = torch.randint(-127, 128, (300, 640), generator=g, dtype=torch.int8)
    scale = torch.rand(300, generator=g)
    full = kernels.matmul_int8(x, q, scale)
    for r in range(7):
        assert torch.equal(kernels.matmul_int8(x[r : r + 1], q, scale)[0], full[r])
    perm = torch.randperm(300, generator=g)
    assert torch.equal(kernels.matmul_int8(x, q[perm].contiguous(), scale[perm].contiguous()), full[:, perm])


@pytest.mark.parametrize("rows", [1, 3, 4, 6])
def test_int8_sums_are_exact_at_their_largest(kernel, rows):
    """Every product at its largest (32767 * 127), over more entries than one int32 piece holds and a
    short last step: the sum must still be the exact integer, for the few-row and the blocked loops."""
    K, M = 2 * 8192 + 45, 6
    x = torch.full((rows, K), 3.0)
    q = torch.full((M, K), 127, dtype=torch.int8)
    q[1::2] = -127
    scale = torch.rand(M) / 100
    xs = torch.tensor(3.0) / 32767  # the kernel's row scale, float32
    total = torch.tensor([K * 32767 * 127 * (-1) ** j for j in range(M)], dtype=torch.float64)
    expected = (total * (xs.double() * scale.double())).float().expand(rows, M)
    assert torch.equal(kernels.matmul_int8(x, q, scale), expected)


def test_vectorized_and_portable_builds_agree_bit_for_bit(kernel, tmp_path, monkeypatch):
    """CPUs with AVX-512 get hand-vectorized blocked loops (fp32, and int8 with VNNI), CPUs with AVX2
    and FMA blocked loops of their own (fp32 in spans of 512 inputs, int8 with vpmaddwd); a build with
    -DNANOSEEK_PORTABLE keeps only the plain C. They compute the same numbers in the same order, so
    both builds must give the same bits, fresh and accumulated, for every blocking remainder."""
    import ctypes

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if not any(name in flags for name in ("avx512f", "avx2")):
        pytest.skip("this CPU has neither AVX-512 nor AVX2: only the portable loops exist")
    monkeypatch.setenv("NANOSEEK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kernels, "FLAGS", [*kernels.FLAGS, "-DNANOSEEK_PORTABLE"])
    portable = ctypes.CDLL(str(kernels.build()))
    p, n = ctypes.c_void_p, ctypes.c_long
    portable.matmul_i8.argtypes = [p, p, p, p, n, n, n, ctypes.c_float, ctypes.c_int]
    portable.matmul_f32.argtypes = [p, p, p, n, n, n, ctypes.c_float, ctypes.c_int]
    g = torch.Generator().manual_seed(3)
    shapes = [(1, 640, 320), (2, 45, 7), (3, 160, 9), (5, 640, 13), (16, 1728, 64), (9, 8300, 6)]
    shapes += [(4, 17, 5), (7, 1100, 11), (16, 4103, 8), (6, 5000, 4)]  # odd spans, tails, int8 chunks
    for rows, K, M in shapes:
        x = torch.randn(rows, K, generator=g)
        q = torch.randint(-127, 128, (M, K), generator=g, dtype=torch.int8)
        w = torch.randn(M, K, generator=g)
        scale, residual = torch.rand(M, generator=g), torch.randn(rows, M, generator=g)
        for accumulate in (0, 1):
            start = residual.clone() if accumulate else None
            y = residual.clone()
            args = (x.data_ptr(), q.data_ptr(), scale.data_ptr(), y.data_ptr(), rows, K, M, 0.5, accumulate)
            assert portable.matmul_i8(*args) == 0
            assert torch.equal(y, kernels.matmul_int8(x, q, scale, out=start, alpha=0.5)), (rows, K, M)
            start = residual.clone() if accumulate else None
            y = residual.clone()
            portable.matmul_f32(x.data_ptr(), w.data_ptr(), y.data_ptr(), rows, K, M, 0.5, accumulate)
            assert torch.equal(y, kernels.matmul(x, w, out=start, alpha=0.5)), (rows, K, M)


def test_int8_rows_with_inf_or_nan_give_nan_and_zero_rows_give_zero(kernel):
    x = torch.randn(4, 32)
    x[1, 5], x[2, 0], x[3] = float("nan"), float("inf"), 0.0
    y = kernels.matmul_int8(x, torch.ones(3, 32, dtype=torch.int8), torch.ones(3))
    assert torch.isfinite(y[0]).all() and y[1].isnan().all() and y[2].isnan().all()
    assert torch.equal(y[3], torch.zeros(3))


def test_int8_layers_use_the_kernel(kernel):
    from nanoseek.engine.quant import Int8Linear

    layer = Int8Linear(torch.nn.Linear(64, 24, bias=False))
    x = torch.randn(5, 64)
    assert torch.equal(layer(x), kernels.matmul_int8(x, layer.qweight, layer.scale))


def test_matmul_rejects_what_it_cannot_compute(kernel):
    with pytest.raises(ValueError, match="w"):
        kernels.matmul(torch.randn(1, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match="float64"):
        kernels.matmul(torch.randn(1, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        kernels.matmul(torch.randn(1, 8), torch.randn(8, 4).T)
    with pytest.raises(ValueError, match="out"):
        kernels.matmul(torch.randn(1, 8), torch.randn(4, 8), out=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="int8"):
        kernels.matmul_int8(torch.randn(1, 8), torch.randn(4, 8), torch.ones(4))
    with pytest.raises(ValueError, match="scale"):
        kernels.matmul_int8(torch.randn(1, 8), torch.ones(4, 8, dtype=torch.int8), torch.ones(3))


def test_the_build_is_cached_per_source_and_machine(kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOSEEK_CACHE_DIR", str(tmp_path))
    first = kernels.build()
    assert first.parent == tmp_path / "kernels" and first.exists()
    stamp = first.stat().st_mtime_ns
    assert kernels.build() == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary files left


def test_no_compiler_means_torch_matmuls_and_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOSEEK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler")
    with pytest.warns(UserWarning, match="no C compiler"):
        assert not kernels.available()
    assert not kernels.available()  # decided once: no second warning, no second try
    with pytest.raises(RuntimeError, match="not available"):
        kernels.matmul(torch.randn(1, 4), torch.randn(2, 4))


def test_a_failing_build_reports_the_compiler_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOSEEK_CACHE_DIR", str(tmp_path))
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(kernels, "SOURCES", [broken])
    if kernels.shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler")
    with pytest.raises(RuntimeError, match="broken.c"):
        kernels.build()
    assert not list((tmp_path / "kernels").glob("*.so"))


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("NANOSEEK_KERNELS", "0")
    assert not kernels.available()
