"""Every kernel implementation trains to the NumPy reference's weights, bit for bit: dense and
conv layers, even and odd widths, any number of threads; and the selection rules of
``config_context(kernels=...)``. (The unit tests of each kernel are in test_fused.py and
test_pairs.py; the golden traces replay on every implementation in test_reference.py.)"""

import contextlib
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import sknitro
from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.nn import kernels

from conftest import KERNEL_PATHS, PAIR_ISAS, weights_equal


def _fit(make, X, y, **config):
    with warnings.catch_warnings(), sknitro.config_context(**config):
        warnings.simplefilter("ignore")
        model = make().fit(X, y)
        return model.weights_ + model.head_weights_, model.decision_function(X)


MODELS = {
    # even widths: the pair form of the weights; odd (65 inputs): split units; under 64 the "c" kernels
    "mlp-even": (lambda: NitroMLPClassifier(hidden_layer_sizes=(64, 32), max_iter=3, random_state=0), False),
    "mlp-odd": (lambda: NitroMLPClassifier(hidden_layer_sizes=(65, 33), max_iter=3, random_state=1), False),
    # conv widths 9 (one channel) and 16 * 9; a dense block after the convs
    "cnn": (lambda: NitroCNNClassifier(architecture=[16, "M", 16], hidden_layer_sizes=(32,), max_iter=2,
                                       random_state=0), True),
    # dropout: its masks and its output pass, on maps after the convs and on rows after each dense block
    "cnn-dropout": (lambda: NitroCNNClassifier(architecture=[16, "M", 16], hidden_layer_sizes=(32, 32),
                                               conv_dropout=0.1, dropout=0.3, max_iter=2, random_state=0), True),
    # dropout past 0.25: int16 features, on the pair products as int8 digits
    "mlp-dropout-0.8": (lambda: NitroMLPClassifier(hidden_layer_sizes=(64, 64), dropout=0.8, max_iter=2,
                                                   random_state=0), False),
    "cnn-dropout-0.5": (lambda: NitroCNNClassifier(architecture=[16, "M", 16], hidden_layer_sizes=(32,),
                                                   conv_dropout=0.5, dropout=0.5, max_iter=2, random_state=0),
                        True),
}


@pytest.fixture(scope="module")
def reference_fits(digits):
    X, y = digits
    fits = {}
    for name, (make, image) in MODELS.items():
        data = X.reshape(-1, 1, 8, 8) if image else X
        fits[name] = data, _fit(make, data, y, kernels="numpy")
    return fits


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("model", MODELS)
def test_every_implementation_trains_to_the_reference_weights(reference_fits, digits, model, path):
    data, (expected_weights, expected_scores) = reference_fits[model]
    weights, scores = _fit(MODELS[model][0], data, digits[1], **KERNEL_PATHS[path])
    assert weights_equal(weights, expected_weights)
    np.testing.assert_array_equal(scores, expected_scores)


@pytest.mark.parametrize("isa", PAIR_ISAS)
def test_conv_layers_train_on_the_pair_products(digits, isa, spy):
    """A CNN without dense blocks: every weight update of a forward layer is a conv's. The
    first conv's patches (9 values) go to the narrow kernels (on split units)."""
    X, y = digits
    make = lambda: NitroCNNClassifier(architecture=[8, "M", 9, 16], max_iter=1, random_state=0)  # noqa: E731
    weights, _ = _fit(make, X.reshape(-1, 1, 8, 8), y, kernels=isa)
    assert spy.calls.get(f"units_sgd_update/{isa}", 0) > 0  # the conv updates
    assert spy.calls.get(f"pairs_scaled_product/{isa}", 0) > 0  # the second conv's forward (8 * 9: even)
    assert spy.calls.get(f"units_product/{isa}", 0) > 0  # the third conv's forward (9 * 9: odd)
    assert "sgd_update" not in spy.calls  # no update left to the "c" kernels (float64 BLAS)
    assert weights_equal(weights, _fit(make, X.reshape(-1, 1, 8, 8), y, kernels="numpy")[0])


