"""Integer calibration of the initial weights to the NITRO scaling: an opt-in departure from NITRO-D.

NITRO scaling divides a layer's product by the worst case ``2**scale_bits * fan_in`` (§3).
At initialisation a product is far smaller than that worst case, so a deep network's blocks
pass almost no signal: past the first block, every block outputs one constant, and each block
only starts to learn once the blocks before it have grown their weights. Calibration grows
them at once: on one batch of training data, block after block (each calibrated block
feeding the next), it multiplies the forward layer's initial weights by the integer gain

    ``gain = clip(SPREAD * SF // mad(z), 1, ...)``

where ``mad(z)`` is the mean absolute deviation of the layer's products over the batch
(integer sums, ``tdiv``) and ``SF`` the layer's NITRO divisor, so that its scaled
pre-activations spread over about ``SPREAD`` around their mean from the first step.

The learning heads and the output layer keep their published initialisation and divisors:
calibrating them as well (larger weights, or smaller divisors) made them learn slower or
diverge in every trial, while calibrating the blocks alone let every head, and the output
layer, learn from the first epoch. Training itself is the published algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import to_host
from .functional import tdiv

SPREAD = 20  # mean |s - mean(s)| of a calibrated layer's int8 output (a std of about 25)
WEIGHT_LIMIT = 2**21  # max|W| after calibration: far inside int32 (and the products exact)


def mean_abs_deviation(z: Any) -> int:
    """``tdiv(sum |z - m|, n)`` with ``m = tdiv(sum z, n)``, in Python integers (exact)."""
    values = np.asarray(to_host(z), dtype=np.int64).ravel()
    if values.size == 0:
        return 0
    mean = int(tdiv(int(values.sum()), values.size))
    return int(np.abs(values - mean).sum()) // values.size


def calibrated_gain(z: Any, scale: int, weight_bound: int) -> int:
    """The integer factor that gives the products ``z`` a mean absolute deviation of about
    ``SPREAD * scale``, i.e. ``SPREAD`` after NITRO scaling by ``scale``; at least 1, and
    small enough that ``max|W| * gain`` stays within ``WEIGHT_LIMIT``."""
    gain = SPREAD * scale // max(mean_abs_deviation(z), 1)
    return int(min(max(gain, 1), WEIGHT_LIMIT // max(weight_bound, 1)))


def calibrate_scaling(network: Any, x: Any) -> list[int]:
    """Amplify every block's initial forward weights so that its scaled pre-activation
    spreads over the int8 range on the int8 batch ``x``.

    Blocks are calibrated in forward order, each on the output of the calibrated blocks
    before it. Returns the gains, one per block.
    """
    gains = []
    for stage in network.path:
        if hasattr(stage, "head"):
            layer = stage.forward_layer
            gain = calibrated_gain(stage.product(x), stage.scale, layer.weight_bound)
            if gain > 1:
                layer.weight *= gain
                layer.refresh_bounds()
            gains.append(gain)
        x = stage.forward(x)  # dropout is the identity outside training
    network.drop_weight_copies()
    return gains


__all__ = ["SPREAD", "WEIGHT_LIMIT", "calibrate_scaling", "calibrated_gain", "mean_abs_deviation"]
