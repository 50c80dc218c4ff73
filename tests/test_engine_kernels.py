"""The decode kernel (`nanoseek.engine.kernels`): the C matmul against torch's, its in-place
accumulate, its build cache, and the fallback when it cannot be built."""

import os

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


def test_a_row_does_not_depend_on_the_others(kernel):
    x, w = torch.randn(2, 640), torch.randn(300, 640)
    assert torch.equal(kernels.matmul(x, w)[1], kernels.matmul(x[1:], w)[0])
    assert torch.equal(kernels.matmul(x, w)[:, 100:], kernels.matmul(x, w[100:].contiguous()))


def test_matmul_rejects_what_it_cannot_compute(kernel):
    with pytest.raises(ValueError, match="w"):
        kernels.matmul(torch.randn(1, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match="float64"):
        kernels.matmul(torch.randn(1, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        kernels.matmul(torch.randn(1, 8), torch.randn(8, 4).T)
    with pytest.raises(ValueError, match="out"):
        kernels.matmul(torch.randn(1, 8), torch.randn(4, 8), out=torch.zeros(1, 5))


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
    monkeypatch.setattr(kernels, "SOURCE", broken)
    if kernels.shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler")
    with pytest.raises(RuntimeError, match="broken.c"):
        kernels.build()
    assert not list((tmp_path / "kernels").glob("*.so"))


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("NANOSEEK_KERNELS", "0")
    assert not kernels.available()
