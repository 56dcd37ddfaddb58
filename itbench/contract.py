"""The submission contract: what a model receives and what it must offer.

This is the one place the contract is written down in code. ``model.py``
defines ``build(ctx: Context) -> Model``; the model has ``predict`` and may
have ``fit`` and ``save``/``load``. The loader and the worker check a built
model against these Protocols and name the method that is missing or has the
wrong signature, instead of failing later with an AttributeError.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch is heavy; the contract itself needs only its name
    import torch


@dataclass
class Context:
    """What ``build(ctx)`` receives: where and how the model should run."""

    device: str = "cpu"
    batch_size: int = 64
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    benchmark_id: str = "demo"
    size: str = "full"
    cache_dir: Path | None = None


@dataclass
class TrainData:
    """The train split only: never val or test responses."""

    images: torch.Tensor  # (N, 3, 224, 224), ImageNet-normalised float32
    responses: np.ndarray  # (N, n_neuroids) float32, trial-averaged
    stimulus_id: np.ndarray
    object_name: np.ndarray
    category_name: np.ndarray
    neuroid_id: np.ndarray

    def __len__(self) -> int:
        return len(self.stimulus_id)


@runtime_checkable
class Model(Protocol):
    """Required: map images (N, 3, 224, 224) to predictions (N, n_neuroids)."""

    def predict(self, images: torch.Tensor) -> np.ndarray | torch.Tensor: ...


@runtime_checkable
class Fittable(Protocol):
    """Optional: learn from the train split; returns self (scikit-learn's habit)."""

    def fit(self, train: TrainData) -> object: ...


@runtime_checkable
class Persistent(Protocol):
    """Optional: save and restore the fitted state, so re-scoring does not refit."""

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


@runtime_checkable
class Featurizing(Protocol):
    """Optional: the model's features (its "committed layer"), an array (N, n_features).

    Brain-Score's protocol reads such a model out with its own PLS(25) regression,
    as Brain-Score maps a model's layer; models without it are fitted per split.
    """

    def features(self, images: torch.Tensor) -> Any: ...


# method name -> number of positional arguments it must accept (besides self)
_ARITY = {"predict": 1, "fit": 1, "save": 1, "load": 1, "features": 1}


def _accepts(method: Callable[..., object], n_args: int) -> bool:
    """Whether a bound method can be called with ``n_args`` positional arguments."""
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):  # builtins without a signature: give them the benefit
        return True
    try:
        signature.bind(*([None] * n_args))
    except TypeError:
        return False
    return True


def contract_problems(model: object) -> list[str]:
    """What is wrong with a built model, one sentence each; empty when it conforms."""
    problems = []
    if not isinstance(model, Model):
        problems.append(f"{type(model).__name__} has no predict(images) method")
    has_save, has_load = (callable(getattr(model, name, None)) for name in ("save", "load"))
    if has_save != has_load:
        problems.append("it defines only one of save(dir) / load(dir); define both or neither")
    for name, n_args in _ARITY.items():
        method = getattr(model, name, None)
        if method is None:
            continue
        if not callable(method):
            problems.append(f"its attribute {name} is not a method")
        elif not _accepts(method, n_args):
            problems.append(f"{name}() must accept {n_args} argument(s): {name}{inspect.signature(method)}")
    return problems


def can_fit(model: object) -> bool:
    return isinstance(model, Fittable)


def can_persist(model: object) -> bool:
    return isinstance(model, Persistent)


def has_features(model: object) -> bool:
    return isinstance(model, Featurizing)
