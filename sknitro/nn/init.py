"""Integer weight initialisation (algorithm.md §6).

Kaiming-uniform over the integers: ``bound = min(64, gain * 128 * 1732 // (isqrt(fan_in) * 10**6))``
where ``gain`` is sqrt(2 / (1 + slope**2)) times 1000, and 1732 / 1000 ≈ sqrt(3) turns a
standard deviation into the half-width of a uniform law. Activations live on a scale of 128.
"""

from __future__ import annotations

import numpy as np

from .functional import isqrt

MAX_INIT_BOUND = 64

# gain * 1000 for a leaky slope of 1 / alpha
LEAKY_GAINS = {3: 1342, 4: 1372, 5: 1387, 7: 1400, 8: 1403, 10: 1407, 15: 1411, 16: 1411, 20: 1412}
RELU_GAIN = 1414
TANH_GAIN = 1667


def kaiming_bound(fan_in: int, gain: int) -> int:
    """Half-width of the integer Kaiming-uniform law.

    >>> kaiming_bound(784, LEAKY_GAINS[4])
    10
    """
    return min(MAX_INIT_BOUND, (gain * 128 * 1732) // (isqrt(fan_in) * 10**6))


def xavier_bound(fan_in: int, fan_out: int, gain: int = TANH_GAIN) -> int:
    """Half-width of the integer Xavier-uniform law (used for tanh); 2449 / 1000 ≈ sqrt(6)."""
    return min(MAX_INIT_BOUND, (gain * 128 * 2449) // (isqrt(fan_in + fan_out) * 10**6))


def integer_uniform(rng: np.random.Generator, bound: int, shape: tuple[int, ...]) -> np.ndarray:
    """Integers drawn uniformly from ``[-bound, bound]``, as int32 (at least ``[-1, 1]``)."""
    bound = max(int(bound), 1)
    return rng.integers(-bound, bound + 1, size=shape, dtype=np.int32)
