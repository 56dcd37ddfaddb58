"""``itbench score --protocol brainscore`` end to end, checked against an independent computation.

A small benchmark in the exact BrainIO layout is registered with ``data add``;
two tiny submissions run in the real sandboxed worker: one offers
``features(images)`` (read out with PLS(25) by the scorer, features extracted
once), one does not (fitted by its own ``fit`` once per split). The numbers in
the records are recomputed here with sklearn's StratifiedShuffleSplit, PLS or
Ridge, and scipy's pearsonr.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import scipy.stats
import torch
from helpers_data import (
    hvm_like_table,
    isolate,
    make_trials,
    write_brainio_netcdf,
    write_png_zip,
    write_stimulus_csv,
)
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import Ridge
from sklearn.model_selection import StratifiedShuffleSplit

from itbench.data.add import AddRequest, add_benchmark
from itbench.harness.runner import RunOptions, score_submission
from itbench.scoring.benchmark import load_benchmark

MODEL = """
import numpy as np
import torch


def pooled(images):
    return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1).numpy().astype(np.float64)


class Model:
    def fit(self, train):
        from sklearn.linear_model import Ridge

        self.ridge = Ridge(alpha=1.0).fit(pooled(train.images), train.responses)
        return self

    def predict(self, images):
        return self.ridge.predict(pooled(images))
{extra}

def build(ctx):
    return Model()
"""
FEATURES = """
    def features(self, images):
        return pooled(images)
"""


def _submission(root, name: str, with_features: bool) -> None:
    folder = root / "submissions" / name
    folder.mkdir(parents=True)
    (folder / "submission.toml").write_text(f'name = "{name}"\n[needs]\ngpu = false\nweights = []\n')
    (folder / "model.py").write_text(textwrap.dedent(MODEL.format(extra=FEATURES if with_features else "")))


@pytest.fixture
def bench_and_root(tmp_path, monkeypatch):
    _home, root = isolate(tmp_path, monkeypatch)
    monkeypatch.setenv("ITBENCH_RESULTS", str(tmp_path / "results"))
    folder = tmp_path / "files"
    folder.mkdir()
    table = hvm_like_table(n_objects=4, per_object=10)
    trials = make_trials(table, n_reps=4, n_it=6, n_v4=2)
    # a per-stimulus signal under the trial noise, so the split-half ceiling is well above 0
    codes = {sid: k for k, sid in enumerate(table["stimulus_id"])}
    signal = np.random.default_rng(5).normal(scale=2.0, size=(8, len(table)))
    rows = [codes[str(s)] for s in trials["stimulus_id"].values]
    trials = trials + signal[:, rows][:, :, None].astype(np.float32)
    write_stimulus_csv(table, folder / "s.csv")
    write_png_zip(table, folder / "s.zip")
    write_brainio_netcdf(trials, folder / "a.nc")
    add_benchmark(
        AddRequest("tiny", str(folder / "a.nc"), str(folder / "s.csv"), str(folder / "s.zip"), region="IT")
    )
    _submission(root, "with_features", True)
    _submission(root, "own_fit", False)
    return load_benchmark("tiny"), root


def _independent(bench, readout) -> tuple[float, float]:
    """Brain-Score's protocol written from scratch: stimuli sorted by id, stratified 10 x 90/10, r, median, mean."""
    resp = bench.source.responses
    ids = np.asarray(resp.stimulus_id.values).astype(str)
    order = np.argsort(ids)
    y = np.asarray(resp.values, dtype=np.float64)[order]
    objects = np.asarray(resp.object_name.values).astype(str)[order]
    images = bench.source.stimuli.load_images(list(ids[order]))
    x = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1).numpy().astype(np.float64)
    medians = []
    split = StratifiedShuffleSplit(n_splits=10, train_size=0.9, test_size=None, random_state=1)
    for train, test in split.split(np.zeros(len(y)), objects):
        pred = readout().fit(x[train], y[train]).predict(x[test])
        medians.append(
            np.median([scipy.stats.pearsonr(pred[:, j], y[test, j])[0] for j in range(y.shape[1])])
        )
    return float(np.mean(medians)), float(np.std(medians) / np.sqrt(10))


def test_features_are_read_out_with_pls_and_models_without_are_fitted_per_split(bench_and_root):
    bench, root = bench_and_root
    opts = RunOptions(protocol="brainscore", device="cpu")
    rec = score_submission(root / "submissions" / "with_features", "tiny", options=opts, log=lambda m: None)
    assert rec.status == "ok", rec.error
    assert rec.protocol == "brainscore" and rec.split == "cv" and rec.path.name == "with_features.cv.json"
    raw, err = _independent(bench, lambda: PLSRegression(n_components=25, scale=False))
    assert rec.brainscore.raw_r == pytest.approx(raw, abs=1e-6)
    assert rec.brainscore.raw_r_error == pytest.approx(err, abs=1e-6)
    assert "PLSRegression(n_components=25" in rec.brainscore.settings["readout"]
    assert rec.brainscore.ceiling is not None and rec.normalisations is not None
    pre = rec.normalisations["brainscore_pre2026"].value
    assert pre == pytest.approx((raw / rec.brainscore.ceiling) ** 2, abs=1e-6)
    assert rec.normalisations["brainscore_pr2169"].value == pytest.approx(
        raw**2 / rec.brainscore.ceiling, abs=1e-6
    )
    # itbench's headline of the CV raw r: noise-corrected, bounded by ~1 (issue 19)
    assert rec.scores.normalized_r == pytest.approx(raw / rec.brainscore.ceiling**0.5, abs=1e-6)
    assert rec.scores.r_over_ceiling == pytest.approx(raw / rec.brainscore.ceiling, abs=1e-6)
    assert rec.normalisations["itbench_normalized_r"].value == rec.scores.normalized_r
    # a re-score reuses the features extracted once
    again = score_submission(root / "submissions" / "with_features", "tiny", options=opts, log=lambda m: None)
    assert again.provenance.model_dump().get("predictions_cached") is True
    assert again.brainscore.raw_r == rec.brainscore.raw_r

    own = score_submission(root / "submissions" / "own_fit", "tiny", options=opts, log=lambda m: None)
    assert own.status == "ok", own.error
    raw, err = _independent(bench, lambda: Ridge(alpha=1.0))
    assert own.brainscore.raw_r == pytest.approx(raw, abs=1e-5)
    assert "own fit" in own.brainscore.settings["readout"]


def test_fixed_split_records_carry_protocol_and_both_normalisations(bench_and_root):
    _bench, root = bench_and_root
    rec = score_submission(
        root / "submissions" / "own_fit",
        "tiny",
        options=RunOptions(device="cpu", n_boot=0),
        log=lambda m: None,
    )
    assert rec.status == "ok", rec.error
    assert rec.protocol == "fixed-split" and rec.split == "val"
    r, c = rec.scores.median_r, rec.scores.ceiling
    assert rec.normalisations["brainscore_pre2026"].value == pytest.approx((r / c) ** 2)
    assert rec.normalisations["brainscore_pr2169"].value == pytest.approx(r**2 / c)
    assert rec.scores.normalized_r == pytest.approx(r / c**0.5)
    assert rec.normalisations["itbench_normalized_r"].formula == "median r / sqrt(median ceiling)"
    assert rec.normalisations["itbench_r_over_ceiling"].value == pytest.approx(r / c)
    assert '"protocol": "fixed-split"' in rec.path.read_text()
