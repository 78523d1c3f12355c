"""Tests for the exact integer GEMM, the array namespaces and the GEMM setting."""

import numpy as np
import pytest

import sknitro
from sknitro import backend
from sknitro.backend import FLOAT64_EXACT_LIMIT, exact_matmul, get_namespace

KERNELS = ["auto", "integer"]


def exact_reference(a, b):
    """The integer product in Python ints (object arrays): cannot overflow or round."""
    return a.astype(object) @ b.astype(object)


def matmul_under(kernel, a, b, **kwargs):
    with sknitro.config_context(gemm=kernel):
        return exact_matmul(a, b, **kwargs)


def assert_exact(result, a, b):
    ref = exact_reference(a, b)
    assert result.shape == ref.shape
    assert result.tolist() == ref.tolist()


class MatmulSpy:
    """Stands in for the numpy module inside exact_matmul and records matmul's input dtypes."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b):
        self.calls.append((a.dtype, b.dtype))
        return np.matmul(a, b)


@pytest.fixture
def spy(monkeypatch):
    s = MatmulSpy()
    monkeypatch.setattr(backend, "array_namespace", lambda a: s)
    return s


# ---------------------------------------------------------------------------------------
# exactness


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 2), (7, 64, 9), (16, 300, 10), (2, 1, 33)])
@pytest.mark.parametrize("dtypes", [(np.int8, np.int32), (np.int16, np.int8),
                                    (np.int32, np.int32), (np.int64, np.int16)])
def test_exact_matmul_random(kernel, shape, dtypes):
    m, k, n = shape
    seed = [m, k, n, np.dtype(dtypes[0]).itemsize, np.dtype(dtypes[1]).itemsize]
    rng = np.random.default_rng(seed)
    lim_a = min(np.iinfo(dtypes[0]).max, 2**20)
    lim_b = min(np.iinfo(dtypes[1]).max, 2**20)
    a = rng.integers(-lim_a, lim_a + 1, size=(m, k)).astype(dtypes[0])
    b = rng.integers(-lim_b, lim_b + 1, size=(k, n)).astype(dtypes[1])
    out = matmul_under(kernel, a, b)
    assert_exact(out, a, b)


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_matmul_int8_extremes(kernel):
    # -128 * -128 summed over K: the int8 corner case
    a = np.full((3, 1000), -128, dtype=np.int8)
    b = np.full((1000, 2), -128, dtype=np.int8)
    out = matmul_under(kernel, a, b)
    assert out.tolist() == [[16_384_000] * 2] * 3
    b127 = np.full((1000, 2), 127, dtype=np.int8)
    out = matmul_under(kernel, a, b127)
    assert out.tolist() == [[-16_256_000] * 2] * 3
    # mixed signs at the extremes
    rng = np.random.default_rng(0)
    a = rng.choice(np.array([-128, 127], dtype=np.int8), size=(5, 777))
    b = rng.choice(np.array([-128, 127], dtype=np.int8), size=(777, 4))
    assert_exact(matmul_under(kernel, a, b), a, b)


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_matmul_largest_int32_output(kernel):
    # 128 * 128 * 131071 = 2_147_467_264 <= 2**31 - 1: still int32, and exact
    k = 131071
    a = np.full((1, k), -128, dtype=np.int8)
    b = np.full((k, 1), -128, dtype=np.int8)
    out = matmul_under(kernel, a, b)
    assert out.dtype == np.int32
    assert int(out[0, 0]) == 2_147_467_264
    # one more term: the bound 2**31 no longer fits int32
    a = np.full((1, k + 1), -128, dtype=np.int8)
    b = np.full((k + 1, 1), -128, dtype=np.int8)
    out = matmul_under(kernel, a, b)
    assert out.dtype == np.int64
    assert int(out[0, 0]) == 2**31


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_matmul_large_int32_weights_large_k(kernel):
    # int8 activations at their extremes, int32 weights near 2**20, K = 8192:
    # bound 128 * 2**20 * 8192 = 2**40 (float64 path under "auto"), result int64
    rng = np.random.default_rng(1)
    k = 8192
    a = rng.choice(np.array([-128, -127, 126, 127], dtype=np.int8), size=(4, k))
    w = (2**20 - rng.integers(0, 16, size=(3, k))) * rng.choice([-1, 1], size=(3, k))
    w = w.astype(np.int32)
    out = matmul_under(kernel, a, w.T)
    assert out.dtype == np.int64
    assert_exact(out, a, w.T)
    # all-maximal case: the exact value is known in closed form
    a = np.full((2, k), -128, dtype=np.int8)
    w = np.full((k, 2), 2**20, dtype=np.int32)
    out = matmul_under(kernel, a, w)
    assert out.tolist() == [[-128 * 2**20 * k] * 2] * 2


def test_both_kernels_give_identical_bits():
    rng = np.random.default_rng(2)
    a = rng.integers(-127, 128, size=(32, 500)).astype(np.int8)
    w = rng.integers(-5000, 5001, size=(500, 20)).astype(np.int32)
    fast = matmul_under("auto", a, w)
    slow = matmul_under("integer", a, w)
    assert fast.dtype == slow.dtype
    np.testing.assert_array_equal(fast, slow)


# ---------------------------------------------------------------------------------------
# kernel selection and the float64 exactness limit


def _float64_breaking_case():
    # K = 2: (2**27 + 1)**2 + 1 * 1 = 2**54 + 2**28 + 2. Above 2**54 float64 has a spacing
    # of 4, so that sum is not representable: any float64 product must be wrong.
    a = np.array([[2**27 + 1, 1]], dtype=np.int64)
    b = np.array([[2**27 + 1], [1]], dtype=np.int64)
    exact = 2**54 + 2**28 + 2
    return a, b, exact


def test_float64_product_is_wrong_on_the_breaking_case():
    a, b, exact = _float64_breaking_case()
    assert int(exact_reference(a, b)[0, 0]) == exact
    naive = a.astype(np.float64) @ b.astype(np.float64)
    assert int(naive[0, 0]) != exact
    # and the bound is indeed past the exactness limit
    assert (2**27 + 1) ** 2 * 2 >= FLOAT64_EXACT_LIMIT


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_matmul_falls_back_beyond_float64_limit(kernel, spy):
    a, b, exact = _float64_breaking_case()
    out = matmul_under(kernel, a, b)
    assert out.dtype == np.int64
    assert int(out[0, 0]) == exact
    # the product ran on the integer kernel, not through float64
    assert spy.calls == [(np.dtype(np.int64), np.dtype(np.int64))]


def test_auto_kernel_uses_float64_below_the_limit_and_integer_kernel_never_does(spy):
    a = np.array([[1, -2, 3]], dtype=np.int8)
    b = np.array([[4], [5], [-6]], dtype=np.int32)
    # 1*4 - 2*5 - 3*6 = 4 - 10 - 18 = -24
    out = matmul_under("auto", a, b)
    assert out.tolist() == [[-24]]
    assert spy.calls == [(np.dtype(np.float64), np.dtype(np.float64))]
    spy.calls.clear()
    out = matmul_under("integer", a, b)
    assert out.tolist() == [[-24]]
    assert spy.calls == [(np.dtype(np.int64), np.dtype(np.int64))]


def test_auto_kernel_switches_exactly_at_2_pow_53(spy):
    # bound = 2**26 * 2**26 * 2 = 2**53: not < 2**53, so the integer kernel
    a = np.array([[2**26, 2**26]], dtype=np.int64)
    b = np.array([[2**26], [-(2**26)]], dtype=np.int64)
    out = exact_matmul(a, b)
    assert out.tolist() == [[0]]
    assert spy.calls == [(np.dtype(np.int64), np.dtype(np.int64))]
    spy.calls.clear()
    # bound = (2**26 - 1) * 2**26 * 2 < 2**53: float64 is proven exact
    a = np.array([[2**26 - 1, 2**26 - 1]], dtype=np.int64)
    out = exact_matmul(a, b)
    assert out.tolist() == [[0]]
    assert spy.calls == [(np.dtype(np.float64), np.dtype(np.float64))]


# ---------------------------------------------------------------------------------------
# result dtype and overflow


@pytest.mark.parametrize("kernel", KERNELS)
def test_result_dtype_follows_the_bound(kernel):
    a = np.array([[100, -100]], dtype=np.int8)
    b = np.array([[3], [1]], dtype=np.int8)
    out = matmul_under(kernel, a, b)
    assert out.dtype == np.int32  # bound 128 * 128 * 2 fits int32
    assert out.tolist() == [[200]]
    big = np.array([[2**20], [1]], dtype=np.int32)
    out = matmul_under(kernel, np.array([[127, 1]], dtype=np.int8), big)
    # bound 128 * 2**20 * 2 = 2**28: int32; value 127 * 2**20 + 1
    assert out.dtype == np.int32
    assert out.tolist() == [[127 * 2**20 + 1]]
    big = np.array([[2**24], [1]], dtype=np.int32)
    out = matmul_under(kernel, np.array([[127, 1]], dtype=np.int8), big)
    # bound 128 * 2**24 * 2 = 2**32 > 2**31 - 1: int64 (the value itself would still fit)
    assert out.dtype == np.int64
    assert out.tolist() == [[127 * 2**24 + 1]]


@pytest.mark.parametrize("kernel", KERNELS)
def test_sum_bound_replaces_the_factor_bound(kernel):
    # one large entry in a, small elsewhere: max|a| * max|b| * K = 2**24 * 2**10 * 2 = 2**35,
    # but sum_k |a[0, k] * b[k, 0]| = 2**24 * 1 + 1 * 2**10 < 2**31
    a = np.array([[2**24, 1]], dtype=np.int64)
    b = np.array([[1], [2**10]], dtype=np.int32)
    assert matmul_under(kernel, a, b).dtype == np.int64
    out = matmul_under(kernel, a, b, sum_bound=2**24 + 2**10)
    assert out.dtype == np.int32
    assert out.tolist() == [[2**24 + 2**10]]


def test_sum_bound_decides_the_float64_path(spy):
    # factor bound (2**40)**2 * 2 is past 2**53; the sum bound 2**40 + 2**12 proves float64 exact
    a = np.array([[2**40, 1]], dtype=np.int64)
    b = np.array([[1], [2**12]], dtype=np.int64)
    assert exact_matmul(a, b, sum_bound=2**40 + 2**12).tolist() == [[2**40 + 2**12]]
    assert spy.calls == [(np.dtype(np.float64), np.dtype(np.float64))]
    spy.calls.clear()
    assert exact_matmul(a, b).tolist() == [[2**40 + 2**12]]
    assert spy.calls == [(np.dtype(np.int64), np.dtype(np.int64))]


@pytest.mark.parametrize("kernel", KERNELS)
def test_largest_non_overflowing_product(kernel):
    # bound 2**31 * 2**31 * 1 = 2**62 <= 2**63 - 1: allowed and exact
    a = np.array([[-(2**31)]], dtype=np.int64)
    b = np.array([[-(2**31)]], dtype=np.int64)
    out = matmul_under(kernel, a, b)
    assert out.dtype == np.int64
    assert out.tolist() == [[2**62]]


@pytest.mark.parametrize("kernel", KERNELS)
def test_overflow_error_when_int64_could_overflow(kernel):
    # bound 2**31 * 2**31 * 2 = 2**63 > 2**63 - 1 (the actual value 2**62 + 1 would fit,
    # but the bound cannot prove it)
    a = np.array([[2**31, 1]], dtype=np.int64)
    b = np.array([[2**31], [1]], dtype=np.int64)
    with pytest.raises(OverflowError):
        matmul_under(kernel, a, b)
    a = np.array([[2**32]], dtype=np.int64)
    with pytest.raises(OverflowError):
        matmul_under(kernel, a, a)


# ---------------------------------------------------------------------------------------
# namespaces


def _cupy_with_gpu():
    try:
        import cupy
    except ImportError:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def test_get_namespace_cpu_is_numpy():
    assert get_namespace("cpu") is np


@pytest.mark.parametrize("device", ["gpu", "tpu", ""])
def test_get_namespace_rejects_unknown_devices(device):
    with pytest.raises(ValueError):
        get_namespace(device)


@pytest.mark.skipif(_cupy_with_gpu(), reason="CuPy imports and a GPU exists")
def test_get_namespace_cuda_without_cupy_or_gpu():
    with pytest.raises(ValueError, match="(?i)cupy|gpu"):
        get_namespace("cuda")


# ---------------------------------------------------------------------------------------
# config


def test_config_context_sets_and_restores():
    assert sknitro.get_config()["gemm"] == "auto"
    with sknitro.config_context(gemm="integer"):
        assert sknitro.get_config()["gemm"] == "integer"
        with sknitro.config_context(gemm="auto"):
            assert sknitro.get_config()["gemm"] == "auto"
        assert sknitro.get_config()["gemm"] == "integer"
        with sknitro.config_context():  # None leaves the setting alone
            assert sknitro.get_config()["gemm"] == "integer"
    assert sknitro.get_config()["gemm"] == "auto"


def test_config_context_restores_after_an_exception():
    with pytest.raises(RuntimeError):
        with sknitro.config_context(gemm="integer"):
            assert sknitro.get_config()["gemm"] == "integer"
            raise RuntimeError("boom")
    assert sknitro.get_config()["gemm"] == "auto"


def test_config_rejects_unknown_kernels():
    with pytest.raises(ValueError, match="gemm"):
        with sknitro.config_context(gemm="float"):
            pass
    with pytest.raises(ValueError):
        sknitro.set_config(gemm="blas")
    assert sknitro.get_config()["gemm"] == "auto"


def test_get_config_returns_a_copy():
    cfg = sknitro.get_config()
    cfg["gemm"] = "integer"
    assert sknitro.get_config()["gemm"] == "auto"
