"""Network-level behaviour of the engine (sknitro.nn.network)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import weights_equal

from sknitro.encoding import InputEncoder
from sknitro.nn.network import build_cnn, build_mlp
from sknitro.nn.optim import IntegerSGD
from sknitro.nn.training import train_epoch


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_concurrent_block_updates_give_identical_weights(kind, digits_small):
    X, y = digits_small
    if kind == "mlp":
        data = InputEncoder().fit(X).transform(X)
        build = lambda rng: build_mlp(64, (32, 16), 10, dropout=0.1, rng=rng)  # noqa: E731
    else:
        images = (X * 15).astype(np.uint8).reshape(-1, 1, 8, 8)
        data = InputEncoder(channel_axis=1).fit(images).transform(images)
        build = lambda rng: build_cnn((1, 8, 8), [8, "M", 8], (16,), 10, rng=rng)  # noqa: E731
    results = []
    for executor in (None, ThreadPoolExecutor(2)):
        rng = np.random.default_rng(0)
        network = build(rng)
        for _ in range(2):
            stats = train_epoch(network, data, y, 32, IntegerSGD(256), 64, rng, executor=executor)
        results.append((network.get_weights(), stats))
    (sequential, stats_a), (concurrent, stats_b) = results
    assert weights_equal(sequential, concurrent)
    assert stats_a == stats_b and stats_a.n_correct > 0
