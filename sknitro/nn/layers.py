"""Integer layers of algorithm.md §3, each with its forward and backward side by side.

Conventions: activations are int8 in ``[-127, 127]``; pre-activations and gradients are
int32 or int64 (whatever :func:`~sknitro.backend.exact_matmul` proves wide enough);
weights are int32. ``delta`` is always the integer gradient with respect to a layer's output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import abs_max, array_namespace, to_namespace
from . import graph, kernels
from .functional import INT8_MAX, tdiv
from .kernels import nitro_scale, weight_grad
from .init import LEAKY_GAINS, RELU_GAIN, integer_uniform, kaiming_bound, xavier_bound
from .state import InvalidModelError, check_array, check_int, checked_state

INT32_MAX = 2**31 - 1


class IntegerLinear:
    """``z = x @ W.T (+ b)`` with int32 weights ``W`` of shape ``(out_features, in_features)``.

    ``weight_bound`` is kept equal to ``max|W|`` after every update, so that the exact
    GEMM can prove its fast paths without scanning the weights again. The products run on
    the kernels of :mod:`.kernels`, which keep what they need of the layer between calls in
    ``kernel_cache`` (never pickled); anything else that changes ``W`` calls
    :meth:`refresh_bounds`, which drops it.
    """

    def __init__(self, in_features: int, out_features: int, init_bound: int,
                 rng: np.random.Generator, bias: bool = False, xp: Any = np) -> None:
        self.in_features = in_features
        self.out_features = out_features
        self.weight = to_namespace(integer_uniform(rng, init_bound, (out_features, in_features)), xp)
        self.bias = xp.zeros(out_features, dtype=xp.int32) if bias else None
        self.refresh_bounds()

    @classmethod
    def from_weight(cls, weight: Any) -> IntegerLinear:
        """A bias-free layer holding ``weight`` (int32, ``(out_features, in_features)``)."""
        layer = cls.__new__(cls)
        layer.out_features, layer.in_features = weight.shape
        layer.weight, layer.bias = weight, None
        layer.refresh_bounds()
        return layer

    def refresh_bounds(self) -> None:
        self.weight_bound = abs_max(self.weight)
        self.bias_bound = 0 if self.bias is None else abs_max(self.bias)
        self.drop_copies()

    def drop_copies(self) -> None:
        """Forget what the kernels keep of this layer (copies of ``W`` in other forms)."""
        self.kernel_cache = None

    def forward(self, x: Any) -> Any:
        return kernels.select().product(self, x)

    def scaled_forward(self, x: Any, scale: int) -> Any:
        """``nitro_scale(self.forward(x), scale)``: the int8 output of Linear -> scaling."""
        return kernels.select().scaled_forward(self, x, scale)

    def scaled_activated_forward(self, x: Any, scale: int, activation: Any) -> tuple[Any, Any]:
        """``(s, activation.forward(s))`` for ``s = self.scaled_forward(x, scale)``."""
        if isinstance(activation, TabulatedActivation):
            table, _ = activation.tables(array_namespace(x))
            return kernels.select().scaled_forward(self, x, scale, table)
        pre_activation = self.scaled_forward(x, scale)
        return pre_activation, activation.forward(pre_activation)

    def weight_grad(self, delta: Any, x: Any, delta_bound: int | None = None) -> tuple[Any, int]:
        """``G = delta.T @ x`` and a bound of ``max|G|`` (no pass over G; see
        :func:`.kernels.weight_grad_bound`)."""
        return weight_grad(delta, x, delta_bound)

    def input_grad(self, delta: Any, delta_bound: int | None = None) -> Any:
        """``delta @ W``: the gradient with respect to the layer's input."""
        return kernels.select().input_grad(self, delta, delta_bound)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "kernel_cache": None}  # caches: not pickled, not copied

    #: attributes the layer recomputes; older files also hold the caches' former names
    DERIVED = ("weight_bound", "bias_bound", "kernel_cache", "weight64", "weight_pairs", "weight_units",
               "input_units")

    def __setstate__(self, state: dict) -> None:
        # a model file sets the weights only: bounds and caches are recomputed (see .state)
        state = checked_state(state, "IntegerLinear", ("in_features", "out_features", "weight", "bias"),
                              derived=self.DERIVED)
        n_in = check_int(state["in_features"], "IntegerLinear.in_features", 1, 2**31 - 1)
        n_out = check_int(state["out_features"], "IntegerLinear.out_features", 1, 2**31 - 1)
        self.in_features, self.out_features = n_in, n_out
        self.weight = check_array(state["weight"], "IntegerLinear.weight", np.int32, (n_out, n_in))
        bias = state["bias"]
        self.bias = None if bias is None else check_array(bias, "IntegerLinear.bias", np.int32, (n_out,))
        self.refresh_bounds()