@pytest.mark.parametrize("isa", PAIR_ISAS)
@pytest.mark.parametrize("model", ["mlp-dropout-0.8", "cnn-dropout-0.5"])
def test_int16_features_train_on_the_pair_products(digits, isa, model, spy, monkeypatch):
    """Dropout past a rate of 0.25 makes int16 features: the blocks after it read them as int8
    digits on the pair products, and never fall back to the "c" kernels' float64 BLAS. (The
    output layer, a learning head of 10 outputs, runs its step in NumPy around a "c" update.)"""
    make, image = MODELS[model]
    int16_inputs, float64_updates = [], []
    forward, update = kernels.PairKernels.scaled_forward, kernels.CompiledKernels._sgd_update
    monkeypatch.setattr(kernels.PairKernels, "scaled_forward", lambda self, layer, x, *args: (
        int16_inputs.append(x.dtype == np.int16), forward(self, layer, x, *args))[1])
    monkeypatch.setattr(kernels.CompiledKernels, "_sgd_update", lambda self, layer, *args: (
        float64_updates.append(layer), update(self, layer, *args))[1])
    with warnings.catch_warnings(), sknitro.config_context(kernels=isa):
        warnings.simplefilter("ignore")
        fitted = make().fit(digits[0].reshape(-1, 1, 8, 8) if image else digits[0], digits[1])
    assert sum(int16_inputs) > 10  # the dropped features passed int8 often
    assert all(layer is fitted.network_.output.linear for layer in float64_updates)
    assert spy.calls.get(f"units_sgd_update/{isa}", 0) > 0
    assert spy.calls.get(f"pairs_product/{isa}", 0) > 0  # the digits' forward


@pytest.mark.skipif(not PAIR_ISAS, reason="this CPU runs no pair products (AVX2 or AVX-512 VNNI)")
@pytest.mark.skipif(not any(i["user_api"] == "openmp" for i in threadpool_info()),
                    reason="the extension was built without OpenMP")
@pytest.mark.parametrize("isa", PAIR_ISAS)
def test_the_number_of_threads_changes_nothing(digits, isa):
    """Products of this size (4096 positions x 144 inputs x 16 outputs), and the dropout between
    the convs, run on every thread threadpoolctl allows; the weights are the same for one thread
    or two."""
    X, y = digits
    make = lambda: NitroCNNClassifier(architecture=[16, 16], conv_dropout=0.1, max_iter=2,  # noqa: E731
                                      random_state=0)
    with threadpool_limits(1):
        one = _fit(make, X.reshape(-1, 1, 8, 8), y, kernels=isa)
    with threadpool_limits(2):
        two = _fit(make, X.reshape(-1, 1, 8, 8), y, kernels=isa)
    assert weights_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_selection_follows_the_settings():
    assert kernels.select().name == kernels.BEST
    assert kernels.AVAILABLE[0] == "numpy" and kernels.BEST == kernels.AVAILABLE[-1]
    for name in kernels.AVAILABLE:
        with sknitro.config_context(kernels=name):
            assert kernels.select().name == name
            with sknitro.config_context(gemm="integer"):  # the integer GEMM is the reference's
                assert kernels.select().name == "numpy"
            with sknitro.config_context(fused_kernels=False):
                assert kernels.select().name == "numpy"


def test_an_implementation_this_machine_cannot_run_is_refused():
    with pytest.raises(ValueError, match="kernels must be one of"):
        sknitro.set_config(kernels="sse2")
    missing = [name for name in ("c", "avx2", "vnni") if name not in kernels.AVAILABLE]
    for name in missing:
        with pytest.raises(ValueError, match="cannot run here"):
            sknitro.set_config(kernels=name)
    assert sknitro.get_config()["kernels"] == "auto"


def _blas_threads():
    return _threads("blas")


def _threads(user_api):
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == user_api]


@pytest.mark.parametrize("isa", PAIR_ISAS)
def test_pair_kernel_epochs_keep_blas_on_one_thread(digits, isa):
    """The pair kernels' OpenMP threads and BLAS's would spin against each other: during a
    pair-kernel epoch BLAS runs on one thread, and the user's setting comes back after it."""
    from sknitro.nn.optim import IntegerSGD
    from sknitro.nn.training import train_epoch

    if not _blas_threads():
        pytest.skip("no BLAS library that threadpoolctl controls")
    X, y = digits
    clf = NitroMLPClassifier(hidden_layer_sizes=(64,), max_iter=1, random_state=0).fit(X[:200], y[:200])
    encoded = clf.encoder_.transform(X[:256])
    with threadpool_limits(limits=2, user_api="blas"), sknitro.config_context(kernels=isa):
        seen = []
        train_epoch(clf.network_, encoded, y[:256], 32, IntegerSGD(256), 64, np.random.default_rng(0),
                    on_batch=lambda total: seen.append(_blas_threads()))
        assert seen and all(threads == [1] * len(threads) for threads in seen)
        assert _blas_threads() == [2] * len(_blas_threads())
    with sknitro.config_context(kernels="numpy"):  # the reference leaves both pools alone
        assert isinstance(kernels.select().thread_pools(), contextlib.nullcontext)


