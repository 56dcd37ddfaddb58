"""A benchmark: one source's stimuli and responses plus its fixed split.

It is the only place that pairs predictions with held-out responses, so the
runner can hand a submission the train split and images and nothing else.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from itbench.contract import TrainData
from itbench.data import registry
from itbench.data.sources import SourceData, installed, load_source
from itbench.data.split import file_hash, load_split, split_path
from itbench.errors import BenchmarkError
from itbench.scoring import metrics
from itbench.scoring.brainscore import normalisations

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val", "test")
N_EXAMPLE_NEUROIDS = 4
HELD_OUT_SPLIT = "test"
"""The guarded split: its records publish no measured response (see :func:`example_neuroids`)."""


@dataclass
class Benchmark:
    """Stimuli, responses and split of one benchmark id."""

    id: str
    source: SourceData
    split: pd.Series  # stimulus_id -> train/val/test
    split_hash: str
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def synthetic(self) -> bool:
        return self.source.synthetic

    @property
    def checksum(self) -> str:
        return self.source.checksum

    @property
    def neuroid_ids(self) -> np.ndarray:
        return np.asarray(self.source.responses["neuroid_id"].values).astype(str)

    def stimulus_ids(self, split: str) -> np.ndarray:
        """Ids of one split, in the split file's order."""
        if split not in SPLITS:
            raise BenchmarkError(f"unknown split '{split}'", f"choose one of {', '.join(SPLITS)}")
        return self.split.index[self.split.values == split].to_numpy().astype(str)

    def has_responses(self, split: str) -> bool:
        have = set(np.asarray(self.source.responses["stimulus_id"].values).astype(str))
        ids = self.stimulus_ids(split)
        return len(ids) > 0 and all(i in have for i in ids)

    def _rows(self, split: str) -> np.ndarray:
        """Row positions in the averaged assembly for a split's stimuli."""
        if not self.has_responses(split):
            raise BenchmarkError(
                f"benchmark '{self.id}' has no responses for the {split} split",
                "score on --split val (nx414's test images come without responses)",
            )
        index = pd.Index(np.asarray(self.source.responses["stimulus_id"].values).astype(str))
        return index.get_indexer(self.stimulus_ids(split))

    def responses(self, split: str) -> np.ndarray:
        """Trial-averaged responses (n_images, n_neuroids), float64."""
        return np.asarray(self.source.responses.values[self._rows(split)], dtype=np.float64)

    def trials(self, split: str) -> np.ndarray | None:
        """Trial-level responses (n_images, n_reps, n_neuroids) or None."""
        if self.source.trials is None:
            return None
        key = f"trials-{split}"
        if key not in self._cache:
            self._cache[key] = metrics.trials_array(self.source.trials, self.stimulus_ids(split))
        return self._cache[key]

    def images(self, split: str) -> torch.Tensor:
        """ImageNet-normalised image tensor (N, 3, 224, 224) for a split.

        Decoded once per process: a leaderboard run scores many submissions on
        the same images. Callers must not modify the returned tensor in place.
        """
        key = f"images-{split}"
        if key not in self._cache:
            self._cache[key] = self.source.stimuli.load_images(list(self.stimulus_ids(split)))
        return self._cache[key]

    def labels(self, split: str, column: str) -> np.ndarray:
        """A per-stimulus metadata column (object_name, category_name) for a split."""
        ids = self.stimulus_ids(split)
        meta = self.source.stimuli.metadata
        if column not in meta.columns:
            return np.full(len(ids), "unknown")
        return meta.loc[ids, column].astype(str).to_numpy()

    def train_data(self) -> TrainData:
        """The train split as a submission may see it."""
        return TrainData(
            images=self.images("train"),
            responses=self.responses("train").astype(np.float32),
            stimulus_id=self.stimulus_ids("train"),
            object_name=self.labels("train", "object_name"),
            category_name=self.labels("train", "category_name"),
            neuroid_id=self.neuroid_ids,
        )

    def score(self, predictions: np.ndarray, split: str, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Scores, per-neuroid values and a few example neuroids for a record."""
        target = self.responses(split)
        result: dict[str, Any] = metrics.summarize(
            predictions,
            target,
            trials=self.trials(split),
            neuroid_ids=self.neuroid_ids,
            n_boot=n_boot,
            seed=seed,
        )
        # shared resamples for paired comparisons between submissions (fixed seed, not ``seed``)
        result["bootstrap"] = (
            metrics.bootstrap_summary(
                predictions, target, self.stimulus_ids(split), trials=self.trials(split)
            )
            if n_boot
            else None
        )
        picks = example_neuroids(split, len(self.neuroid_ids))
        result["examples"] = (
            _examples(predictions, target, self.stimulus_ids(split), self.neuroid_ids, picks)
            if picks
            else None
        )
        # itbench's ceiled scores (name, formula, value) and Brain-Score's two conventions of this
        # split's median r and ceiling, all labelled, so a fixed-split number reads beside a Brain-Score one
        scores = result["scores"]
        result["normalisations"] = {
            **metrics.definitions(scores),
            **normalisations(scores["median_r"], scores["ceiling"]),
        }
        return result


def example_neuroids(split: str, n_neuroids: int) -> list[int]:
    """Which neuroids a record of ``split`` shows measured beside predicted: the rule, by split.

    - ``test`` (held out): none. A public record must not carry a measured test
      response, or a series of submissions could collect them and answer from them.
    - ``val`` (a development split) and ``train``: the same few neuroids for
      every record of a benchmark, evenly spaced in its neuroid order. They are
      chosen from the benchmark alone, never from a submission's predictions, so
      all public records together show the responses of these neuroids and no
      others, whatever the submissions predict.

    It depends on the split only, so a benchmark added with ``itbench data add``
    follows it as the fixed ones do.
    """
    if split == HELD_OUT_SPLIT or n_neuroids <= 0:
        return []
    k = min(N_EXAMPLE_NEUROIDS, n_neuroids)
    return sorted({int(np.rint(i)) for i in np.linspace(0, n_neuroids - 1, k)})


def _examples(
    pred: np.ndarray, target: np.ndarray, stimulus_ids: np.ndarray, neuroid_ids: np.ndarray, picks: list[int]
) -> dict[str, Any]:
    """Predicted vs measured responses of the chosen neuroids, neuroid-major."""
    return {
        "stimulus_id": [str(s) for s in stimulus_ids],
        "neuroid_id": [str(neuroid_ids[i]) for i in picks],
        "measured": [[round(float(v), 6) for v in target[:, i]] for i in picks],
        "predicted": [[round(float(v), 6) for v in pred[:, i]] for i in picks],
    }


def load_benchmark(benchmark_id: str) -> Benchmark:
    """Load a benchmark by id or alias (cached per process: loading verifies checksums)."""
    return _load_benchmark(registry.resolve(benchmark_id))


@functools.lru_cache(maxsize=4)
def _load_benchmark(benchmark_id: str) -> Benchmark:
    source = load_source(benchmark_id)
    split = load_split(benchmark_id)
    have = set(source.stimuli.metadata.index.astype(str))
    missing = [s for s in split.index if s not in have]
    if missing:
        raise BenchmarkError(
            f"split file for '{benchmark_id}' names {len(missing)} stimuli the data does not have "
            f"(e.g. {missing[:3]})",
            "re-fetch the data or restore benchmark/splits/ from git",
        )
    return Benchmark(benchmark_id, source, split, file_hash(split_path(benchmark_id)))


def default_benchmark() -> str:
    """The real data when installed, else the embedded demo."""
    for candidate in ("majajhong2015", "nx414"):
        if installed(candidate):
            return candidate
    return "demo"
