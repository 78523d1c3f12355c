"""Saving and loading fitted sknitro estimators (pickle, joblib, skops).

A fitted estimator pickles like any scikit-learn estimator; its pickled state also records
the sknitro version that wrote it and an integer persistence format, :data:`FORMAT`.
Loading checks the format: a model written in another format raises
:class:`IncompatibleModelError` (a ``ValueError``) instead of failing later, or silently,
inside the engine. The version is only reported, so that the message can say which
sknitro to install.

Devices: a model trained with ``device="cuda"`` is always saved with its weights in host
memory (NumPy arrays), so it can be loaded anywhere. On loading, its weights go back to the
GPU when CuPy and a GPU are available; otherwise the model stays on the host with a
``UserWarning`` and ``predict``, ``decision_function`` and ``partial_fit`` give the same
integers as on the GPU (the engine is bit-identical on both). Its ``device`` parameter
stays ``"cuda"``: a new ``fit`` needs a GPU, or ``set_params(device="cpu")``.

skops: ``skops.io.load(path, trusted=trusted_types())`` loads an sknitro model without
trusting anything else.

Security: loading a pickle or joblib file runs whatever code the file holds, so load those
only from sources you trust; for files from anywhere else use skops with
:func:`trusted_types`. Whatever the format, a model file only ever sets the weights, the
encoder's statistics and the structure: every array's dtype, shape and range is checked on
load, the network's layers must fit together, and everything the engine derives and relies
on for safety (weight bounds, activation tables, the compiled kernels' copies) is recomputed,
never read from the file. A file that does not fit raises :class:`InvalidModelError`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .backend import get_namespace
from .encoding import InputEncoder
from .nn.network import IntegerNetwork
from .nn.state import InvalidModelError, check_int

#: Persistence format of the estimators' pickled state. Bump it whenever a change of the
#: estimator or engine attributes makes an older pickle load into a wrong model.
FORMAT = 2  # 2: the published CNN structure (a feature path of blocks, pooling and dropout)

_VERSION_KEY = "_sknitro_version"
_FORMAT_KEY = "_sknitro_format"

# What ``skops.io.get_untrusted_types`` reports for fitted sknitro models: every sknitro
# class that can appear in a fitted estimator (both estimators, every activation, both
# head poolings, dropout). Nothing else is reported: NumPy arrays, Generators and builtins
# are trusted by skops by default. tests/test_persistence.py checks this list against skops.
_TRUSTED_TYPES = (
    "sknitro.cnn.NitroCNNClassifier",
    "sknitro.encoding.InputEncoder",
    "sknitro.mlp.NitroMLPClassifier",
    "sknitro.nn.blocks.ConvBlock",
    "sknitro.nn.blocks.FeatureDropout",
    "sknitro.nn.blocks.FeaturePool",
    "sknitro.nn.blocks.LinearBlock",
    "sknitro.nn.blocks.LinearHead",
    "sknitro.nn.conv.AvgPool2d",
    "sknitro.nn.conv.IntegerConv2d",
    "sknitro.nn.conv.MaxPool2d",
    "sknitro.nn.layers.IntegerDropout",
    "sknitro.nn.layers.IntegerLinear",
    "sknitro.nn.layers.NitroReLU",
    "sknitro.nn.layers.PocketLeakyReLU",
    "sknitro.nn.layers.PocketReLU",
    "sknitro.nn.layers.PocketTanh",
    "sknitro.nn.network.IntegerNetwork",
)


__all__ = ["FORMAT", "IncompatibleModelError", "InvalidModelError", "trusted_types"]


class IncompatibleModelError(ValueError):
    """A saved model was written in a persistence format this sknitro cannot read."""


def trusted_types() -> list[str]:
    """The type names to trust when loading an sknitro model with skops.

    Returns
    -------
    types : list of str
        Fully qualified names of the sknitro classes inside fitted estimators, for
        ``skops.io.load(path, trusted=trusted_types())``.
    """
    return list(_TRUSTED_TYPES)


def _sknitro_version() -> str:
    from . import __version__  # at call time: sknitro/__init__ imports this module's users

    return __version__


def add_persistence_info(state: dict[str, Any]) -> dict[str, Any]:
    """The state to pickle: ``state`` plus version and format, with a GPU network on the host.

    Parameters
    ----------
    state : dict
        The estimator's ``__dict__`` (or a copy of it); left unchanged.

    Returns
    -------
    state : dict
        A new dict: the live estimator keeps its arrays where they are.
    """
    state = dict(state)
    state[_VERSION_KEY] = _sknitro_version()
    state[_FORMAT_KEY] = FORMAT
    network = state.get("network_")
    if network is not None and network.namespace() is not np:
        state["network_"] = network.to(np)
    return state


def check_format(state: dict[str, Any], estimator_name: str) -> None:
    """Raise :class:`IncompatibleModelError` unless ``state`` was saved in :data:`FORMAT`.

    Parameters
    ----------
    state : dict
        A pickled estimator state.
    estimator_name : str
        The estimator's class name, for the message.
    """
    saved_format = state.get(_FORMAT_KEY)
    if saved_format == FORMAT:
        return
    saved_version = state.get(_VERSION_KEY)
    written_by = (f"sknitro {saved_version}" if saved_version is not None
                  else "a version of sknitro that records no version")
    in_format = (f"persistence format {saved_format}" if saved_format is not None
                 else "no persistence format (a development version before format 1)")
    install = (f"install sknitro=={saved_version} to load it" if saved_version is not None
               else "load it with the sknitro version that wrote it")
    raise IncompatibleModelError(
        f"This {estimator_name} was saved by {written_by} in {in_format}, but sknitro "
        f"{_sknitro_version()} reads persistence format {FORMAT} only. Retrain the model with "
        f"this version of sknitro, or {install}."
    )


def restore_state(state: dict[str, Any], estimator_name: str) -> dict[str, Any]:
    """The estimator ``__dict__`` for an unpickled ``state`` (format checked, device restored).

    A model saved with ``device="cuda"`` goes back to the GPU when one is usable; otherwise
    it stays on the host with a ``UserWarning`` (same integers either way).

    Raises
    ------
    IncompatibleModelError
        If the state was saved in another persistence format.
    """
    check_format(state, estimator_name)
    state = {k: v for k, v in state.items() if k not in (_VERSION_KEY, _FORMAT_KEY)}
    check_fitted_state(state, estimator_name)
    network = state.get("network_")
    if network is not None and state.get("device") == "cuda":
        try:
            xp = get_namespace("cuda")
        except ValueError as exc:
            warnings.warn(
                f"This {estimator_name} was trained with device='cuda', but no GPU is usable here "
                f"({exc}). It stays on the host (NumPy): predictions are the same integers. "
                "To train it again without a GPU, use set_params(device='cpu').",
                UserWarning, stacklevel=3)  # the caller of pickle.load
        else:
            if network.namespace() is not xp:
                state["network_"] = network.to(xp)
    return state


def check_fitted_state(state: dict[str, Any], estimator_name: str) -> None:
    """Raise :class:`InvalidModelError` unless a fitted estimator's parts fit together.

    Each engine object has checked its own attributes while loading (and recomputed what it
    derives from them); this checks what ties them together: the network reads the encoded
    input's shape and scores every class, and the integer schedule state is in range.
    """
    if "network_" not in state:  # an unfitted estimator: only parameters, validated by fit
        fitted = sorted(name for name in state if name.endswith("_") and not name.startswith("__"))
        if fitted:
            raise InvalidModelError(f"{estimator_name}: fitted attributes {fitted} without a network_")
        return
    network, encoder = state["network_"], state.get("encoder_")
    if not isinstance(network, IntegerNetwork) or not isinstance(encoder, InputEncoder):
        raise InvalidModelError(f"{estimator_name}: network_ and encoder_ must be sknitro's own classes")
    classes = state.get("classes_")
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or len(classes) != network.n_classes \
            or len(classes) < 2:
        raise InvalidModelError(f"{estimator_name}: classes_ must list the {network.n_classes} classes the "
                                "output layer scores")
    sample_shape = tuple(state["image_shape_"]) if "image_shape_" in state else (state.get("n_features_in_"),)
    if tuple(network.input_shape()) != sample_shape:
        raise InvalidModelError(f"{estimator_name}: the network reads samples of shape {network.input_shape()}, "
                                f"but the estimator takes {sample_shape}")
    # the encoder as the estimator makes it: channels on axis 1 of a CNN's images, statistics of
    # the shape its transform broadcasts against the samples
    channel_axis = 1 if "image_shape_" in state else None
    if encoder.channel_axis != channel_axis:
        raise InvalidModelError(f"{estimator_name}: the encoder's channel_axis must be {channel_axis}, "
                                f"got {encoder.channel_axis!r}")
    if encoder.kind == "image":
        statistics_shape = (sample_shape[0],) if channel_axis is not None else (1,)
    else:
        statistics_shape = sample_shape
    if encoder.mean.shape != statistics_shape:
        raise InvalidModelError(f"{estimator_name}: the encoder's statistics have shape "
                                f"{encoder.mean.shape}, its input needs {statistics_shape}")
    check_int(state.get("lr_inv_"), f"{estimator_name}.lr_inv_", 1, 2**62)
