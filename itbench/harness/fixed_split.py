"""Table I's protocol, ``fixed-split``: fit on the train split, predict val or test, score the predictions.

The run is split in three so that every executor shares the driver's part:

* :func:`plan_run` (driver): check, resolve device/size/params, look up cached predictions;
* :func:`run_child` (any node): the sandboxed worker, shown the train split's
  responses and the images to predict, through the run core;
* :func:`complete_run` (driver): validate, cache, score against the held-out responses.

Exposure: every fit of one submission on one benchmark's train split shares
one own-cache namespace (and its fitted state), so a val run and a later test
run reuse the fit; neither is ever scored on a stimulus whose responses that
namespace was shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itbench.errors import SubmissionError
from itbench.harness import worker
from itbench.harness.device import resolve_device
from itbench.harness.inputs import ChildInputs
from itbench.harness.record import BootstrapSummary, Examples, Normalisation, PerNeuroid, Scores
from itbench.harness.runcore import (
    ChildRun,
    Exposure,
    Log,
    RunOptions,
    RunState,
    base_job,
    check_location,
    resolve_size,
    run_provenance,
    store_in_parent_cache,
    trust_level,
    validate_predictions,
)
from itbench.harness.runcore import run_child as run_core_child
from itbench.harness.submission import Submission, check_module
from itbench.harness.untrusted import ChildStatus, UntrustedOutput, read_predictions
from itbench.models.cache import prediction_file, run_key
from itbench.scoring.benchmark import Benchmark

ID = "fixed-split"


@dataclass
class PlannedRun:
    """A run after the driver's checks: ``job`` is what the child needs, None when ``cached``."""

    sub: Submission
    fit_key: str
    pred_file: Path
    exposure: Exposure
    job: dict[str, Any] | None = None
    cached: np.ndarray | None = None


class FixedSplit:
    """The protocol object the registry hands out (``itbench.harness.protocols``)."""

    id = ID
    title = "fixed split (Table I): fit on train, score val or test"

    def record_split(self, opts: RunOptions) -> str:
        """Records are filed under the split they score."""
        return opts.split

    def check(self, bench: Benchmark, opts: RunOptions) -> None:
        """A split name the benchmark does not have is refused before anything runs."""
        bench.stimulus_ids(opts.split)

    def run(self, sub: Submission, bench: Benchmark, opts: RunOptions, state: RunState, log: Log) -> None:
        """The local (in-process, serial) path: plan, run the child here, complete."""
        plan = plan_run(sub, bench, opts, state, log)
        pred, status = plan.cached, None
        if plan.job is not None:
            pred, status = run_child(
                plan.sub, bench, opts, plan.job, plan.fit_key, plan.exposure, state.provenance, log
            )
        complete_run(plan, pred, status, bench, opts, state, log)


PROTOCOL = FixedSplit()


def exposure_of(bench: Benchmark) -> Exposure:
    """A fixed-split child is shown the train split's responses of this benchmark."""
    return Exposure.responses_of(bench, [str(s) for s in bench.stimulus_ids("train")])


def plan_run(
    sub: Submission,
    bench: Benchmark,
    opts: RunOptions,
    state: RunState,
    log: Log,
    device: str | None = None,
) -> PlannedRun:
    """Driver side, before the child: check, resolve the run, serve it from the prediction cache if we can.

    The prediction cache is the driver's: workers never read or write it.
    ``device`` is given when the run will happen elsewhere (a cluster node's
    GPU need not be visible here); else ``opts.device`` is resolved here.
    """
    state.begin(sub, bench)
    check_location(sub.path)
    check_module(sub)  # a syntax error or no build(): fail now, before any data is loaded
    device = device or resolve_device(opts.device)
    size = resolve_size(sub, opts.size, device)
    params = sub.params_for(size)
    fit_key = run_key(
        sub.code_hash(),
        bench.checksum,
        bench.split_hash,
        params,
        opts.seed,
        size,
        bench.id,
        trust_level(opts),
    )
    pred_file = prediction_file(sub.id, fit_key, opts.split)
    state.provenance.update(run_provenance(opts, device, size, params))
    plan = PlannedRun(sub=sub, fit_key=fit_key, pred_file=pred_file, exposure=exposure_of(bench))
    if opts.use_cache and pred_file.exists() and pred_file.with_suffix(".json").exists():
        plan.cached = np.load(pred_file, allow_pickle=False)
        cached_how = json.loads(pred_file.with_suffix(".json").read_text())
        cached_how["sandboxed"] = (
            trust_level(opts) == "sandboxed"
        )  # the key says so; never trust the side file
        state.provenance.update(cached_how)
        state.provenance.update(fit_cached=True, predictions_cached=True)
        log(f"using cached predictions of {sub.id} (fitted state unchanged)")
    else:
        plan.job = base_job(sub, opts, bench, device, size)
    return plan


