"""Hand-computed tests of the integer layers, activations, init, SGD and blocks.

Every expected number below is worked out by hand in the comments, following
algorithm.md (§3 layers, §4 blocks, §5 IntegerSGD, §6 init, §7 schedules); ``tdiv``
truncates toward zero, so e.g. tdiv(-202, 4) = -50 (floor division would give -51).
"""

import numpy as np
import pytest

from sknitro.nn.blocks import LinearBlock, LinearHead
from sknitro.nn.init import (
    LEAKY_GAINS,
    RELU_GAIN,
    TANH_GAIN,
    integer_uniform,
    kaiming_bound,
    xavier_bound,
)
from sknitro.nn.layers import (
    IntegerDropout,
    IntegerLinear,
    NitroReLU,
    PocketLeakyReLU,
    PocketReLU,
    PocketTanh,
    make_activation,
    nitro_scale,
    scale_factor,
)
from sknitro.nn.kernels import weight_grad_bound
from sknitro.nn.optim import IntegerSGD, PlateauSchedule, integer_sgd_step


def set_weight(layer, w, bias=None):
    layer.weight = np.array(w, dtype=np.int32)
    if bias is not None:
        layer.bias = np.array(bias, dtype=np.int32)
    layer.refresh_bounds()


def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------------------
# IntegerLinear


def make_linear():
    layer = IntegerLinear(3, 2, init_bound=5, rng=rng())
    # W (out=2, in=3)
    set_weight(layer, [[1, -2, 3],
                       [-4, 5, 6]])
    return layer


def test_integer_linear_forward():
    layer = make_linear()
    x = np.array([[10, 20, -30],
                  [-1, 0, 127]], dtype=np.int8)
    # z = x @ W.T
    # z[0,0] = 10*1 + 20*-2 + -30*3 = 10 - 40 - 90 = -120
    # z[0,1] = 10*-4 + 20*5 + -30*6 = -40 + 100 - 180 = -120
    # z[1,0] = -1*1 + 0*-2 + 127*3 = -1 + 381 = 380
    # z[1,1] = -1*-4 + 0*5 + 127*6 = 4 + 762 = 766
    z = layer.forward(x)
    assert z.tolist() == [[-120, -120], [380, 766]]
    assert z.dtype in (np.int32, np.int64)
    assert layer.weight_bound == 6


def test_integer_linear_forward_with_bias():
    layer = IntegerLinear(3, 2, init_bound=5, rng=rng(), bias=True)
    set_weight(layer, [[1, -2, 3], [-4, 5, 6]], bias=[7, -8])
    x = np.array([[10, 20, -30]], dtype=np.int8)
    # [-120 + 7, -120 - 8]
    assert layer.forward(x).tolist() == [[-113, -128]]


def test_integer_linear_weight_grad():
    layer = make_linear()
    x = np.array([[10, 20, -30],
                  [-1, 0, 127]], dtype=np.int8)
    delta = np.array([[2, -3],
                      [5, 1]], dtype=np.int16)
    # G = delta.T @ x, shape (out=2, in=3)
    # G[0] = 2*[10,20,-30] + 5*[-1,0,127] = [20-5, 40+0, -60+635] = [15, 40, 575]
    # G[1] = -3*[10,20,-30] + 1*[-1,0,127] = [-30-1, -60+0, 90+127] = [-31, -60, 217]
    grad, bound = layer.weight_grad(delta, x)
    assert grad.tolist() == [[15, 40, 575], [-31, -60, 217]]
    # the second value is an upper bound of max|G| (used to rule out overflow in SGD)
    assert int(bound) >= 575


def test_integer_linear_weight_grad_bound_holds_in_the_worst_case():
    layer = make_linear()
    x = np.full((2, 3), -128, dtype=np.int8)
    delta = np.full((2, 2), -300, dtype=np.int16)
    # every G entry = 2 * (-300) * (-128) = 76800: the bound must cover it
    grad, bound = layer.weight_grad(delta, x)
    assert grad.tolist() == [[76800] * 3] * 2
    assert int(bound) >= 76800


