"""Parity with Brain-Score's own code: the ``brainscore`` protocol's record equals what Brain-Score computes.

The reference is brainscore-vision 2.4.2 itself, in an environment of its own
built with uv (``itbench.scoring.brainscore_reference``). On the demo
benchmark (640 stimuli with responses, 168 sites, 20 repetitions):

- features-only submissions, one wider than the stimuli (16 x 16 pooled RGB:
  768 features) and one narrower (8 x 8: 192), scored by ``itbench score
  --protocol brainscore``; the same features go to Brain-Score's ``pls``
  metric against ``average_repetition`` of the exported trial-level assembly,
  its ``internal_consistency`` ceiling and its ``explained_variance``;
- the end-to-end anchor: Brain-Score's ``pixels`` plugin looks at the demo's
  stimulus files (``load_model('pixels').look_at``) and its metric scores
  its activations; ``submissions/brainscore_pixels`` reproduces the plugin
  from itbench's model input and is scored by itbench. CI size: every 256th
  of the plugin's 196,608 features (768, still wider than the stimuli), the
  same columns on both sides; the features themselves are compared at full
  width; the full-width score is a perf run (``perf/brainscore.py``).

Every number the record carries for the protocol must agree to 1e-6. When the
package registry cannot be reached the tests skip with that one-line reason.
"""

from __future__ import annotations

import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from itbench.harness.runner import RunOptions, score_submission
from itbench.scoring import brainscore_reference as ref
from itbench.scoring.benchmark import load_benchmark

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-6
PIXELS_STRIDE = 256  # submissions/brainscore_pixels' `ci` size
POOLS = (16, 8)

MODEL = """
import numpy as np
import torch


def pooled(images):
    return torch.nn.functional.adaptive_avg_pool2d(images, {pool}).flatten(1).numpy().astype(np.float64)


class Model:
    def features(self, images):
        return pooled(images)

    def predict(self, images):
        raise RuntimeError("features only: score with --protocol brainscore")


def build(ctx):
    return Model()
"""


@pytest.fixture(scope="module")
def reference_env() -> Path:
    """Brain-Score's environment, built (or found in the cache); a one-line skip without a registry."""
    try:
        return ref.ensure_env()
    except ref.ReferenceUnavailable as err:
        pytest.skip(f"Brain-Score reference environment unavailable: {err}")


@pytest.fixture(scope="module")
def demo() -> Any:
    return load_benchmark("demo")


@pytest.fixture(scope="module")
def demo_images(demo: Any) -> torch.Tensor:
    """The model input of every stimulus with responses, in the protocol's order (decoded once)."""
    return demo.source.stimuli.load_images(list(_sorted_stimuli(demo)[0]), progress=False)


def _sorted_stimuli(bench: Any) -> tuple[np.ndarray, np.ndarray]:
    resp = bench.source.responses
    ids = np.asarray(resp.stimulus_id.values).astype(str)
    order = np.argsort(ids)
    return ids[order], np.asarray(resp.object_name.values).astype(str)[order]


def _pooled(images: torch.Tensor, pool: int) -> np.ndarray:
    return torch.nn.functional.adaptive_avg_pool2d(images, pool).flatten(1).numpy().astype(np.float64)


def _stimulus_files(bench: Any, ids: np.ndarray, folder: Path) -> list[Path]:
    """The demo's stimulus files on disk, as Brain-Score models take them (paths)."""
    meta = bench.source.stimuli.metadata
    with zipfile.ZipFile(REPO / "benchmark" / "demo" / "stimuli.zip") as archive:
        archive.extractall(folder)
    return [folder / str(meta.loc[i, "filename"]) for i in ids]


def _features_submission(root: Path, pool: int) -> Path:
    folder = root / "submissions" / f"pooled{pool}"
    folder.mkdir(parents=True)
    (folder / "submission.toml").write_text(f'name = "pooled {pool}"\n[needs]\ngpu = false\nweights = []\n')
    (folder / "model.py").write_text(textwrap.dedent(MODEL.format(pool=pool)))
    return folder


def _itbench_record(folder: Path, tmp: Path, size: str = "auto") -> Any:
    opts = RunOptions(protocol="brainscore", device="cpu", size=size, results_root=tmp / "results")
    record = score_submission(folder, "demo", options=opts, log=lambda m: None)
    assert record.status == "ok", record.error
    return record


