"""Layer selection in sweeps: ``train-cv`` never looks at the scored split; the default says it does."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_data import (
    hvm_like_table,
    isolate,
    make_trials,
    write_brainio_netcdf,
    write_png_zip,
    write_stimulus_csv,
)

from itbench.data.add import AddRequest, add_benchmark
from itbench.harness.sweep import run_sweep
from itbench.scoring.benchmark import load_benchmark

LAYERS = ["blocks.1", "blocks.3", "global_pool"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)
    monkeypatch.setenv("ITBENCH_RANDOM_WEIGHTS", "1")
    folder = tmp_path / "files"
    folder.mkdir()
    table = hvm_like_table(n_objects=4, per_object=10)
    write_brainio_netcdf(make_trials(table, n_reps=2, n_it=6, n_v4=0), folder / "a.nc")
    write_stimulus_csv(table, folder / "s.csv")
    write_png_zip(table, folder / "s.zip")
    add_benchmark(AddRequest("tinysweep", str(folder / "a.nc"), str(folder / "s.csv"), str(folder / "s.zip")))
    return tmp_path


def _sweep(root, select_on):
    return run_sweep(
        "efficientnet_lite0",
        LAYERS,
        benchmark_id="tinysweep",
        device="cpu",
        n_components=8,
        n_boot=0,
        results_root=root / "results",
        select_on=select_on,
        log=lambda m: None,
    )


def test_train_cv_choice_ignores_held_out_responses_and_the_default_is_flagged(tiny):
    flagged = _sweep(tiny, "scored-split")
    sel = flagged.layer_selection
    val_r = {e.layer: e.scores.mean_r for e in flagged.layers}
    assert sel.method == "scored-split" and sel.leaks and "val split itself" in sel.note
    assert sel.chosen == max(val_r, key=val_r.get)

    honest = _sweep(tiny, "train-cv")
    sel = honest.layer_selection
    assert sel.method == "train-cv" and not sel.leaks and set(sel.cv_scores) == set(LAYERS)
    assert sel.chosen == max(sel.cv_scores, key=sel.cv_scores.get)
    assert sel.chosen_scores.mean_r == pytest.approx(
        val_r[sel.chosen]
    )  # reports the chosen layer's val score

    # scramble every val and test response: the train-CV scores and choice must not move
    bench = load_benchmark("tinysweep")
    resp = bench.source.responses
    held = np.isin(
        resp.stimulus_id.values.astype(str),
        np.concatenate([bench.stimulus_ids("val"), bench.stimulus_ids("test")]),
    )
    resp.values[held] = np.random.default_rng(0).normal(size=resp.values[held].shape)
    again = _sweep(tiny, "train-cv")
    assert again.layer_selection.cv_scores == pytest.approx(sel.cv_scores, abs=1e-9)
    assert again.layer_selection.chosen == sel.chosen
    assert again.layers[0].scores.mean_r != pytest.approx(honest.layers[0].scores.mean_r)  # val did change
