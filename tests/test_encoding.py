"""Tests for the int8 input boundary (algorithm.md §2, sknitro.encoding.InputEncoder).

Expected values are computed by hand in the comments: integer rule
``x' = clip(tdiv((x - mean) * 51, mad), -127, 127)`` with ``mean = tdiv(sum(x), n)`` and
``mad = tdiv(sum(|x - mean|), n)``; tdiv truncates toward zero. The MLP encodes integer
and float features with 26 in place of 51 (``TABLE_MAD_SCALE``); uint8 images always use 51.
"""

import numpy as np
import pytest

from sknitro import NitroCNNClassifier, NitroMLPClassifier
from sknitro.encoding import MAD_FLOOR, MAD_SCALE, TABLE_MAD_SCALE, InputEncoder
from sknitro.nn.state import InvalidModelError


def image_batch():
    # shape (n=2, C=2, H=1, W=2)
    X = np.zeros((2, 2, 1, 2), dtype=np.uint8)
    X[0, 0, 0] = [128, 138]
    X[1, 0, 0] = [118, 158]
    X[0, 1, 0] = [0, 255]
    X[1, 1, 0] = [100, 130]
    return X


def test_constants():
    assert MAD_SCALE == 51
    assert TABLE_MAD_SCALE == 26
    assert MAD_FLOOR == 1e-300


def test_uint8_images_per_channel():
    X = image_batch()
    enc = InputEncoder(channel_axis=1).fit(X)
    assert enc.kind == "image"
    # channel 0, minus 128: [0, 10, -10, 30] ; sum 30 -> mean tdiv(30, 4) = 7
    #   |x - 7| = [7, 3, 17, 23] = 50 -> mad tdiv(50, 4) = 12
    #   (x - 7) * 51 = [-357, 153, -867, 1173] ; / 12 -> [-29, 12, -72, 97]
    # channel 1, minus 128: [-128, 127, -28, 2] ; sum -27 -> mean tdiv(-27, 4) = -6 (floor -7)
    #   |x + 6| = [122, 133, 22, 8] = 285 -> mad tdiv(285, 4) = 71
    #   (x + 6) * 51 = [-6222, 6783, -1122, 408] ; / 71 -> [-87, 95, -15, 5]
    assert np.ravel(enc.mean).tolist() == [7, -6]
    assert np.ravel(enc.mad).tolist() == [12, 71]
    out = enc.transform(X)
    assert out.dtype == np.int8
    assert out.shape == X.shape
    assert out[0, 0, 0].tolist() == [-29, 12]
    assert out[1, 0, 0].tolist() == [-72, 97]
    assert out[0, 1, 0].tolist() == [-87, 95]
    assert out[1, 1, 0].tolist() == [-15, 5]


def test_uint8_images_global():
    X = image_batch()
    enc = InputEncoder(channel_axis=None).fit(X)
    # all 8 values minus 128: [0, 10, -10, 30, -128, 127, -28, 2] ; sum 3 -> mean tdiv(3, 8) = 0
    #   sum |x| = 0+10+10+30+128+127+28+2 = 335 -> mad tdiv(335, 8) = 41
    #   x * 51 / 41: 0 -> 0 ; 510 -> 12 ; -510 -> -12 ; 1530 -> 37 ;
    #   -6528 -> -159 -> clip -127 ; 6477 -> 157 -> clip 127 ; -1428 -> -34 ; 102 -> 2
    assert np.ravel(enc.mean).tolist() == [0]
    assert np.ravel(enc.mad).tolist() == [41]
    out = enc.transform(X)
    assert out[0, 0, 0].tolist() == [0, 12]
    assert out[1, 0, 0].tolist() == [-12, 37]
    assert out[0, 1, 0].tolist() == [-127, 127]
    assert out[1, 1, 0].tolist() == [-34, 2]