def test_c_kernel_epochs_keep_openmp_on_one_thread(digits):
    """The "c" kernels' products run on BLAS's threads and their passes on OpenMP's: during
    their epoch OpenMP runs on one thread, BLAS keeps the user's, and OpenMP's setting comes
    back after it."""
    from sknitro.nn.optim import IntegerSGD
    from sknitro.nn.training import train_epoch

    X, y = digits
    clf = NitroMLPClassifier(hidden_layer_sizes=(64,), max_iter=1, random_state=0).fit(X[:200], y[:200])
    encoded = clf.encoder_.transform(X[:256])
    if not _threads("openmp"):
        pytest.skip("no OpenMP library that threadpoolctl controls")
    with threadpool_limits(limits=2), sknitro.config_context(kernels="c"):
        seen = []
        train_epoch(clf.network_, encoded, y[:256], 32, IntegerSGD(256), 64, np.random.default_rng(0),
                    on_batch=lambda total: seen.append((_threads("openmp"), _blas_threads())))
        assert seen and all(openmp == [1] * len(openmp) and blas == [2] * len(blas) for openmp, blas in seen)
        assert _threads("openmp") == [2] * len(_threads("openmp"))


def test_blas_limit_is_shared_by_concurrent_epochs():
    if not _blas_threads():
        pytest.skip("no BLAS library that threadpoolctl controls")
    limit = kernels._SingleThreadedPool("blas")  # one per process, shared by every epoch
    with threadpool_limits(limits=2, user_api="blas"):
        limit.__enter__()  # a fit's epoch
        limit.__enter__()  # another fit's, in another thread, while the first runs
        limit.__exit__(None, None, None)  # the first ends
        assert _blas_threads() == [1] * len(_blas_threads())  # the second still runs
        limit.__exit__(None, None, None)
        assert _blas_threads() == [2] * len(_blas_threads())


@pytest.mark.skipif(not PAIR_ISAS, reason="this CPU runs no pair products (AVX2 or AVX-512 VNNI)")
@pytest.mark.parametrize("isa", PAIR_ISAS)
def test_large_pair_forms_lie_on_huge_pages(isa):
    """A layer's pair form of at least HUGE_PAGE_MIN_BYTES starts on a huge page (where Linux
    offers them), stays valid after the mapping's other references are gone, and gives the
    product of the int32 weights; a small one is a plain array."""
    import gc

    from sknitro.nn.layers import IntegerLinear

    rng = np.random.default_rng(0)
    big = IntegerLinear(784, 200, 3000, rng)  # 200 * 784 int16: 313,600 bytes
    small = IntegerLinear(64, 16, 3000, rng)
    x = rng.integers(-127, 128, (5, 784)).astype(np.int8)
    with sknitro.config_context(kernels=isa):
        scaled = big.scaled_forward(x, 1000)
        small.scaled_forward(np.ascontiguousarray(x[:, :64]), 1000)
    gc.collect()
    pairs = big.kernel_cache.pairs.pairs
    assert pairs.nbytes >= kernels.HUGE_PAGE_MIN_BYTES > small.kernel_cache.pairs.pairs.nbytes
    if hasattr(__import__("mmap"), "MADV_HUGEPAGE"):
        assert pairs.ctypes.data % kernels.HUGE_PAGE == 0
        assert _mapping_of(pairs.ctypes.data)[1].endswith("p")  # private: shared memory takes no huge pages
    assert small.kernel_cache.pairs.pairs.flags.owndata
    np.testing.assert_array_equal(pairs, np.clip(big.weight, -32768, 32767))
    with sknitro.config_context(kernels="numpy"):
        np.testing.assert_array_equal(scaled, big.scaled_forward(x, 1000))


def _mapping_of(address: int) -> list[str]:
    """The line of /proc/self/maps (split) whose range holds ``address``."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            if start <= address < end:
                return fields
    raise AssertionError(f"no mapping holds {address:#x}")


def test_huge_page_arrays_behave_like_empty_ones():
    shape = (3, kernels.HUGE_PAGE_MIN_BYTES // 4 + 5)  # past a page boundary of the mapping
    array = kernels.huge_page_empty(shape, np.int32)
    assert array.shape == shape and array.dtype == np.int32 and array.flags.c_contiguous and array.flags.writeable
    array[...] = np.arange(array.size, dtype=np.int32).reshape(shape)
    copy = array.copy()
    del shape
    import gc

    gc.collect()
    np.testing.assert_array_equal(array, copy)
    tiny = kernels.huge_page_empty((2, 3), np.int16)
    assert tiny.shape == (2, 3) and tiny.dtype == np.int16 and tiny.flags.owndata


def test_huge_page_arrays_fall_back_to_plain_memory_without_a_mapping(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(kernels.mmap, "mmap", refuse)
    array = kernels.huge_page_empty((4, kernels.HUGE_PAGE_MIN_BYTES), np.int8)
    assert array.shape == (4, kernels.HUGE_PAGE_MIN_BYTES) and array.flags.owndata and array.flags.writeable