def test_integer_linear_weight_grad_bound_is_the_column_l1_norm():
    layer = make_linear()
    x = np.array([[127, -128, 5], [1, 2, 3], [-7, 0, 9]], dtype=np.int8)
    delta = np.array([[1000, -1], [-2, 3], [4, 5]], dtype=np.int32)
    grad, bound = layer.weight_grad(delta, x)
    # column L1 norms of delta: 1000 + 2 + 4 = 1006 and 1 + 3 + 5 = 9; max|x| (int8) = 128
    assert bound == 128 * 1006
    assert grad.tolist() == [[127000 - 2 - 28, -128000 - 4, 5000 - 6 + 36],
                             [-127 + 3 - 35, 128 + 6, -5 + 9 + 45]]
    # tighter than max|delta| * max|x| * batch = 1000 * 128 * 3, and still a bound
    assert np.abs(grad).max() <= bound < 1000 * 128 * 3


def test_integer_linear_weight_grad_bound_with_a_known_delta_bound():
    layer = make_linear()
    x = np.array([[127, -128, 5], [1, 2, 3], [-7, 0, 9]], dtype=np.int8)
    delta = np.array([[255, -1], [-2, 3], [4, 5]], dtype=np.int16)
    # max|delta| <= 255 is known: the factor bound 128 * 255 * 3 fits int32, no pass over delta
    assert weight_grad_bound(delta, x, delta_bound=255) == 128 * 255 * 3
    grad, bound = layer.weight_grad(delta, x, delta_bound=255)
    assert grad.tolist() == (delta.T.astype(object) @ x.astype(object)).tolist()
    assert bound == 128 * 255 * 3
    # a factor bound past int32 is not used: the column L1 norm (255 + 2 + 4) is
    assert weight_grad_bound(delta, x, delta_bound=2**30) == 128 * 261
    # a column L1 norm the caller has (from the activation's backward kernel) is used as is
    assert weight_grad_bound(delta, x, delta_bound=255, column_l1=261) == 128 * 261


@pytest.mark.parametrize("seed", range(20))
def test_integer_linear_weight_grad_bound_holds_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    layer = make_linear()
    x = rng.integers(-128, 128, size=(17, 3), dtype=np.int8)
    delta = rng.integers(-(2**20), 2**20, size=(17, 2)).astype(np.int32)
    grad, bound = layer.weight_grad(delta, x)
    assert grad.tolist() == (delta.T.astype(object) @ x.astype(object)).tolist()
    assert np.abs(grad.astype(np.int64)).max() <= bound


def test_integer_linear_input_grad():
    layer = make_linear()
    delta = np.array([[2, -3],
                      [5, 1]], dtype=np.int16)
    # delta @ W, shape (batch=2, in=3)
    # row0 = 2*[1,-2,3] + -3*[-4,5,6] = [2+12, -4-15, 6-18] = [14, -19, -12]
    # row1 = 5*[1,-2,3] + 1*[-4,5,6] = [5-4, -10+5, 15+6] = [1, -5, 21]
    assert layer.input_grad(delta).tolist() == [[14, -19, -12], [1, -5, 21]]


def test_integer_linear_init_is_int32_within_bound():
    layer = IntegerLinear(50, 40, init_bound=3, rng=rng())
    assert layer.weight.dtype == np.int32
    assert layer.weight.shape == (40, 50)
    assert layer.weight.min() == -3 and layer.weight.max() == 3  # 2000 draws hit both ends
    assert layer.weight_bound == 3
    assert layer.bias is None


# ---------------------------------------------------------------------------------------
# NITRO scaling


def test_scale_factor():
    assert scale_factor(2, 3) == 12  # 2**2 * 3
    assert scale_factor(8, 784) == 200704  # 256 * 784
    assert scale_factor(0, 5) == 5


def test_nitro_scale_truncates_then_clips():
    sf = scale_factor(2, 3)  # 12
    z = np.array([-1000, 1000, 70000, -70000, -13, -11, 13, 0], dtype=np.int64)
    # -1000/12 = -83.3 -> -83 ; 1000/12 -> 83 ; 70000/12 = 5833 -> clip 127 ;
    # -70000/12 -> clip -127 ; -13/12 -> -1 (floor: -2) ; -11/12 -> 0 (floor: -1) ;
    # 13/12 -> 1 ; 0 -> 0
    y = nitro_scale(z, sf)
    assert y.dtype == np.int8
    assert y.tolist() == [-83, 83, 127, -127, -1, 0, 1, 0]