def _assert_parity(record: Any, theirs: dict[str, Any]) -> None:
    """Every number of the record's brainscore block against Brain-Score's, to 1e-6."""
    ours = record.brainscore
    pairs = {
        "raw_r": (ours.raw_r, theirs["raw_r"]),
        "raw_r_error": (ours.raw_r_error, theirs["raw_r_error"]),
        "ceiling": (ours.ceiling, theirs["ceiling"]),
        "ceiling_error": (ours.ceiling_error, theirs["ceiling_error"]),
        "pr2169": (ours.normalisations["brainscore_pr2169"].value, theirs["brainscore_pr2169"]),
        "pre2026": (ours.normalisations["brainscore_pre2026"].value, theirs["brainscore_pre2026"]),
    }
    for name, (a, b) in pairs.items():
        assert a is not None and abs(a - b) <= TOL, f"{name}: itbench {a} vs Brain-Score {b}"
    worst = max(abs(a - b) for a, b in pairs.values() if a is not None)
    worst = max(worst, *np.abs(np.subtract(ours.split_median_r, theirs["split_median_r"])))
    print(f"\nparity {theirs['source_shape']}: max |itbench - Brain-Score| = {worst:.1e}")  # -s shows it
    np.testing.assert_allclose(ours.split_median_r, theirs["split_median_r"], rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.split_ceiling, theirs["split_ceiling"], rtol=0, atol=TOL)
    by_id = dict(zip(theirs["neuroid_id"], theirs["per_neuroid_r"], strict=True))
    mine = dict(zip(map(str, record.per_neuroid.neuroid_id), record.per_neuroid.r, strict=True))
    assert set(by_id) == set(mine)
    np.testing.assert_allclose([mine[k] for k in by_id], list(by_id.values()), rtol=0, atol=TOL)
    assert len(theirs["split_median_r"]) == 10 and theirs["ceiling"] > 0.5  # the real protocol ran


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("brainscore-reference")


@pytest.fixture(scope="module")
def theirs(reference_env, demo, demo_images, work) -> dict[str, dict[str, Any]]:
    """Brain-Score's numbers for every source of this module, in one reference run (one import, one ceiling)."""
    ids, objects = _sorted_stimuli(demo)
    features = {f"pooled{p}": _pooled(demo_images, p) for p in POOLS}
    plugin = ref.PixelsPlugin(
        _stimulus_files(demo, ids, work / "stimuli"), stride=PIXELS_STRIDE, save_full=work / "pixels.npy"
    )
    return ref.score_sources(demo.source.trials, ids, objects, work, features=features, pixels=plugin)


@pytest.mark.parametrize("pool", POOLS, ids=["wider-768", "narrower-192"])
def test_features_submission_matches_brainscore(theirs, demo, tmp_path, pool):
    record = _itbench_record(_features_submission(tmp_path, pool), tmp_path)
    n = len(_sorted_stimuli(demo)[0])
    assert theirs[f"pooled{pool}"]["source_shape"] == [n, 3 * pool * pool]
    assert (3 * pool * pool > n) == (pool == 16)  # one case wider than the stimuli, one narrower
    _assert_parity(record, theirs[f"pooled{pool}"])


def test_pixels_plugin_end_to_end_matches_brainscore(theirs, demo, tmp_path):
    record = _itbench_record(REPO / "submissions" / "brainscore_pixels", tmp_path, size="ci")
    n = len(_sorted_stimuli(demo)[0])
    assert theirs["pixels"]["plugin_shape"] == [n, 256 * 256 * 3]  # the plugin's own full width
    assert theirs["pixels"]["source_shape"] == [n, 256 * 256 * 3 // PIXELS_STRIDE]
    _assert_parity(record, theirs["pixels"])


def test_pixels_featurizer_reproduces_the_plugin_features(theirs, demo, demo_images, work):
    """The submission's features are the plugin's, value for value (uint8 pixels, all 196,608 columns)."""
    from itbench.models.brainscore_pixels import BrainScorePixels

    ids = _sorted_stimuli(demo)[0]
    assert theirs["pixels"]["plugin_stimulus_id"] == list(ids)
    plugin = np.load(work / "pixels.npy", mmap_mode="r")
    pick = np.arange(0, len(ids), 10)  # 64 of the 640 stimuli keep it quick
    ours = BrainScorePixels(source_size=128, stride=1)(demo_images[pick])
    assert ours.shape == (len(pick), 196_608)
    np.testing.assert_array_equal(ours, np.asarray(plugin[pick]).astype(np.float32))
