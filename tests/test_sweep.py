"""Fig. 1 on the demo: the layer sweep recovers the layer the generator planted.

The demo's surrogate sites are a readout of EfficientNet-Lite0 at one layer
(benchmark/demo/manifest.json, settings.layer). Feature extraction, PCA,
ridge and scoring together must find that layer as the peak, and ImageNet
weights must beat the random-init twin by a wide margin.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itbench.harness.record import SweepRecord, read_record
from itbench.harness.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
PLANTED = json.loads((REPO / "benchmark" / "demo" / "manifest.json").read_text())["settings"]["layer"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    out = {}
    # the middle-to-late layers around the planted one (the earliest, largest maps
    # only cost CI time); the random twin at the same depths
    layers = {
        True: ["blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "global_pool"],
        False: ["blocks.3", "blocks.4", "blocks.5"],
    }
    for pretrained in (True, False):
        out[pretrained] = run_sweep(
            "efficientnet_lite0",
            layers[pretrained],
            pretrained=pretrained,
            benchmark_id="demo",
            device="cpu",
            n_components=300,
            n_boot=100,
            results_root=root,
        )
    return out


def _mean_r(record: SweepRecord) -> dict[str, float]:
    return {entry.layer: entry.scores.mean_r for entry in record.layers}


def test_sweep_peaks_at_the_planted_layer(sweeps):
    scores = _mean_r(sweeps[True])
    print("\n" + "\n".join(f"{layer:<12} {r:.3f}" for layer, r in scores.items()))
    assert max(scores, key=scores.get) == PLANTED


def test_pretrained_beats_random_twin_widely(sweeps):
    pretrained, random = _mean_r(sweeps[True]), _mean_r(sweeps[False])
    assert pretrained[PLANTED] > max(random.values()) + 0.15


def test_sweep_record_on_disk(sweeps):
    record = read_record(sweeps[True].path)
    assert record.to_json() == sweeps[True].to_json()  # what was returned is what was stored
    assert record.kind == "sweep" and record.weights == "pretrained"
    assert [e.depth for e in record.layers] == list(range(len(record.layers)))
    for entry in record.layers:
        lo, hi = entry.scores.ci["mean_r"]
        assert lo <= entry.scores.mean_r <= hi
    assert sweeps[False].path.name == "efficientnet_lite0-random.json"
