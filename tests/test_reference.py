"""The published NITRO-D networks, bit for bit: the recorded traces of the published code
(tests/data, copied from the project's golden traces) replay exactly on every kernel path,
and traces of other architectures, written by an independent slow trainer, replay too."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import sknitro
from sknitro.reference import replay_trace

from conftest import KERNEL_PATHS, PAIR_ISAS
from nitro_trace_writer import write_trace

DATA = Path(__file__).parent / "data"
GOLDEN = {"nitro_d_mlp": (12, 27), "nitro_d_cnn28": (4, 31), "nitro_d_cnn32": (4, 31)}  # steps, arrays



@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("trace", GOLDEN)
def test_golden_traces_replay_identically(trace, path):
    with sknitro.config_context(**KERNEL_PATHS[path]):
        report = replay_trace(DATA / f"{trace}.npz")
    assert report.mismatches == []
    assert report.identical
    assert (report.steps, report.compared) == GOLDEN[trace]


@pytest.mark.parametrize("isa", PAIR_ISAS)
@pytest.mark.parametrize("trace", GOLDEN)
def test_the_pair_products_run_in_the_replay(trace, isa, spy):
    """The replays above really ran the pair kernels, for the dense and the conv layers."""
    with sknitro.config_context(kernels=isa):
        replay_trace(DATA / f"{trace}.npz")
    assert spy.calls.get("head_step", 0) > 0 and spy.calls.get("activation_backward", 0) > 0
    assert spy.calls.get(f"pairs_scaled_product/{isa}", 0) + spy.calls.get(f"units_product/{isa}", 0) > 0
    assert spy.calls.get(f"units_sgd_update/{isa}", 0) > 0


@pytest.fixture
def golden_copy(tmp_path):
    for name in ("nitro_d_cnn28.npz", "nitro_d_cnn28.json"):
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path / "nitro_d_cnn28.npz"


def test_a_changed_recorded_weight_is_reported_with_its_step(golden_copy):
    arrays = dict(np.load(golden_copy))
    arrays["step04/10_linear_encoder_09"][0, 0] += 1
    np.savez(golden_copy, **arrays)
    report = replay_trace(golden_copy)
    assert not report.identical
    assert [(m.step, m.array) for m in report.mismatches] == [(4, "10_linear_encoder_09")]
    assert report.mismatches[0].detail == "1 of 1024 values differ, by up to 1"


def test_another_structure_is_reported_before_any_step(golden_copy):
    config = golden_copy.with_suffix(".json")
    spec = json.loads(config.read_text())
    config.write_text(json.dumps({**spec, "head_dim": 512}))  # other head windows
    report = replay_trace(golden_copy)
    assert not report.identical and report.steps == 0
    assert {m.step for m in report.mismatches} == {"init"}
    assert "01_linear_pred_00" in {m.array for m in report.mismatches}


@pytest.mark.parametrize("spec", [{"dropout": 0.1}, {"bias": True},
                                  {"fe_architecture": [["Conv2d", 8, 5, 1, 2]]}])
def test_traces_sknitro_cannot_build_raise(golden_copy, spec):
    config = golden_copy.with_suffix(".json")
    config.write_text(json.dumps({**json.loads(config.read_text()), **spec}))
    with pytest.raises(ValueError, match="cannot replay"):
        replay_trace(golden_copy)


BASE = {"nitro_leaky_relu_alpha_inv": 4, "target_value": 32, "lr_amp": 640, "lr_inv": 512,
        "fwd_decay_inv": 5000, "head_decay_inv": 5000}
OTHER_ARCHITECTURES = {
    # 1 channel at 28×28, three pools (28 -> 14 -> 7 -> 3), two dense blocks, small heads
    "grey28-two-dense": ((1, 28, 28), {"fe_architecture": [["Conv2d", 4, 3, 1, 1], ["MaxPool2d", 2, 2],
                                                          ["Conv2d", 6, 3, 1, 1], ["MaxPool2d", 2, 2],
                                                          ["Conv2d", 8, 3, 1, 1], ["MaxPool2d", 2, 2]],
                                       "dense_hidden": [16, 12], "head_dim": 64, "head_pooling": "max",
                                       "lr_inv": 256, "fwd_decay_inv": 3000, "head_decay_inv": 2000}),
    # 3 channels at 32×32, average head pooling, two convs in a row, no weight decay
    "rgb32-avg-heads": ((3, 32, 32), {"fe_architecture": [["Conv2d", 4, 3, 1, 1], ["Conv2d", 4, 3, 1, 1],
                                                         ["MaxPool2d", 2, 2], ["Conv2d", 8, 3, 1, 1],
                                                         ["MaxPool2d", 2, 2]],
                                      "dense_hidden": [16], "head_dim": 128, "head_pooling": "avg",
                                      "lr_inv": 48, "lr_amp": 320, "fwd_decay_inv": 0, "head_decay_inv": 0}),
    # two pools in a row, a conv last, no dense block, another leaky slope and target
    "no-dense-block": ((1, 28, 28), {"fe_architecture": [["Conv2d", 6, 3, 1, 1], ["MaxPool2d", 2, 2],
                                                        ["MaxPool2d", 2, 2], ["Conv2d", 8, 3, 1, 1]],
                                     "dense_hidden": [], "head_dim": 40, "head_pooling": "max",
                                     "nitro_leaky_relu_alpha_inv": 8, "target_value": 64}),
    "mlp-three-blocks": ((64,), {"hidden": [32, 24, 16], "lr_inv": 128, "fwd_decay_inv": 700,
                                 "head_decay_inv": 900}),
}


@pytest.mark.parametrize("name", OTHER_ARCHITECTURES)
def test_traces_of_other_architectures_replay(name, tmp_path):
    sample_shape, spec = OTHER_ARCHITECTURES[name]
    rng = np.random.default_rng(1)
    x = rng.integers(-127, 128, size=(3 * 8, *sample_shape))
    y = rng.integers(0, 10, size=3 * 8)
    path, arrays = write_trace(tmp_path, name, {**BASE, **spec, "batch_size": 8}, x, y, x[:8], 10)
    # the trace is not trivial: every layer's weights moved
    moved = [k for k in arrays if k.startswith("init/")
             if not np.array_equal(arrays[k], arrays[k.replace("init/", "step03/")])]
    assert len(moved) == len([k for k in arrays if k.startswith("init/")])

    report = replay_trace(path)
    assert report.mismatches == [] and report.identical
    assert report.steps == 3

    arrays["step02/output"][0, 0] += 1  # and a wrong recorded output is caught
    np.savez(path, **arrays)
    assert [(m.step, m.array) for m in replay_trace(path).mismatches] == [(2, "output")]
