"""Every submission folder fits and predicts on a small demo subset (CI-sized).

Rows that download weights on a real machine run here with random weights
(ITBENCH_RANDOM_WEIGHTS=1, the test-only switch), through the same code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from itbench.contract import Context, TrainData
from itbench.harness import environments
from itbench.harness.submission import build_model, discover
from itbench.scoring.benchmark import load_benchmark

SUBMISSIONS = discover()
N_TRAIN, N_EVAL = 48, 12


@pytest.fixture(scope="module")
def subset():
    bench = load_benchmark("demo")
    full = bench.train_data()
    pick = np.arange(N_TRAIN)
    train = TrainData(
        full.images[pick],
        full.responses[pick],
        full.stimulus_id[pick],
        full.object_name[pick],
        full.category_name[pick],
        full.neuroid_id,
    )
    return train, bench.images("val")[:N_EVAL]


def test_all_table1_rows_present():
    rows = sorted(s.table1_row for s in SUBMISSIONS if s.table1_row)
    assert rows == list(range(1, 13))


@pytest.mark.parametrize("sub", SUBMISSIONS, ids=[s.id for s in SUBMISSIONS])
def test_fit_predict_on_demo_subset(sub, subset, monkeypatch, tmp_path):
    if environments.declared(sub) is not None:  # its packages are not the harness's: imported only in its env
        pytest.skip("brings its own environment: scored sandboxed in it (tests/test_brainscore_plugin.py)")
    monkeypatch.setenv("ITBENCH_RANDOM_WEIGHTS", "1")
    monkeypatch.setenv("ITBENCH_CACHE", str(tmp_path.parent / "shared-cache"))
    size = "ci" if "ci" in sub.sizes else ("small" if "small" in sub.sizes else "full")
    params = sub.params_for(size)
    if "n_components" in params:
        params["n_components"] = 32  # PCA is clipped to n-1 anyway; keep CI quick
    train, images = subset
    if sub.needs_gpu:  # trained networks: fewer images keep CI in minutes; same code path
        keep = np.arange(N_TRAIN // 2)
        train = TrainData(
            train.images[keep],
            train.responses[keep],
            train.stimulus_id[keep],
            train.object_name[keep],
            train.category_name[keep],
            train.neuroid_id,
        )
    torch.manual_seed(0)
    model = build_model(sub, Context(device="cpu", batch_size=16, params=params, size=size))
    if hasattr(model, "fit"):
        model.fit(train)
    pred = np.asarray(model.predict(images))
    assert pred.shape == (N_EVAL, train.responses.shape[1])
    assert np.isfinite(pred).all()
    assert pred.std() > 0  # not a constant output
    if hasattr(model, "save"):  # fitted state round-trips: same predictions after load
        model.save(tmp_path)
        fresh = build_model(sub, Context(device="cpu", batch_size=16, params=params, size=size))
        fresh.load(tmp_path)
        np.testing.assert_allclose(np.asarray(fresh.predict(images)), pred, rtol=1e-4, atol=1e-4)
