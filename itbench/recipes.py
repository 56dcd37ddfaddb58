"""Ready-made model shapes so that a Table I row is a few lines.

``LinearReadoutModel``: any featurizer -> optional PCA -> OLS / ridge, with
fit/predict/save/load, the contract the runner expects. Featurizers for
pixels and for network layers live here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .readouts import OLS, PCA, RidgeGCV

READOUTS = ("ols", "ridge", "ridge_cv")
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 7, 19))

Featurizer = Callable[[torch.Tensor], Any]


def pixels(images: torch.Tensor) -> torch.Tensor:
    """Raw normalised pixels, flattened (Table I rows 1-4)."""
    return images.flatten(1)


def make_readout(kind: str, alpha: float | None = None, alphas: tuple[float, ...] | None = None):
    """OLS, ridge with a fixed alpha, or ridge with alpha per neuroid by LOO-CV."""
    if kind == "ols":
        return OLS()
    if kind == "ridge":
        return RidgeGCV(alphas=[float(alpha if alpha is not None else 1.0)])
    if kind == "ridge_cv":
        return RidgeGCV(alphas=list(alphas or DEFAULT_ALPHAS), alpha_per_target=True)
    raise ValueError(f"unknown readout '{kind}', choose one of {READOUTS}")


class LinearReadoutModel:
    """features -> [PCA(n)] -> linear readout, fitted on the train split only."""

    def __init__(self, featurizer: Featurizer, readout: str = "ridge_cv",
                 n_components: int | None = None, alpha: float | None = None,
                 alphas: tuple[float, ...] | None = None, device: str = "cpu", seed: int = 0):
        self.featurizer = featurizer
        self.readout_kind = readout
        self.n_components = n_components
        self.alpha, self.alphas = alpha, alphas
        self.device = device
        self.seed = seed
        self.pca: PCA | None = None
        self.readout: Any = None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.featurizer(images)
        feats = torch.as_tensor(np.asarray(feats) if not torch.is_tensor(feats) else feats)
        return feats.to(self.device, torch.float32)

    def fit(self, train: Any) -> "LinearReadoutModel":
        x = self._features(train.images)
        if self.n_components:
            n = min(self.n_components, x.shape[0] - 1, x.shape[1])
            self.pca = PCA(n, random_state=self.seed)
            x = self.pca.fit_transform(x)
        y = torch.as_tensor(train.responses, dtype=torch.float32, device=self.device)
        self.readout = make_readout(self.readout_kind, self.alpha, self.alphas).fit(x, y)
        return self

    def predict(self, images: torch.Tensor) -> np.ndarray:
        x = self._features(images)
        if self.pca is not None:
            x = self.pca.transform(x)
        pred = self.readout.predict(x)
        return pred.detach().cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred)

    def save(self, directory: Path) -> None:
        torch.save({"pca": self.pca, "readout": self.readout}, Path(directory) / "readout.pt")

    def load(self, directory: Path) -> None:
        state = torch.load(Path(directory) / "readout.pt", weights_only=False, map_location=self.device)
        self.pca, self.readout = state["pca"], state["readout"]