def test_uint8_transform_of_new_data_uses_training_statistics():
    enc = InputEncoder(channel_axis=1).fit(image_batch())
    X = np.zeros((1, 2, 1, 1), dtype=np.uint8)
    X[0, 0, 0, 0] = 135  # channel 0: (7 - 7) * 51 / 12 = 0
    X[0, 1, 0, 0] = 0    # channel 1: (-128 + 6) * 51 = -6222 ; / 71 -> -87
    assert enc.transform(X).ravel().tolist() == [0, -87]


def test_integer_features_per_feature():
    X = np.array([[1000, -3, 5],
                  [1003, 2, 5],
                  [990, -1, 5]], dtype=np.int64)
    enc = InputEncoder().fit(X)
    assert enc.kind == "integer"
    # feature 0: sum 2993 -> mean tdiv(2993, 3) = 997 ; |x - 997| = [3, 6, 7] = 16 -> mad 5
    #   (x - 997) * 51 = [153, 306, -357] ; / 5 -> [30, 61, -71]
    # feature 1: sum -2 -> mean tdiv(-2, 3) = 0 (floor -1) ; |x| = [3, 2, 1] = 6 -> mad 2
    #   x * 51 = [-153, 102, -51] ; / 2 -> [-76, 51, -25]   (floor: -77, 51, -26)
    # feature 2: constant 5 -> mean 5, mad 0 floored to 1 ; (5 - 5) * 51 / 1 = 0
    assert np.ravel(enc.mean).tolist() == [997, 0, 5]
    assert np.ravel(enc.mad).tolist() == [5, 2, 1]
    out = enc.transform(X)
    assert out.dtype == np.int8
    assert out.tolist() == [[30, -76, 0],
                            [61, 51, 0],
                            [-71, -25, 0]]


def test_float_features():
    X = np.array([[0.0, 10.0, 0.0],
                  [1.0, 10.0, 0.0],
                  [2.0, 10.0, 0.0],
                  [10.0, 10.0, 0.4]])
    enc = InputEncoder().fit(X)
    assert enc.kind == "float"
    # feature 0: mean 3.25 ; mad = (3.25 + 2.25 + 1.25 + 6.75) / 4 = 3.375
    #   (x - 3.25) * 51 / 3.375 = [-49.11, -34.0, -18.89, 102.0] -> rounded [-49, -34, -19, 102]
    #   (truncation would give -18 for the third value)
    # feature 1: constant -> mad 0 -> 1 ; encodes to 0
    # feature 2: mean 0.1 ; mad = (0.1 * 3 + 0.3) / 4 = 0.15, on its own scale whatever the
    #   others': (x - 0.1) * 51 / 0.15 = [-34 x3, 102]
    np.testing.assert_allclose(enc.mean, [3.25, 10.0, 0.1])
    np.testing.assert_allclose(enc.mad, [3.375, 1.0, 0.15])
    out = enc.transform(X)
    assert out.dtype == np.int8
    assert out.tolist() == [[-49, 0, -34],
                            [-34, 0, -34],
                            [-19, 0, -34],
                            [102, 0, 102]]
    # new data saturates: (100 - 3.25) * 15.11 = 1462 -> 127 ; (-100 - 3.25) * 15.11 -> -127
    new = np.array([[100.0, 10.0, 0.1], [-100.0, 10.0, 0.1]])
    assert enc.transform(new).tolist() == [[127, 0, 0], [-127, 0, 0]]


def test_float_all_constant_features_encode_to_zero():
    X = np.array([[1.5, -2.0], [1.5, -2.0], [1.5, -2.0]])
    out = InputEncoder().fit(X).transform(X)
    assert out.tolist() == [[0, 0]] * 3


@pytest.mark.parametrize("kind", ["image", "integer", "float"])
def test_output_is_int8_in_symmetric_range(kind):
    rng = np.random.default_rng(7)
    if kind == "image":
        # heavy tails: mostly mid-grey, a few black/white pixels
        X = np.full((50, 3, 4, 4), 128, dtype=np.uint8)
        X[::7] = 0
        X[::11] = 255
        enc = InputEncoder(channel_axis=1)
    elif kind == "integer":
        X = rng.integers(-10, 10, size=(200, 5)).astype(np.int64)
        X[0] = -(10**9)
        X[1] = 10**9
        enc = InputEncoder()
    else:
        X = rng.standard_cauchy(size=(200, 5))
        enc = InputEncoder()
    out = enc.fit(X).transform(X)
    assert out.dtype == np.int8
    assert out.min() == -127  # saturated, never -128
    assert out.max() == 127