def scale_factor(scale_bits: int, fan_in: int) -> int:
    """``SF = 2**scale_bits * fan_in``: brings a sum of ``fan_in`` products back to int8."""
    return 2**scale_bits * fan_in


# ---------------------------------------------------------------------------------------
# activations: forward(s) -> int8, backward(delta, s) -> integer gradient w.r.t. s
#
# Each activation is defined by two integer rules on s in [-128, 127] (s is the int8 output
# of NITRO scaling): `formula(s)`, the forward value, and `gradient_divisor(s)`, the g of the
# backward rule tdiv(delta, g) (0 where the gradient is zero). Since s has only 256 values,
# both rules are tabulated once: forward is one table lookup, and backward is
# tdiv(delta * (D // g), D) with D the least common multiple of the divisors -- exactly
# tdiv(delta, g), in three array operations instead of a chain of where().

S_VALUES = np.arange(-128, 128, dtype=np.int16)


class TabulatedActivation:
    """Base class: tabulates ``formula`` and ``gradient_divisor`` over the 256 int8 values."""

    def __init__(self) -> None:
        order = S_VALUES.astype(np.int8).view(np.uint8)  # table index of each s: its bit pattern
        self.forward_table = np.empty(256, dtype=np.int8)
        self.forward_table[order] = self.formula(S_VALUES)
        divisors = self.gradient_divisor(S_VALUES).astype(np.int64)
        self.backward_divisor = int(np.lcm.reduce(divisors[divisors > 0]))
        self.backward_multiplier = np.zeros(256, dtype=np.int32)
        self.backward_multiplier[order] = np.where(divisors > 0, self.backward_divisor // np.maximum(divisors, 1), 0)
        self._device_tables: dict = {}

    def formula(self, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradient_divisor(self, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> graph.Activation:
        """The tables in the order ``s = -128 .. 127`` (index ``s + 128``), for the network's graph."""
        order = S_VALUES.astype(np.int8).view(np.uint8)
        name = next(name for name, cls in ACTIVATIONS.items() if type(self) is cls)
        return graph.Activation(name, self.forward_table[order].copy(), self.backward_multiplier[order].copy(),
                                self.backward_divisor, getattr(self, "alpha", None))

    def tables(self, xp: Any) -> tuple[Any, Any]:
        """The forward table and backward multipliers as arrays of ``xp`` (numpy or cupy)."""
        if xp is np:
            return self.forward_table, self.backward_multiplier
        if xp not in self._device_tables:
            self._device_tables[xp] = (xp.asarray(self.forward_table), xp.asarray(self.backward_multiplier))
        return self._device_tables[xp]

    def forward(self, s: Any) -> Any:
        if s.dtype != np.int8:  # wider input (not from NITRO scaling): apply the rule itself
            return self.formula(s.astype(np.int64)).astype(np.int8)
        xp = array_namespace(s)
        table, _ = self.tables(xp)
        return xp.take(table, s.view(np.uint8))  # take: twice as fast as table[index]

    def backward(self, delta: Any, s: Any) -> Any:
        return self.backward_and_bounds(delta, s)[0]

    def backward_and_bounds(self, delta: Any, s: Any) -> tuple[Any, int | None, int | None]:
        """:meth:`backward`, and ``max_j sum_i |result[i, j]|`` and ``max|result|`` when the
        compiled kernel computed them on the way (None otherwise): they bound the weight
        gradient and prove the update's kernels exact."""
        if s.dtype != np.int8:
            divisor = self.gradient_divisor(s.astype(np.int64))
            return np.where(divisor > 0, tdiv(delta, np.maximum(divisor, 1)), 0), None, None
        _, multiplier = self.tables(array_namespace(delta))
        return kernels.select().activation_backward(delta, s, multiplier, self.backward_divisor)

    #: the constructor's arguments: the only state restored from a model file
    ARGUMENTS: tuple[str, ...] = ()
    _TABLES = ("forward_table", "backward_divisor", "backward_multiplier", "mean_correction")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_device_tables"}

    def __setstate__(self, state: dict) -> None:
        # the tables index memory in the compiled kernels: rebuilt, never read from a file
        state = checked_state(state, type(self).__name__, self.ARGUMENTS, derived=self._TABLES)
        try:
            self.__init__(**{name: check_int(state[name], f"{type(self).__name__}.{name}", 1, 2**31 - 1)
                             for name in self.ARGUMENTS})
        except ValueError as exc:
            raise InvalidModelError(f"{type(self).__name__}: {exc}") from None


# NITRO-ReLU output mean correction mu(alpha): centres the output for s spread on [-127, 127]
NITRO_RELU_MEANS = {3: 31, 4: 36, 5: 38, 7: 40, 8: 42, 10: 43, 15: 44, 16: 44, 20: 45}


class PocketLeakyReLU(TabulatedActivation):
    """``clip(s, 0, 127) + tdiv(clip(s, -127, 0), alpha)``; slope 1 / alpha below zero."""

    mean_correction = 0
    ARGUMENTS = ("alpha",)

    def __init__(self, alpha: int = 4) -> None:
        if alpha not in NITRO_RELU_MEANS:
            raise ValueError(f"negative_slope_inv must be one of {sorted(NITRO_RELU_MEANS)}, got {alpha!r}")
        self.alpha = alpha
        super().__init__()

    def init_bound(self, fan_in: int, fan_out: int) -> int:
        return kaiming_bound(fan_in, LEAKY_GAINS[self.alpha])

    def formula(self, s: np.ndarray) -> np.ndarray:
        return s.clip(0, INT8_MAX) + tdiv(s.clip(-INT8_MAX, 0), self.alpha) - self.mean_correction

    def gradient_divisor(self, s: np.ndarray) -> np.ndarray:
        # g = 1 on [0, 127), alpha on [-127, 0); elsewhere the published g = 2**31 - 1, i.e. 0
        return np.where(s >= INT8_MAX, 0, np.where(s >= 0, 1, np.where(s >= -INT8_MAX, self.alpha, 0)))


class NitroReLU(PocketLeakyReLU):
    """NITRO-ReLU: the pocket leaky ReLU minus its mean ``mu(alpha)`` (the default)."""

    def __init__(self, alpha: int = 4) -> None:
        self.mean_correction = NITRO_RELU_MEANS.get(alpha, 0)
        super().__init__(alpha)


class PocketReLU(TabulatedActivation):
    """``clip(s, 0, 127)``; gradient ``delta`` where ``0 < s <= 127``, else 0."""

    def init_bound(self, fan_in: int, fan_out: int) -> int:
        return kaiming_bound(fan_in, RELU_GAIN)

    def formula(self, s: np.ndarray) -> np.ndarray:
        return s.clip(0, INT8_MAX)

    def gradient_divisor(self, s: np.ndarray) -> np.ndarray:
        return np.where((s > 0) & (s <= INT8_MAX), 1, 0)


class PocketTanh(TabulatedActivation):
    """Piecewise-linear tanh on ``[-127, 127]`` (PocketNN); backward shaped like tanh'."""

    def init_bound(self, fan_in: int, fan_out: int) -> int:
        return xavier_bound(fan_in, fan_out)

    def formula(self, s: np.ndarray) -> np.ndarray:
        third = tdiv(s, 3)
        return np.where(s >= 127, 127,
            np.where(s >= 75, third + 83,
            np.where(s >= 32, s + 32,
            np.where(s >= -31, 2 * s,
            np.where(s >= -74, s - 32,
            np.where(s >= -127, third - 83, -127))))))  # fmt: skip

    def gradient_divisor(self, s: np.ndarray) -> np.ndarray:
        # 8, 2, 1, 2, 8 on the five inner pieces from the top down; 0 outside [-127, 127)
        return np.where(s >= 127, 0,
            np.where(s >= 75, 8,
            np.where(s >= 32, 2,
            np.where(s >= -31, 1,
            np.where(s >= -74, 2,
            np.where(s >= -127, 8, 0))))))  # fmt: skip


ACTIVATIONS = {
    "nitro_relu": NitroReLU,
    "pocket_leaky_relu": PocketLeakyReLU,
    "pocket_relu": PocketReLU,
    "pocket_tanh": PocketTanh,
}


def make_activation(name: str, negative_slope_inv: int = 4):
    """Build an activation from its name (``ACTIVATIONS``) and leaky slope inverse."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    cls = ACTIVATIONS[name]
    return cls(negative_slope_inv) if issubclass(cls, PocketLeakyReLU) else cls()


# ---------------------------------------------------------------------------------------
# dropout


def check_dropout_rate(name: str, p: float) -> None:
    """A dropout rate is 0 (none) or a multiple of 0.05 in [0.05, 0.95], so that the kept
    fraction has an integer rescale; raises ValueError naming the parameter otherwise."""
    percent = p * 100
    if p != 0 and not (5 <= percent <= 95 and abs(percent - round(percent / 5) * 5) < 1e-6):
        raise ValueError(f"{name} must be 0 or a multiple of 0.05 in [0.05, 0.95], got {p!r}")


class IntegerDropout:
    """Dropout with an integer rescale: kept values become ``tdiv(x * R, 1000)``.

    ``p`` must be a multiple of 0.05 in ``[0.05, 0.95]``; ``R = 100000 // (100 - P)`` with
    ``P`` the rate in percent (p = 0.3 -> R = 1428, i.e. x / 0.7 to three digits). The
    output can exceed int8 (127 * 1428 // 1000 = 181): it is int16 then, and int8 where every
    value fits (NITRO-ReLU's outputs, in [-67, 91] at its default slope, do up to p = 0.25),
    which the compiled pair kernels take as the next layer's input directly (int16 input
    takes them twice, as two int8 digits).
    """

    def __init__(self, p: float) -> None:
        if p == 0:
            raise ValueError("a dropout rate of 0 means no dropout layer")
        check_dropout_rate("dropout", p)
        self.keep_percent = 100 - round(p * 100)
        self.rescale = 100000 // self.keep_percent

    def __setstate__(self, state: dict) -> None:
        state = checked_state(state, "IntegerDropout", ("keep_percent",), derived=("rescale",))
        keep = check_int(state["keep_percent"], "IntegerDropout.keep_percent", 5, 95)
        self.__init__((100 - keep) / 100)

    def draw_mask(self, rng: np.random.Generator, shape: tuple[int, ...], xp: Any = np) -> Any:
        """Keep mask, drawn on the host (so CPU and GPU runs agree bit for bit)."""
        return to_namespace(kernels.select().dropout_mask(rng, shape, self.keep_percent), xp)

    def forward(self, x: Any, mask: Any) -> Any:
        return kernels.select().dropout_forward(self, x, mask)

    def reference_forward(self, x: Any, mask: Any) -> Any:
        """``tdiv(x * R, 1000)`` where ``mask``, else 0: int8 when every kept value fits."""
        kept = tdiv(x.astype(np.int32) * self.rescale, 1000)
        fits_int8 = x.size == 0 or (int(kept.min()) >= -128 and int(kept.max()) <= 127)
        return kept.astype(np.int8 if fits_int8 else np.int16) * mask

    def backward(self, delta: Any, mask: Any) -> Any:
        return tdiv(delta.astype(np.int64) * self.rescale, 1000) * mask