# ---------------------------------------------------------------------------------------
# activations

S = np.array([-127, -5, -4, -3, 0, 5, 126, 127], dtype=np.int8)


def test_nitro_relu_forward_alpha4():
    act = NitroReLU(4)
    assert act.mean_correction == 36
    # a = clip(s,0,127) + tdiv(clip(s,-127,0), 4) - 36
    # -127: -31 - 36 = -67 ; -5: -1 - 36 = -37 ; -4: -1 - 36 = -37 ;
    # -3: 0 - 36 = -36 (floor would give -37) ; 0: -36 ; 5: -31 ; 126: 90 ; 127: 91
    a = act.forward(S)
    assert a.dtype == np.int8
    assert a.tolist() == [-67, -37, -37, -36, -36, -31, 90, 91]


@pytest.mark.parametrize("alpha,mu", [(3, 31), (4, 36), (5, 38), (7, 40), (8, 42),
                                      (10, 43), (15, 44), (16, 44), (20, 45)])
def test_nitro_relu_mean_table(alpha, mu):
    act = NitroReLU(alpha)
    # s = 0 -> -mu ; s = 127 -> 127 - mu
    assert act.forward(np.array([0, 127], dtype=np.int8)).tolist() == [-mu, 127 - mu]


def test_nitro_relu_rejects_unsupported_alpha():
    with pytest.raises(ValueError):
        NitroReLU(6)


def test_nitro_relu_backward():
    act = NitroReLU(4)
    delta = np.full(S.shape, 8, dtype=np.int32)
    # g = 4 on [-127, 0): tdiv(8, 4) = 2 ; g = 1 on [0, 127): 8 ; s = 127: 0
    assert act.backward(delta, S).tolist() == [2, 2, 2, 2, 8, 8, 8, 0]
    delta = np.full(S.shape, -7, dtype=np.int32)
    # tdiv(-7, 4) = -1 (floor: -2)
    assert act.backward(delta, S).tolist() == [-1, -1, -1, -1, -7, -7, -7, 0]
    # s < -127 (outside the pre-activation range) also gives 0
    s = np.array([-128, -127], dtype=np.int16)
    assert act.backward(np.array([8, 8]), s).tolist() == [0, 2]


def test_pocket_leaky_relu_has_no_mean_correction():
    act = PocketLeakyReLU(4)
    # clip(s,0,127) + tdiv(clip(s,-127,0), 4)
    # -127 -> -31 ; -5 -> -1 ; -4 -> -1 ; -3 -> 0 ; 0 -> 0 ; 5 ; 126 ; 127
    assert act.forward(S).tolist() == [-31, -1, -1, 0, 0, 5, 126, 127]
    delta = np.full(S.shape, 8, dtype=np.int32)
    assert act.backward(delta, S).tolist() == [2, 2, 2, 2, 8, 8, 8, 0]
    # alpha = 3: -127 -> tdiv(-127, 3) = -42 ; backward tdiv(8, 3) = 2
    act3 = PocketLeakyReLU(3)
    assert act3.forward(np.array([-127, -2], dtype=np.int8)).tolist() == [-42, 0]
    assert act3.backward(np.array([8, -8]), np.array([-1, -1], dtype=np.int8)).tolist() == [2, -2]


def test_pocket_relu():
    act = PocketReLU()
    s = np.array([-128, -127, -1, 0, 1, 126, 127, 128], dtype=np.int16)
    assert act.forward(s).tolist() == [0, 0, 0, 0, 1, 126, 127, 127]
    assert act.forward(s).dtype == np.int8
    delta = np.full(s.shape, 5, dtype=np.int32)
    # delta where 0 < s <= 127, else 0
    assert act.backward(delta, s).tolist() == [0, 0, 0, 0, 5, 5, 5, 0]


TANH_S = np.array([128, 127, 126, 75, 74, 32, 31, 0, -31, -32, -74, -75, -76, -127, -128],
                  dtype=np.int16)