@pytest.mark.parametrize("X,channel_axis", [
    (image_batch(), 1),
    (image_batch(), None),
    (np.array([[1000, -3], [1003, 2], [990, -1]], dtype=np.int64), None),
    (np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 8.0]]), None),
])
def test_fit_and_transform_do_not_modify_their_input(X, channel_axis):
    X = X.copy()
    before = X.copy()
    X.setflags(write=False)
    enc = InputEncoder(channel_axis=channel_axis).fit(X)
    out = enc.transform(X)
    np.testing.assert_array_equal(X, before)
    assert out.shape == X.shape
    assert out.dtype == np.int8


def test_features_on_different_scales_keep_their_information():
    # a feature in the millions next to one in thousandths: both spread over the int8 range
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(0, 1e6, 200), rng.normal(0, 1e-3, 200)])
    out = InputEncoder().fit(X).transform(X)
    assert 40 < np.abs(out[:, 0]).mean() < 70 and 40 < np.abs(out[:, 1]).mean() < 70


def test_huge_integers_take_the_float_rule_instead_of_wrapping():
    X = np.array([[2**62, 1], [2**62 - 5, 2], [-(2**62), 3]], dtype=np.int64)
    enc = InputEncoder().fit(X)
    assert enc.kind == "float"
    # column 0: mean 2**62 / 3 (about), mad 8/9 * 2**62: (x - mean) * 51 / mad -> 38, 38, -76
    assert enc.transform(X).tolist() == [[38, -76], [38, 0], [-76, 76]]
    U = np.array([[2**63 + 10], [5], [2**64 - 1]], dtype=np.uint64)  # past int64: no wrap to negative
    assert InputEncoder().fit(U).transform(U).ravel().tolist() == [0, -76, 76]


def test_a_float_column_near_the_float64_maximum():
    X = np.array([[1.7e308, 1.0], [-1.7e308, 2.0], [0.0, 3.0]])
    with np.errstate(all="raise"):  # no overflow reaches the user
        out = InputEncoder().fit(X).transform(X)
    assert out.tolist() == [[77, -76], [-77, 0], [0, 76]]


def test_a_float32_column_near_the_float32_maximum():
    # float32 sums pass the float32 range: the statistics are taken in float64
    X = np.array([[3e38, 1], [-3e38, 2], [3.3e38, 3]], dtype=np.float32)
    with np.errstate(all="raise"):
        encoder = InputEncoder().fit(X)
        out = encoder.transform(X)
    mean, mad = X.astype(np.float64).mean(axis=0), np.abs(X.astype(np.float64) - X.astype(np.float64).mean(axis=0))
    assert np.allclose(encoder.mean, mean) and np.allclose(encoder.mad, mad.mean(axis=0))
    assert out[:, 1].tolist() == [-76, 0, 76] and out[2, 0] > 0 > out[1, 0]


def test_an_integer_model_refuses_huge_or_float_input():
    enc = InputEncoder().fit(np.arange(12, dtype=np.int64).reshape(6, 2))
    with pytest.raises(ValueError, match="beyond"):
        enc.transform(np.array([[2**60, 1]], dtype=np.int64))
    with pytest.raises(ValueError, match="convert them to integers"):
        enc.transform(np.array([[1.5, 1.0]]))


@pytest.mark.parametrize("bad", [[[-1, 3, 4]], [[300, 3, 4]], [[0.5, 3, 4]]])
def test_an_image_model_refuses_what_is_not_a_pixel(bad):
    enc = InputEncoder().fit(np.tile(np.array([[0, 255, 10]], np.uint8), (5, 1)))
    with pytest.raises(ValueError, match=r"whole pixel values in \[0, 255\]"):
        enc.transform(np.array(bad))
    good = enc.transform(np.array([[0, 255, 10]], np.int64))  # other dtypes of real pixels are fine
    assert good.tolist() == enc.transform(np.array([[0, 255, 10]], np.uint8)).tolist()


