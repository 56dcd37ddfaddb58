"""Fig. 1: the same PCA + ridge readout on every chosen layer of one network.

One streamed pass over the train and eval images yields every layer's
(reduced) activations; each layer is then fitted on train and scored on the
eval split exactly as a submission would be. The result is one sweep record.

Choosing "the best layer" by the scored split's own numbers leaks that split
into the choice (Brain-Score's layer commitment on the public IT set does the
same). ``select_on="train-cv"`` chooses by k-fold cross-validation on the train
split only and reports the chosen layer's score on the scored split; the
default (``scored-split``) keeps the old choice and the record says it leaks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itbench import paths
from itbench.harness.device import resolve_device
from itbench.harness.inputs import ChildInputs
from itbench.harness.record import (
    BenchmarkRef,
    LayerSelection,
    Provenance,
    Scores,
    SweepLayer,
    SweepRecord,
    sweep_path,
    write_record,
)
from itbench.locks import locked
from itbench.models.features import default_layers, extract
from itbench.models.pretrained import build_model
from itbench.models.readouts import DEFAULT_ALPHAS, PCA, RidgeGCV
from itbench.scoring.benchmark import Benchmark, load_benchmark

FLATTEN_MAX_DIM = 60_000
PROJECTION_DIM = 8_000
SELECT_ON = ("scored-split", "train-cv")
#: Images decoded at a time by the sweep (a multiple of the usual batch sizes). Why: holding all
#: 2880 train + val images as float32 costs 1.7 GiB, and the benchmark's per-split image cache
#: plus a concatenated copy cost twice that; decoding 256 at a time keeps images at ~150 MiB.
IMAGE_CHUNK = 256
CV_FOLDS = 5


def auto_reducers(model: torch.nn.Module, layers: list[str], device: str) -> dict[str, str]:
    """Flatten small layers exactly; randomly project large ones (memory stays flat in N)."""
    dims: dict[str, int] = {}
    probe = extract(
        model, torch.zeros(1, 3, 224, 224), layers, "flatten", batch_size=1, device=device, progress=False
    )
    for layer, value in probe.items():
        dims[layer] = value.shape[1]
    return {
        layer: "flatten" if dims[layer] <= FLATTEN_MAX_DIM else f"random_projection({PROJECTION_DIM}, seed=0)"
        for layer in layers
    }


def extract_in_chunks(
    bench: Any,
    ids: np.ndarray,
    model: torch.nn.Module,
    layers: list[str],
    reducers: Any,
    batch_size: int,
    device: str,
) -> dict[str, np.ndarray]:
    """{layer: float32 (N, D)}: images decoded ``IMAGE_CHUNK`` at a time, features written in place.

    Reducers are spec strings (or one string), so every chunk rebuilds the same
    seeded projection: the result equals one pass over all images.
    """
    feats: dict[str, np.ndarray] = {}
    stimuli = bench.source.stimuli
    for start in range(0, len(ids), IMAGE_CHUNK):
        images = stimuli.load_images(list(ids[start : start + IMAGE_CHUNK]), progress=False)
        part = extract(model, images, layers, reducers, batch_size=batch_size, device=device, progress=False)
        del images
        for layer, values in part.items():
            if layer not in feats:
                feats[layer] = np.empty((len(ids), values.shape[1]), dtype=np.float32)
            feats[layer][start : start + len(values)] = values
        del part
    return feats


def score_layer(
    train_x: np.ndarray,
    eval_x: np.ndarray,
    train_y: np.ndarray,
    n_components: int,
    device: str,
    seed: int = 0,
) -> np.ndarray:
    """PCA(n) + ridge (alpha per neuroid by LOO-CV) fitted on train, predicted on eval."""
    xt = torch.as_tensor(train_x, device=device)
    xe = torch.as_tensor(eval_x, device=device)
    n = min(n_components, xt.shape[0] - 1, xt.shape[1])
    pca = PCA(n, random_state=seed).fit(xt)
    ridge = RidgeGCV(alphas=list(DEFAULT_ALPHAS), alpha_per_target=True)
    ridge.fit(pca.transform(xt), torch.as_tensor(train_y, device=device, dtype=torch.float32))
    pred = ridge.predict(pca.transform(xe))
    return pred.detach().cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred)


@dataclass
class LayerPredictions:
    """What the compute part of a sweep returns: per layer, its predictions on the eval split."""

    layers: list[str]
    reducers: dict[str, str]
    dims: dict[str, int]
    preds: dict[str, np.ndarray]
    cv_scores: dict[str, float] = field(default_factory=dict)  # train-CV mean r per layer, when asked


def sweep_predictions(
    model_name: str,
    inputs: ChildInputs,
    split: str,
    layers: list[str] | None = None,
    pretrained: bool = True,
    device: str = "cpu",
    batch_size: int = 64,
    reducer: str = "auto",
    n_components: int = 1000,
    seed: int = 0,
    select_on: str = "scored-split",
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> LayerPredictions:
    """The compute part: one streamed pass, then PCA + ridge per layer fitted on train.

    It reads only the train split and the eval images (``inputs`` is the
    benchmark, or a ``WorkerInputs`` on a Ray node), never held-out responses;
    with ``select_on="train-cv"`` it also scores each layer by CV within train.
    """
    model = build_model(model_name, pretrained=pretrained, seed=seed)
    layers = list(layers or default_layers(model_name, model=model))
    reducers: Any = auto_reducers(model, layers, device) if reducer == "auto" else reducer
    train_y, objects = _train_targets(inputs)
    n_train = len(train_y)
    feats = _layer_features(inputs, split, model, layers, reducers, batch_size, device, log)
    folds = _train_folds(objects, seed) if select_on == "train-cv" else []
    out = LayerPredictions(layers=layers, reducers={}, dims={}, preds={})
    for layer in layers:
        log(f"  {layer}: PCA + ridge ...")
        x = feats.pop(layer)
        if folds:
            out.cv_scores[layer] = train_cv_score(x[:n_train], train_y, folds, n_components, device, seed)
        out.preds[layer] = score_layer(x[:n_train], x[n_train:], train_y, n_components, device, seed)
        out.dims[layer] = int(x.shape[1])
        out.reducers[layer] = reducers if isinstance(reducers, str) else reducers[layer]
    return out


def _train_targets(inputs: ChildInputs) -> tuple[np.ndarray, np.ndarray]:
    """Train responses and object labels, without decoding train images for a local benchmark."""
    if isinstance(inputs, Benchmark):
        return inputs.responses("train"), inputs.labels("train", "object_name")
    train = inputs.train_data()
    return train.responses, train.object_name


def _layer_features(
    inputs: ChildInputs,
    split: str,
    model: torch.nn.Module,
    layers: list[str],
    reducers: Any,
    batch_size: int,
    device: str,
    log: Callable[[str], None],
) -> dict[str, np.ndarray]:
    """Train then eval features of every layer; a local benchmark is decoded a chunk at a time."""
    if isinstance(inputs, Benchmark):  # memory stays flat in the number of images
        ids = np.concatenate([inputs.stimulus_ids("train"), inputs.stimulus_ids(split)])
        log(f"extracting {len(layers)} layers on {len(ids)} images ...")
        return extract_in_chunks(inputs, ids, model, layers, reducers, batch_size, device)
    images = torch.cat([inputs.train_data().images, inputs.images(split)])  # already in memory (Ray)
    log(f"extracting {len(layers)} layers on {len(images)} images ...")
    return extract(model, images, layers, reducers, batch_size=batch_size, device=device)


def run_sweep(
    model_name: str,
    layers: list[str] | None = None,
    pretrained: bool = True,
    benchmark_id: str = "demo",
    split: str = "val",
    device: str = "auto",
    batch_size: int = 64,
    reducer: str = "auto",
    n_components: int = 1000,
    seed: int = 0,
    results_root: Path | None = None,
    n_boot: int = 1000,
    select_on: str = "scored-split",
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    executor: Any = None,
) -> SweepRecord:
    """Score each layer and store one sweep record; returns it (with ``path``).

    ``executor``: None or a ``LocalExecutor`` computes here; a ``RayExecutor``
    computes in one Ray task (train data and eval images only) and this
    process scores and records, as for submissions. ``select_on="train-cv"``
    commits to a layer by cross-validation within train, never the scored split.
    """
    if select_on not in SELECT_ON:
        from itbench.errors import ItbenchError

        raise ItbenchError(
            f"unknown layer selection {select_on!r}", hint=f"choose one of {', '.join(SELECT_ON)}"
        )
    started = time.perf_counter()
    bench = load_benchmark(benchmark_id)
    compute: dict[str, Any] = {
        "layers": layers,
        "pretrained": pretrained,
        "batch_size": batch_size,
        "reducer": reducer,
        "n_components": n_components,
        "seed": seed,
        "select_on": select_on,
    }
    if executor is None or executor.name == "local":
        device = resolve_device(device)
        got = sweep_predictions(model_name, bench, split, device=device, log=log, **compute)
    else:
        device, got = executor.sweep(model_name, bench, split, device, compute, log)
    cv_scores = got.cv_scores
    entries = []
    for depth, layer in enumerate(got.layers):
        scored = bench.score(got.preds[layer], split, n_boot=n_boot, seed=seed)
        entries.append(
            SweepLayer(
                layer=layer,
                depth=depth,
                dim=got.dims[layer],
                reducer=got.reducers[layer],
                scores=Scores.model_validate(scored["scores"]),
            )
        )
    record = SweepRecord(
        model=model_name,
        weights="pretrained" if pretrained else "random",
        benchmark=BenchmarkRef.of(bench),
        split=split,
        readout=f"PCA({n_components}) + RidgeGCV (alpha per neuroid)",
        layers=entries,
        layer_selection=_selection(entries, cv_scores, split),
        provenance=Provenance(device=device, seed=seed, batch_size=batch_size),
    )
    record.provenance.stamp(time.perf_counter() - started)
    path = sweep_path(results_root or paths.results_root(), bench.id, model_name, record.weights)
    with locked(path):
        record.path = write_record(record, path)
    return record


def _train_folds(objects: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds of the train split, stratified by object where every object has k images."""
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = np.asarray(objects).astype(str)
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() >= CV_FOLDS:
        splitter = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(labels)), labels))
    return list(KFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(labels))))