def test_pocket_tanh_forward_piece_boundaries():
    act = PocketTanh()
    # 128, 127 -> 127
    # 126 -> tdiv(126,3)+83 = 42+83 = 125 ; 75 -> 25+83 = 108
    # 74 -> 74+32 = 106 ; 32 -> 64
    # 31 -> 62 ; 0 -> 0 ; -31 -> -62
    # -32 -> -32-32 = -64 ; -74 -> -106
    # -75 -> tdiv(-75,3)-83 = -25-83 = -108 ; -76 -> -25-83 = -108 (floor: -26-83 = -109)
    # -127 -> tdiv(-127,3)-83 = -42-83 = -125 ; -128 -> -127
    a = act.forward(TANH_S)
    assert a.dtype == np.int8
    assert a.tolist() == [127, 127, 125, 108, 106, 64, 62, 0, -62, -64, -106, -108, -108,
                          -125, -127]


def test_pocket_tanh_backward_slopes():
    act = PocketTanh()
    delta = np.full(TANH_S.shape, 16, dtype=np.int32)
    # g = 8 on [75,127), 2 on [32,75), 1 on [-31,32), 2 on [-74,-31), 8 on [-127,-74),
    # 0 outside [-127, 127)
    # 128,127: 0 ; 126,75: 2 ; 74,32: 8 ; 31,0,-31: 16 ; -32,-74: 8 ; -75,-76,-127: 2 ; -128: 0
    assert act.backward(delta, TANH_S).tolist() == [0, 0, 2, 2, 8, 8, 16, 16, 16, 8, 8,
                                                    2, 2, 2, 0]
    delta = np.full(TANH_S.shape, -17, dtype=np.int32)
    # tdiv(-17, 8) = -2 (floor -3) ; tdiv(-17, 2) = -8 (floor -9)
    assert act.backward(delta, TANH_S).tolist() == [0, 0, -2, -2, -8, -8, -17, -17, -17,
                                                    -8, -8, -2, -2, -2, 0]


def test_make_activation():
    act = make_activation("nitro_relu", 8)
    assert isinstance(act, NitroReLU) and act.alpha == 8 and act.mean_correction == 42
    assert isinstance(make_activation("pocket_tanh"), PocketTanh)
    with pytest.raises(ValueError):
        make_activation("relu")


# ---------------------------------------------------------------------------------------
# dropout


def test_dropout_rescale_and_forward_backward():
    drop = IntegerDropout(0.3)
    # P = 30: R = 100000 // 70 = 1428
    assert drop.rescale == 1428
    x = np.array([100, 100, -100, 127, -127, 0], dtype=np.int8)
    mask = np.array([True, False, True, True, True, True])
    # tdiv(100 * 1428, 1000) = tdiv(142800, 1000) = 142 ; dropped -> 0 ;
    # -100 -> -142 (floor: -143) ; 127 -> tdiv(181356, 1000) = 181 ; -127 -> -181 ; 0
    out = drop.forward(x, mask)
    assert out.tolist() == [142, 0, -142, 181, -181, 0] and out.dtype == np.int16  # past int8
    delta = np.array([100, 100, -100, 7, -7, 1000], dtype=np.int32)
    # same rescale and mask: 7 -> tdiv(9996, 1000) = 9 ; -7 -> -9 ; 1000 -> 1428
    assert drop.backward(delta, mask).tolist() == [142, 0, -142, 9, -9, 1428]


def test_dropout_output_is_int8_where_it_fits():
    # NITRO-ReLU's outputs lie in [-67, 91]; at p = 0.1 (R = 1111) kept values stay within int8:
    # tdiv(91 * 1111, 1000) = 101, tdiv(-67 * 1111, 1000) = -74 (floor: -75). The pair kernels
    # take the next layer's input as int8 only.
    drop = IntegerDropout(0.1)
    activations = NitroReLU(4).forward(np.arange(-128, 128).astype(np.int8))
    assert activations.min() == -67 and activations.max() == 91
    mask = np.arange(256) % 3 != 1  # the extremes kept
    out = drop.forward(activations, mask)
    assert out.dtype == np.int8
    expected = np.where(mask, np.trunc(activations.astype(np.int64) * 1111 / 1000), 0)
    np.testing.assert_array_equal(out, expected)
    assert out.max() == 101 and out.min() == -74
    # one value past int8 makes the whole output int16: tdiv(127 * 1111, 1000) = 141
    out = drop.forward(np.array([127, -67], np.int8), np.array([True, True]))
    assert out.dtype == np.int16 and out.tolist() == [141, -74]