def test_table_scale_for_integer_and_float_features():
    # the integer example above with 26: (x - 997) * 26 = [78, 156, -182] ; / 5 -> [15, 31, -36]
    #   x * 26 = [-78, 52, -26] ; / 2 -> [-39, 26, -13] ; the constant feature -> 0
    X = np.array([[1000, -3, 5], [1003, 2, 5], [990, -1, 5]], dtype=np.int64)
    enc = InputEncoder(feature_scale=TABLE_MAD_SCALE).fit(X)
    assert enc.kind == "integer" and enc.scale == 26
    assert enc.transform(X).tolist() == [[15, -39, 0], [31, 26, 0], [-36, -13, 0]]
    # the float example: (x - 3.25) * 26 / 3.375 = [-25.04, -17.33, -9.63, 52.0] ;
    #   (x - 0.1) * 26 / 0.15 = [-17.33 x3, 52]
    X = np.array([[0.0, 10.0, 0.0], [1.0, 10.0, 0.0], [2.0, 10.0, 0.0], [10.0, 10.0, 0.4]])
    enc = InputEncoder(feature_scale=TABLE_MAD_SCALE).fit(X)
    assert enc.kind == "float" and enc.scale == 26
    assert enc.transform(X).tolist() == [[-25, 0, -17], [-17, 0, -17], [-10, 0, -17], [52, 0, 52]]


def test_uint8_images_keep_their_scale_whatever_the_feature_scale():
    X = image_batch()
    enc = InputEncoder(channel_axis=1, feature_scale=TABLE_MAD_SCALE).fit(X)
    assert enc.scale == MAD_SCALE
    np.testing.assert_array_equal(enc.lookup_table, InputEncoder(channel_axis=1).fit(X).lookup_table)


def test_the_mlp_encodes_tables_with_the_table_scale_and_images_as_before():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    floats = rng.normal(size=(40, 4))
    pixels = rng.integers(0, 256, size=(40, 4)).astype(np.uint8)
    for X, scale in ((floats, TABLE_MAD_SCALE), (np.rint(floats * 100).astype(np.int64), TABLE_MAD_SCALE),
                     (pixels, MAD_SCALE)):
        assert NitroMLPClassifier(max_iter=1, random_state=0).fit(X, y).encoder_.scale == scale
    images = rng.normal(size=(40, 1, 4, 4))  # the CNN keeps 51 for every input
    assert NitroCNNClassifier(architecture=[4], max_iter=1, random_state=0).fit(images, y).encoder_.scale == MAD_SCALE


@pytest.mark.parametrize("bad", [0, 64, 2.0, True])
def test_feature_scale_is_checked(bad):
    with pytest.raises(ValueError, match="feature_scale"):
        InputEncoder(feature_scale=bad).fit(np.ones((3, 2)))


def test_an_encoder_saved_before_scales_were_recorded_loads_with_51():
    X = np.array([[1000, -3, 5], [1003, 2, 5], [990, -1, 5]], dtype=np.int64)
    enc = InputEncoder().fit(X)
    state = {k: v for k, v in vars(enc).items() if k not in ("scale", "feature_scale")}
    old = InputEncoder.__new__(InputEncoder)
    old.__setstate__(state)
    assert old.scale == old.feature_scale == MAD_SCALE
    np.testing.assert_array_equal(old.transform(X), enc.transform(X))
    with pytest.raises(InvalidModelError, match="scale"):
        InputEncoder.__new__(InputEncoder).__setstate__({**vars(enc), "scale": 0})
    image = InputEncoder().fit(image_batch())
    with pytest.raises(InvalidModelError, match="uint8 images"):
        InputEncoder.__new__(InputEncoder).__setstate__({**vars(image), "scale": 26})
