"""Issue 22, items 3, 4 and 6: what public records hold, whose limits a run gets, who can reach Ray.

- held-out responses in records: a test-split record, scored for real through
  the CLI, holds no number equal to a test response;
- limits belong to the operator: a submission's ``[limits]`` may ask for less
  than the operator's maxima, never more (refused with the maximum named), and
  the effective limits are in the record;
- the private local Ray listens on loopback only, without a dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from itbench.scoring.benchmark import example_neuroids, load_benchmark

from .conftest import REPO

# --- held-out responses in public records ------------------------------------------------


def _floats(value: Any, where: str = "") -> Iterator[tuple[str, float]]:
    """Every JSON float of a parsed record that comes from the data, with where it is.

    Left out: JSON integers (counts of images, neuroids, evaluations; the demo's
    trials are integer spike counts) and ``provenance`` (wall time, peak memory:
    the parent's facts about the run, rounded to 2-3 decimals, while the demo's
    trial averages are multiples of 1/20, so they meet by chance).
    """
    if isinstance(value, float):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if not (where == "" and key == "provenance"):
                yield from _floats(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _floats(item, f"{where}[]")


def _responses(split: str) -> set[float]:
    """The split's measured values: trial averages and single trials, exact and as records round."""
    bench = load_benchmark("demo")
    values = [bench.responses(split).ravel()]
    trials = bench.trials(split)
    if trials is not None:
        values.append(trials[np.isfinite(trials)].ravel())
    both = np.concatenate(values).astype(np.float64)
    return set(both.tolist()) | set(np.round(both, 6).tolist())


def _leaks(record: dict[str, Any], split: str) -> list[str]:
    measured = _responses(split)
    return [where for where, v in _floats(record) if v in measured]


def test_scanner_finds_measured_examples_of_a_development_split() -> None:
    """The check can fail: a val result carries its example neuroids' measured responses."""
    bench = load_benchmark("demo")
    n, k = len(bench.stimulus_ids("val")), len(bench.neuroid_ids)
    pred = np.random.default_rng(0).normal(size=(n, k))
    scored = bench.score(pred, "val", n_boot=0)
    leaks = _leaks(json.loads(json.dumps(scored, default=float)), "val")
    assert len(leaks) >= len(scored["examples"]["neuroid_id"]) * n * 0.99
    assert all(w.startswith(".examples.measured") for w in leaks)


def test_example_neuroids_are_the_benchmarks_not_the_submissions() -> None:
    """val shows the same neuroids whatever is predicted; test shows none; the rule is by split."""
    bench = load_benchmark("demo")
    n, k = len(bench.stimulus_ids("val")), len(bench.neuroid_ids)
    rng = np.random.default_rng(1)
    first = bench.score(rng.normal(size=(n, k)), "val", n_boot=0)["examples"]["neuroid_id"]
    steer = np.zeros((n, k))
    steer[:, 7] = bench.responses("val")[:, 7]  # a prediction that makes neuroid 7 the best
    second = bench.score(steer + rng.normal(size=(n, k)) * 1e-3, "val", n_boot=0)["examples"]["neuroid_id"]
    assert first == second == [str(bench.neuroid_ids[i]) for i in example_neuroids("val", k)]
    assert str(bench.neuroid_ids[7]) not in first
    assert example_neuroids("test", k) == [] and example_neuroids("test", 5) == []
    assert example_neuroids("val", 3) == [0, 1, 2]


def test_a_confirmed_test_record_holds_no_test_response(tmp_path: Path) -> None:
    """Score on test through the CLI, then look for every test response in the record's floats."""
    env = {**os.environ, "ITBENCH_RESULTS": str(tmp_path / "results")}
    args = ["pixels_ridge", "-b", "demo", "--split", "test", "--confirm-test", "--n-boot", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "itbench.cli", "score", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "results" / "demo" / "pixels_ridge.test.json").read_text())
    assert record["status"] == "ok" and record["split"] == "test"
    assert record["examples"] is None
    assert len(list(_floats(record))) > 2 * len(record["per_neuroid"]["r"])  # a full record
    assert _leaks(record, "test") == []


def test_a_test_record_from_before_the_rule_loses_its_examples_on_read(tmp_path: Path) -> None:
    from itbench.harness.record import read_record

    fixture = json.loads((REPO / "tests/fixtures/records/demo/resnet50_layer3.json").read_text())
    assert fixture["examples"]["measured"]  # a val record keeps its examples
    old = {**fixture, "split": "test"}
    path = tmp_path / "old.test.json"
    path.write_text(json.dumps(old))
    record = read_record(path)
    assert record.examples is None
    assert '"measured"' not in record.to_json()