@pytest.mark.parametrize("p,r", [(0.05, 1052), (0.1, 1111), (0.5, 2000), (0.95, 20000)])
def test_dropout_rescale_table(p, r):
    # 100000 // 95 = 1052 ; 100000 // 90 = 1111 ; 100000 // 50 = 2000 ; 100000 // 5 = 20000
    assert IntegerDropout(p).rescale == r


@pytest.mark.parametrize("p", [0.0, 0.33, 0.97, 1.0, -0.1])
def test_dropout_rejects_invalid_rates(p):
    with pytest.raises(ValueError):
        IntegerDropout(p)


def test_dropout_mask_keeps_about_one_minus_p():
    mask = IntegerDropout(0.3).draw_mask(np.random.default_rng(123), (200, 500))
    assert mask.dtype == bool
    assert abs(mask.mean() - 0.7) < 0.005  # 100000 draws: std of the mean ~0.0015


# ---------------------------------------------------------------------------------------
# initialisation


def test_kaiming_bound_published_example():
    # (1372 * 128 * 1732) // (isqrt(784) * 10**6) = 304166912 // 28000000 = 10
    assert kaiming_bound(784, LEAKY_GAINS[4]) == 10
    assert NitroReLU(4).init_bound(784, 100) == 10
    # ReLU gain: 1414 * 128 * 1732 = 313478144 ; // 28000000 = 11
    assert kaiming_bound(784, RELU_GAIN) == 11
    assert PocketReLU().init_bound(784, 100) == 11
    # fan_in 100: isqrt = 10 ; 304166912 // 10**7 = 30
    assert kaiming_bound(100, LEAKY_GAINS[4]) == 30
    # fan_in 1: 304166912 // 10**6 = 304, capped at 64
    assert kaiming_bound(1, LEAKY_GAINS[4]) == 64


def test_xavier_bound_example():
    # (1667 * 128 * 2449) = 522557824 ; fan_in + fan_out = 110 -> isqrt 10 -> // 10**7 = 52
    assert xavier_bound(100, 10) == 52
    assert xavier_bound(100, 10, TANH_GAIN) == 52
    # 784 + 100 = 884 -> isqrt 29 -> 522557824 // 29000000 = 18
    assert xavier_bound(784, 100) == 18
    assert PocketTanh().init_bound(784, 100) == 18
    # fan 1 + 1: isqrt(2) = 1 -> 522, capped at 64
    assert xavier_bound(1, 1) == 64


def test_integer_uniform_range_and_dtype():
    w = integer_uniform(np.random.default_rng(5), 10, (100, 100))
    assert w.dtype == np.int32
    assert w.min() == -10 and w.max() == 10
    assert set(np.unique(w).tolist()) == set(range(-10, 11))
    # a bound of 0 still draws from [-1, 1]
    w = integer_uniform(np.random.default_rng(5), 0, (100,))
    assert set(np.unique(w).tolist()) == {-1, 0, 1}


# ---------------------------------------------------------------------------------------
# IntegerSGD


def test_integer_sgd_step_hand_example():
    w = np.array([[100, -75, 7, -7]], dtype=np.int32)
    g = np.array([[1000, -1000, -1500, 1499]], dtype=np.int64)
    # divisor 6, decay_inv 50 (max|W| = 100 >= 50: decay applies)
    # tdiv(G, 6)  = [166, -166, -250, 249]     (-1000/6 = -166.7 -> -166, floor -167)
    # tdiv(W, 50) = [2, -1, 0, 0]              (-75/50 = -1.5 -> -1, floor -2)
    # update      = [168, -167, -250, 249]
    # W - update  = [-68, 92, 257, -256]
    bound = integer_sgd_step(w, g, grad_bound=1500, param_bound=100, divisor=6, decay_inv=50)
    assert w.tolist() == [[-68, 92, 257, -256]]
    assert w.dtype == np.int32
    assert bound == 257