def train_cv_score(
    x: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    n_components: int,
    device: str,
    seed: int = 0,
) -> float:
    """Mean over folds of the mean Pearson r over neuroids, the sweep's readout fitted within train."""
    from itbench.scoring.metrics import pearson_r

    values = []
    for fit_idx, held_idx in folds:
        pred = score_layer(x[fit_idx], x[held_idx], y[fit_idx], n_components, device, seed)
        values.append(float(np.nanmean(pearson_r(pred, y[held_idx]))))
    return float(np.mean(values))


def _selection(entries: list[SweepLayer], cv_scores: dict[str, float], split: str) -> LayerSelection:
    """The layer the sweep would commit to and whether that choice saw the scored split."""

    def mean_r(entry: SweepLayer) -> float:
        value = entry.scores.mean_r
        return float(value) if value is not None and np.isfinite(value) else -np.inf

    if cv_scores:
        chosen = max(entries, key=lambda e: cv_scores.get(e.layer, -np.inf))
        return LayerSelection(
            method="train-cv",
            chosen=chosen.layer,
            folds=CV_FOLDS,
            cv_scores={k: float(v) for k, v in cv_scores.items()},
            chosen_scores=chosen.scores,
            leaks=False,
            note=f"layer chosen by {CV_FOLDS}-fold CV on the train split only; its {split} score is held out",
        )
    chosen = max(entries, key=mean_r)
    return LayerSelection(
        method="scored-split",
        chosen=chosen.layer,
        chosen_scores=chosen.scores,
        leaks=True,
        note=f"layer chosen on the {split} split itself (the split it is scored on): the best score is "
        "optimistic; use --select-on train-cv for an honest one",
    )
