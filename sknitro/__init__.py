"""sknitro: integer-only neural network training (NITRO-D) with a scikit-learn API."""

from ._config import config_context, get_config, set_config
from .cnn import NitroCNNClassifier
from .mlp import NitroMLPClassifier

__version__ = "0.1.0"

__all__ = ["NitroCNNClassifier", "NitroMLPClassifier", "config_context", "get_config", "set_config", "__version__"]