def test_integer_sgd_step_decay_only_and_disabled():
    zero = np.zeros((1, 2), dtype=np.int64)
    w = np.array([[100, -75]], dtype=np.int32)
    # decay only: tdiv([100, -75], 50) = [2, -1] -> [98, -74]
    assert integer_sgd_step(w, zero, 0, 100, divisor=1, decay_inv=50) == 98
    assert w.tolist() == [[98, -74]]
    # decay_inv = 0 disables decay
    integer_sgd_step(w, zero, 0, 98, divisor=1, decay_inv=0)
    assert w.tolist() == [[98, -74]]


def test_integer_sgd_step_refuses_int32_overflow():
    w = np.array([[2**31 - 10]], dtype=np.int32)
    g = np.array([[-100]], dtype=np.int64)
    # 2**31 - 10 + 100 would wrap around in int32
    with pytest.raises(OverflowError):
        integer_sgd_step(w, g, 100, 2**31 - 10, divisor=1, decay_inv=0)


def test_integer_sgd_optimizer_step_on_layer():
    layer = IntegerLinear(2, 1, init_bound=1, rng=rng(), bias=True)
    set_weight(layer, [[100, -75]], bias=[-80])
    x = np.array([[10, -20],
                  [5, 7]], dtype=np.int8)
    delta = np.array([[13],
                      [-1]], dtype=np.int16)
    # G = delta.T @ x = [13*10 + -1*5, 13*-20 + -1*7] = [125, -267]
    # divisor = lr_inv * amp = 2 * 3 = 6
    # tdiv(G, 6)  = [20, -44]      (125/6 = 20.8 ; -267/6 = -44.5 -> -44, floor -45)
    # tdiv(W, 50) = [2, -1]        (max|W| = 100 >= 50)
    # W_new = [100 - 22, -75 + 45] = [78, -30]
    # bias: g_b = 13 - 1 = 12 -> tdiv(12, 6) = 2 ; decay tdiv(-80, 50) = -1 (|b| = 80 >= 50)
    #       b_new = -80 - (2 - 1) = -81
    sgd = IntegerSGD(lr_inv=2)
    sgd.step(layer, delta, x, amp=3, decay_inv=50)
    assert layer.weight.tolist() == [[78, -30]]
    assert layer.bias.tolist() == [-81]
    assert layer.weight.dtype == np.int32
    assert layer.weight_bound == 78
    assert layer.bias_bound == 81


# ---------------------------------------------------------------------------------------
# PlateauSchedule


def test_plateau_schedule():
    sched = PlateauSchedule(factor=3, patience=2, min_delta_permille=10)
    # epoch 1: 500 permille, the first value: best, and the plateau reference
    assert sched.update(500, 1000, 512) == (512, True)
    assert sched.best_permille == 500 and sched.epochs_since_best == 0
    # 509: a new best (any gain counts for the best model / early stopping) ...
    assert sched.update(509, 1000, 512) == (512, True)
    assert sched.epochs_since_best == 0
    # ... but 509 < 500 + 10: one epoch on the plateau; 505: two = patience -> lr_inv * 3
    assert sched.update(505, 1000, 512) == (1536, False)
    assert sched.epochs_since_best == 1
    # the plateau count restarts from the level at the change (505): 508, 514 stay below 515
    assert sched.update(508, 1000, 1536) == (1536, False)
    assert sched.update(514, 1000, 1536) == (4608, True)  # 514 is a new best all the same
    assert sched.best_permille == 514 and sched.epochs_since_best == 0
    # 524 >= 514 + 10: the plateau reference moves up, no change of lr_inv
    assert sched.update(524, 1000, 4608) == (4608, True)
    assert sched.update(500, 1000, 4608) == (4608, False)
    assert sched.epochs_since_best == 1 and sched.epochs_since_change == 1


