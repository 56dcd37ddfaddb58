"""What a submission may see of a benchmark, as one object that can travel to another machine.

The local runner hands the sandboxed worker the :class:`~itbench.scoring.benchmark.Benchmark`
itself (it only calls ``train_data()`` and ``images(split)``). A remote
executor cannot: the benchmark holds the held-out responses, which must stay
on the driver. :class:`WorkerInputs` is the same two calls backed by plain
arrays (train images, train responses and labels, the images to predict) and
nothing else, so it can be put in Ray's object store and shared by every
task of a benchmark split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from itbench.contract import TrainData
from itbench.errors import BenchmarkError

if TYPE_CHECKING:
    import torch

    from itbench.scoring.benchmark import Benchmark


class ChildInputs(Protocol):
    """What the child part of a run reads: the benchmark, or a :class:`WorkerInputs`."""

    @property
    def neuroid_ids(self) -> np.ndarray: ...

    def stimulus_ids(self, split: str) -> np.ndarray: ...

    def train_data(self) -> TrainData: ...

    def images(self, split: str) -> Any: ...


@dataclass(frozen=True)
class WorkerInputs:
    """Train split (images, responses, labels) and one split's images: never held-out responses."""

    benchmark_id: str
    split: str
    eval_images: np.ndarray  # (N, 3, 224, 224) float32, ImageNet-normalised
    eval_stimulus_ids: np.ndarray
    train_images: np.ndarray
    train_responses: np.ndarray  # (N_train, n_neuroids) float32, trial-averaged
    train_labels: dict[str, np.ndarray]  # stimulus_id, object_name, category_name, neuroid_id

    @classmethod
    def of(cls, bench: Benchmark, split: str) -> WorkerInputs:
        """Copy out of ``bench`` only what the worker may see for a run on ``split``."""
        train = bench.train_data()
        return cls(
            benchmark_id=bench.id,
            split=split,
            eval_images=bench.images(split).numpy(),
            eval_stimulus_ids=bench.stimulus_ids(split),
            train_images=train.images.numpy(),
            train_responses=np.asarray(train.responses, dtype=np.float32),
            train_labels={
                key: np.asarray(getattr(train, key)).astype(str)
                for key in ("stimulus_id", "object_name", "category_name", "neuroid_id")
            },
        )

    @property
    def nbytes(self) -> int:
        """Size of the arrays (what the object store holds once per benchmark split)."""
        return int(self.eval_images.nbytes + self.train_images.nbytes + self.train_responses.nbytes)

    @property
    def neuroid_ids(self) -> np.ndarray:
        return self.train_labels["neuroid_id"]

    def stimulus_ids(self, split: str) -> np.ndarray:
        """Ids of the train split or of the run's split, in the split file's order."""
        return self.train_labels["stimulus_id"] if split == "train" else self._check(split).eval_stimulus_ids

    def _check(self, split: str) -> WorkerInputs:
        if split != self.split:
            raise BenchmarkError(f"these worker inputs hold the {self.split} images, not {split}")
        return self

    def images(self, split: str) -> torch.Tensor:
        """The images of the run's split (the only split whose images are here, besides train)."""
        if split == "train":
            return _tensor(self.train_images)
        return _tensor(self._check(split).eval_images)

    def train_data(self) -> TrainData:
        """The train split as a submission may see it (same fields as ``Benchmark.train_data``)."""
        return TrainData(
            images=_tensor(self.train_images), responses=self.train_responses, **self.train_labels
        )


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over the array without a copy (read-only memory from Ray's object store is fine:
    the runner only saves it to the worker's files)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(array)
