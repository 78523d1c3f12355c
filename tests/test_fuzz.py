"""Property-based battery for the untrusted inputs: the encoder, the IDX reader and model
files. Whatever hypothesis draws, the answer is a correct result or a clear ValueError /
TypeError, never a wrong result, a crash or another exception from deep inside."""

import pickle
import struct
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sknitro import NitroMLPClassifier
from sknitro.datasets import read_idx
from sknitro.encoding import InputEncoder
from sknitro.persistence import InvalidModelError

INTEGER_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


@st.composite
def tables(draw):
    dtype = draw(st.sampled_from(INTEGER_DTYPES + [np.float32, np.float64]))
    shape = draw(st.tuples(st.integers(1, 30), st.integers(1, 6)))
    elements = None
    if np.dtype(dtype).kind == "f":
        largest = float(np.finfo(dtype).max)
        elements = st.floats(-largest, largest, allow_nan=False, allow_infinity=False,
                             width=np.dtype(dtype).itemsize * 8)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(X=tables(), new=st.data())
def test_the_encoder_gives_int8_or_a_clear_error(X, new):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either: every overflow is handled
        encoder = InputEncoder().fit(X)
        out = encoder.transform(X)
    assert out.dtype == np.int8 and out.shape == X.shape
    assert out.min(initial=0) >= -127
    if encoder.kind != "image":  # (images share one mean per channel, not per pixel)
        constant = (X == X[0]).all(axis=0)
        assert (out[:, constant] == 0).all()  # a constant feature encodes to 0
    if X.shape[0] > 1 and np.dtype(X.dtype).kind in "iu":  # order is kept: x <= y encodes to x' <= y'
        order = np.argsort(X[:, 0], kind="stable")
        assert (np.diff(out[order, 0].astype(int)) >= 0).all()
    other = new.draw(tables().filter(lambda a: a.shape[1] == X.shape[1]))
    try:
        encoded = encoder.transform(other)
    except ValueError as exc:
        assert "X" in str(exc) or "integer" in str(exc)
    else:
        assert encoded.dtype == np.int8 and encoded.shape == other.shape


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF]),
       shape=st.lists(st.integers(0, 5), min_size=0, max_size=5), extra=st.integers(-20, 20),
       magic=st.sampled_from([0, 0, 0, 1]), garbage=st.binary(max_size=64))
def test_the_idx_reader_reads_or_refuses(tmp_path_factory, code, shape, extra, magic, garbage):
    path = tmp_path_factory.mktemp("idx") / "file"
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    needed = int(np.prod(shape)) * itemsize
    body = (garbage * 100)[:max(0, needed + extra)] if garbage else bytes(max(0, needed + extra))
    path.write_bytes(struct.pack(">HBB", magic, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + body)
    try:
        array = read_idx(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        assert array.shape == tuple(shape) and magic == 0 and len(body) == needed and len(shape) >= 1
        assert code in (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)


@pytest.fixture(scope="module")
def fitted_state(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NitroMLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0).fit(X[:300], y[:300])
    return model, X[:50]


def _attributes(obj, prefix=""):
    """Every (path, value) of the engine objects inside a fitted model."""
    found = []
    for name, value in vars(obj).items():
        path = f"{prefix}.{name}" if prefix else name
        found.append((path, value))
        if type(value).__module__.startswith("sknitro"):
            found += _attributes(value, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if type(item).__module__.startswith("sknitro"):
                    found += _attributes(item, f"{path}.{i}")
    return found


RANDOM_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                          st.text(max_size=3), st.tuples(st.integers(-3, 9), st.integers(-3, 9)),
                          hnp.arrays(st.sampled_from(INTEGER_DTYPES + [np.float64]),
                                     hnp.array_shapes(max_dims=3, max_side=12), elements=None))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_tampered_model_loads_exactly_or_raises(fitted_state, data):
    model, X = fitted_state
    copy = pickle.loads(pickle.dumps(model))
    paths = [p for p, _ in _attributes(copy) if p.startswith(("network_", "encoder_", "classes_"))]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(RANDOM_VALUES)
    *parents, name = path.split(".")
    target = copy
    for part in parents:
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    setattr(target, name, value)
    try:
        blob = pickle.dumps(copy)
    except Exception:  # the edit broke saving itself: nothing reaches a file
        return
    try:
        loaded = pickle.loads(blob)
    except (InvalidModelError, ValueError, TypeError):
        return
    # loaded: it must predict exactly as a model with those very values would, i.e. the edit
    # was harmless (a derived value, recomputed) or a value the model can really have
    scores = loaded.decision_function(X)
    assert scores.dtype == np.int8 and scores.shape == (len(X), len(loaded.classes_))