def test_plateau_schedule_permille_and_constant_factor():
    sched = PlateauSchedule(factor=1, patience=1, min_delta_permille=10)
    # 2 / 3 -> 2000 // 3 = 666 permille
    assert sched.update(2, 3, 512) == (512, True)
    assert sched.best_permille == 666
    # factor 1 never changes lr_inv
    for k in range(1, 5):
        assert sched.update(2, 3, 512) == (512, False)
        assert sched.epochs_since_best == k


# ---------------------------------------------------------------------------------------
# learning head and dense block (algorithm.md §4)


def test_linear_head_learn():
    head = LinearHead(2, 2, init_bound=1, scale_bits=1, rng=rng())
    assert head.scale == 4  # 2**1 * fan_in 2
    set_weight(head.linear, [[3, 1],
                             [-2, 6]])
    x = np.array([[41, -20],
                  [10, 30]], dtype=np.int8)
    y = np.array([[32, 0],
                  [0, 32]], dtype=np.int8)
    # z = x @ W.T = [[123-20, -82-120], [30+30, -20+180]] = [[103, -202], [60, 160]]
    # yhat = tdiv(z, 4) = [[25, -50], [15, 40]]          (-202/4 = -50.5 -> -50)
    # e = yhat - y = [[-7, -50], [15, 8]]
    # input grad e @ W_old = [[-21+100, -7-300], [45-16, 15+48]] = [[79, -307], [29, 63]]
    # G = e.T @ x = [[-7*41 + 15*10, -7*-20 + 15*30], [-50*41 + 8*10, -50*-20 + 8*30]]
    #             = [[-137, 590], [-1970, 1240]]
    # lr_inv 8, amp 1: tdiv(G, 8) = [[-17, 73], [-246, 155]]
    # decay_inv 2 (max|W| = 6 >= 2): tdiv(W, 2) = [[1, 0], [-1, 3]]
    # W_new = W - (tdiv(G,8) + tdiv(W,2)) = [[3+16, 1-73], [-2+247, 6-158]]
    #       = [[19, -72], [245, -152]]
    # squared error = 49 + 2500 + 225 + 64 = 2838
    yhat, input_grad, sq = head.learn(x, y, IntegerSGD(8), decay_inv=2, propagate=True)
    assert yhat.tolist() == [[25, -50], [15, 40]]
    assert yhat.dtype == np.int8
    assert input_grad.tolist() == [[79, -307], [29, 63]]
    assert head.linear.weight.tolist() == [[19, -72], [245, -152]]
    assert head.linear.weight_bound == 245
    assert sq == 2838
    assert isinstance(sq, int)


def test_linear_head_error_does_not_wrap_in_int8():
    head = LinearHead(1, 1, init_bound=1, scale_bits=0, rng=rng())
    set_weight(head.linear, [[-1]])
    x = np.array([[127]], dtype=np.int8)
    y = np.array([[32]], dtype=np.int8)
    # yhat = tdiv(-127, 1) = -127 ; e = -127 - 32 = -159 (wraps to 97 in int8)
    # propagate=False -> no input gradient ; sq = 159**2 = 25281
    # G = -159 * 127 = -20193 ; lr_inv 1000: tdiv(-20193, 1000) = -20 ; W = -1 + 20 = 19
    yhat, input_grad, sq = head.learn(x, y, IntegerSGD(1000), decay_inv=0)
    assert yhat.tolist() == [[-127]]
    assert input_grad is None
    assert sq == 25281
    assert head.linear.weight.tolist() == [[19]]


