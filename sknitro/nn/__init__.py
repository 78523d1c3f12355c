"""The NITRO-D integer engine: layers, local-loss blocks, networks, IntegerSGD.

Imports nothing from scikit-learn; the estimators in :mod:`sknitro` drive it.
"""