def run_child(
    sub: Submission,
    inputs: ChildInputs,
    opts: RunOptions,
    job: dict[str, Any],
    fit_key: str,
    exposure: Exposure,
    provenance: dict[str, Any],
    log: Log,
) -> tuple[np.ndarray | None, ChildStatus]:
    """The child part, runnable on any node: predictions and status from the sandboxed worker.

    ``inputs`` is the benchmark (local path) or a ``WorkerInputs`` (Ray task):
    train data and the images to predict, so the held-out responses need not
    exist where this runs. The submission's own cache (fitted state,
    activations) is the one of the node it runs on.
    """
    shape = (len(inputs.stimulus_ids(opts.split)), len(inputs.neuroid_ids))

    def write(workdir: Path, restorable: bool) -> None:
        _write_inputs(workdir, inputs, opts.split, need_train=not restorable, log=log)

    def read(workdir: Path, status: ChildStatus) -> np.ndarray:
        try:
            return read_predictions(workdir / worker.PREDICTIONS, shape)
        except UntrustedOutput as err:
            raise SubmissionError(
                f"submission '{sub.id}': {err}",
                f"predict(images) must return an array of shape {shape}",
            ) from None

    child = ChildRun(sub, job, exposure, write, read, fit_key=fit_key)
    return run_core_child(child, opts, provenance, log)


def _write_inputs(workdir: Path, inputs: ChildInputs, split: str, need_train: bool, log: Log) -> None:
    """Everything the child may see: the train split (unless a fitted state is there) and images to predict."""
    if need_train:
        log("loading train images ...")
        train = inputs.train_data()
        np.save(workdir / worker.TRAIN_IMAGES, train.images.numpy())
        np.save(workdir / worker.TRAIN_RESPONSES, train.responses)
        meta = {key: [str(v) for v in getattr(train, key)] for key in worker.TRAIN_META_KEYS}
        (workdir / worker.TRAIN_META).write_text(json.dumps(meta))
    log(f"loading {split} images ...")
    np.save(workdir / worker.EVAL_IMAGES, inputs.images(split).numpy())


def complete_run(
    plan: PlannedRun,
    pred: Any,
    status: ChildStatus | None,
    bench: Benchmark,
    opts: RunOptions,
    state: RunState,
    log: Log,
) -> None:
    """Driver side, after the child: validate the untrusted predictions, cache them, score them."""
    if status is not None:
        state.provenance["fit_cached"] = status.fit_cached
    if pred is None:
        raise SubmissionError(f"submission '{plan.sub.id}': the worker wrote no predictions")
    n = len(bench.stimulus_ids(opts.split))
    pred = validate_predictions(pred, n, len(bench.neuroid_ids), plan.sub.id)
    if opts.use_cache and not state.provenance["predictions_cached"]:
        _store_predictions(plan, pred, opts, state.provenance, log)
    log("scoring ...")
    _fill_scores(state, bench.score(pred, opts.split, n_boot=opts.n_boot, seed=opts.seed))


def _store_predictions(
    plan: PlannedRun, pred: np.ndarray, opts: RunOptions, provenance: dict[str, Any], log: Log
) -> None:
    """Cache predictions with how they were made (a warm re-score reports the same)."""
    if store_in_parent_cache(plan.pred_file, pred, plan.sub, opts, log):
        keep = {k: provenance.get(k) for k in ("device", "sandboxed", "peak_rss_gb")}
        if provenance.get("environment"):  # the submission's own packages made them
            keep["environment"] = provenance["environment"]
        plan.pred_file.with_suffix(".json").write_text(json.dumps(keep))


def _fill_scores(state: RunState, scored: dict[str, Any]) -> None:
    """The record's score blocks, from what ``Benchmark.score`` computed."""
    state.record.scores = Scores.model_validate(scored["scores"])
    state.record.per_neuroid = PerNeuroid.model_validate(scored["per_neuroid"])
    state.record.examples = Examples.model_validate(scored["examples"]) if scored["examples"] else None
    if scored.get("bootstrap"):
        state.record.bootstrap = BootstrapSummary.model_validate(scored["bootstrap"])
    state.record.normalisations = {
        k: Normalisation.model_validate(v) for k, v in scored.get("normalisations", {}).items()
    } or None