def test_linear_block_learn():
    block = LinearBlock(2, 2, 2, NitroReLU(4), scale_bits=1, rng=rng())
    assert block.scale == 4 and block.head.scale == 4  # 2**1 * 2 each
    set_weight(block.linear, [[2, -1],
                              [1, 3]])
    set_weight(block.head.linear, [[4, -2],
                                   [1, 3]])
    x = np.array([[100, 60],
                  [-60, 80]], dtype=np.int8)
    y = np.array([[32, 0],
                  [0, 32]], dtype=np.int8)

    # step 1: forward
    # z = x @ W1.T = [[200-60, 100+180], [-120-80, -60+240]] = [[140, 280], [-200, 180]]
    # s = tdiv(z, 4) = [[35, 70], [-50, 45]]
    # h = NITRO-ReLU(s) = [[35-36, 70-36], [tdiv(-50,4)-36, 45-36]] = [[-1, 34], [-48, 9]]
    #     (tdiv(-50, 4) = -12, floor would be -13)
    cache = block.forward_train(x, rng())
    assert cache.pre_activation.tolist() == [[35, 70], [-50, 45]]
    assert cache.output.tolist() == [[-1, 34], [-48, 9]]
    np.testing.assert_array_equal(block.forward(x), cache.output)

    # step 2: head forward
    # zh = h @ W2.T = [[-4-68, -1+102], [-192-18, -48+27]] = [[-72, 101], [-210, -21]]
    # yhat = tdiv(zh, 4) = [[-18, 25], [-52, -5]]    (-52.5 -> -52 ; -5.25 -> -5)
    # step 3: e = yhat - y = [[-50, 25], [-52, -37]]
    # step 4: d = e @ W2_old = [[-200+25, 100+75], [-208-37, 104-111]] = [[-175, 175], [-245, -7]]
    #   head update (lr_inv 8, amp 1, head_decay_inv 3, max|W2| = 4 >= 3):
    #   G2 = e.T @ h = [[50+2496, -1700-468], [-25+1776, 850-333]] = [[2546, -2168], [1751, 517]]
    #   tdiv(G2, 8) = [[318, -271], [218, 64]] ; tdiv(W2, 3) = [[1, 0], [0, 1]]
    #   W2_new = [[4-319, -2+271], [1-218, 3-65]] = [[-315, 269], [-217, -62]]
    # step 5: scaling is the identity; NITRO-ReLU backward at s:
    #   s >= 0 -> d ; s < 0 -> tdiv(d, 4): delta = [[-175, 175], [tdiv(-245,4), -7]]
    #   = [[-175, 175], [-61, -7]]                       (-61.25 -> -61, floor -62)
    #   G1 = delta.T @ x = [[-17500+3660, -10500-4880], [17500+420, 10500-560]]
    #      = [[-13840, -15380], [17920, 9940]]
    #   amp 4 -> divisor 32: tdiv(G1, 32) = [[-432, -480], [560, 310]]
    #      (-432.5 -> -432 ; -480.6 -> -480 ; 310.6 -> 310)
    #   fwd_decay_inv 2 (max|W1| = 3 >= 2): tdiv(W1, 2) = [[1, 0], [0, 1]]   (-1/2 -> 0)
    #   W1_new = W1 - (tdiv(G1,32) + tdiv(W1,2)) = [[2+431, -1+480], [1-560, 3-311]]
    #          = [[433, 479], [-559, -308]]
    yhat = block.learn(cache, y, IntegerSGD(8), amp=4, fwd_decay_inv=2, head_decay_inv=3)
    assert yhat.tolist() == [[-18, 25], [-52, -5]]
    assert block.head.linear.weight.tolist() == [[-315, 269], [-217, -62]]
    assert block.linear.weight.tolist() == [[433, 479], [-559, -308]]
    assert block.linear.weight_bound == 559
    assert block.head.linear.weight_bound == 315
    # the cached input is not modified (nothing flows into the previous block)
    assert x.tolist() == [[100, 60], [-60, 80]]


@pytest.mark.parametrize("name, alpha", [("nitro_relu", a) for a in (3, 4, 5, 7, 8, 10, 15, 16, 20)]
                         + [("pocket_leaky_relu", 4), ("pocket_relu", 4), ("pocket_tanh", 4)])
def test_tabulated_activation_equals_its_rule_on_every_int8(name, alpha):
    from sknitro.nn.layers import make_activation

    act = make_activation(name, alpha)
    s8 = np.arange(-128, 128).astype(np.int8)
    s16 = s8.astype(np.int16)  # takes the rule itself, not the table
    np.testing.assert_array_equal(act.forward(s8), act.forward(s16))
    delta = np.random.default_rng(0).integers(-10**6, 10**6, size=256).astype(np.int32)
    np.testing.assert_array_equal(act.backward(delta, s8), act.backward(delta, s16))
