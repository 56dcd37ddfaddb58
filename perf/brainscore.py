"""Speed against the anchor: Brain-Score's own ``pls`` metric vs itbench's ``pls_cv``, same features, one run.

``run(quick) -> list[dict]`` rows for perf/run.py, only with ``--only brainscore``
(the full run takes Brain-Score's code about half an hour). The features are
Brain-Score's ``pixels`` plugin's own activations of the demo's 640 stimuli
(``load_model('pixels').look_at``, in the reference environment of
``itbench.scoring.brainscore_reference``): all 196,608 in a full run, every
64th (3,072) with ``--quick``. Brain-Score's time is its metric call alone
(``metric(source, target)``, measured inside the reference environment:
10 stratified splits, PLS(25) per split, Pearson r); ours is
``itbench.scoring.brainscore.pls_cv`` on the same columns in this process.
Ratio = Brain-Score / itbench; the accuracy column is the largest difference of
raw r and of the per-split median r, which must stay <= 1e-6.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FULL_STRIDE, QUICK_STRIDE = 1, 64


def _demo() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """The demo benchmark, its stimulus ids and object names in the protocol's order, responses."""
    from itbench.scoring.benchmark import load_benchmark

    bench = load_benchmark("demo")
    resp = bench.source.responses
    ids = np.asarray(resp.stimulus_id.values).astype(str)
    order = np.argsort(ids)
    objects = np.asarray(resp.object_name.values).astype(str)[order]
    return bench, ids[order], objects, np.asarray(resp.values, dtype=np.float64)[order]


def _files(bench: Any, ids: np.ndarray, folder: Path) -> list[Path]:
    with zipfile.ZipFile(ROOT / "benchmark" / "demo" / "stimuli.zip") as archive:
        archive.extractall(folder)
    meta = bench.source.stimuli.metadata
    return [folder / str(meta.loc[i, "filename"]) for i in ids]


def run(quick: bool = False) -> list[dict[str, Any]]:
    from itbench.scoring import brainscore, brainscore_reference

    stride = QUICK_STRIDE if quick else FULL_STRIDE
    bench, ids, objects, responses = _demo()
    with tempfile.TemporaryDirectory(prefix="perf-brainscore-") as tmp:
        work = Path(tmp)
        plugin = brainscore_reference.PixelsPlugin(
            _files(bench, ids, work / "stimuli"), stride=stride, save_full=work / "pixels.npy"
        )
        theirs = brainscore_reference.score_sources(
            bench.source.trials, ids, objects, work, pixels=plugin, log=print
        )["pixels"]
        features = np.load(work / "pixels.npy")[:, ::stride]
    started = time.perf_counter()
    ours = brainscore.pls_cv(features, responses, brainscore.cv_splits(objects))
    ours_s = time.perf_counter() - started
    diff_raw = abs(ours.raw - theirs["raw_r"])
    diff_split = float(np.max(np.abs(ours.split_scores - np.asarray(theirs["split_median_r"]))))
    ok = max(diff_raw, diff_split) <= 1e-6
    width = features.shape[1]
    return [
        {
            "task": f"brainscore_pls_pixels_{width}",
            "ours": "itbench.scoring.brainscore.pls_cv",
            "reference": f"brainscore-vision {theirs['versions']['brainscore-vision']} load_metric('pls')",
            "ours_s": ours_s,
            "ref_s": theirs["metric_seconds"],
            "ratio": theirs["metric_seconds"] / ours_s,
            "accuracy": f"raw r diff {diff_raw:.1e}, split median r max diff {diff_split:.1e} "
            f"(raw r {ours.raw:.6f})",
            "accuracy_ok": ok,
            "target": "same raw r and split medians (<= 1e-6); ratio measured",
            "met": ok,
            "notes": f"Brain-Score's pixels plugin activations of the demo's {len(ids)} stimuli, "
            f"every {stride}th of 196,608 features ({width}), 10 splits, PLS(25); each side timed once, "
            "Brain-Score's metric call in its own environment, ours in this process",
        }
    ]
