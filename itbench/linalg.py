"""Numerics that the sandboxed worker and the scoring process must compute identically.

Why a foundation module: the worker (inside the sandbox, possibly in a
submission's own environment) sends the Gram matrix of wide features instead
of the features, and the Brain-Score protocol's PLS reads it; both sides run
this one function, on numpy alone, so a Gram made in the child equals the one
the parent would have made from the same features.
"""

from __future__ import annotations

import numpy as np

GRAM_CHUNK = 8192


def gram_matrix(features: np.ndarray, chunk: int = GRAM_CHUNK) -> np.ndarray:
    """``X X^T`` of N feature rows, summed in float64 over column chunks (a float32 X is never copied whole)."""
    x = np.asarray(features)
    x = x.reshape(x.shape[0], -1)
    gram = np.zeros((x.shape[0], x.shape[0]))
    for start in range(0, x.shape[1], chunk):
        block = np.asarray(x[:, start : start + chunk], dtype=np.float64)
        gram += block @ block.T
    return gram
