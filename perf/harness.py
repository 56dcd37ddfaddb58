"""Harness timings: a warm re-score and a leaderboard render, as a user runs them.

``run(quick, device) -> list[dict]`` rows for perf/run.py. Both are timed as
whole ``itbench`` processes (what a user waits for), in a private data home:

* ``warm_rescore``: ``itbench score submissions/pixels_ridge`` on the demo,
  cold (fit + predict in the sandbox) then warm (cached fitted state and
  predictions). Target: warm <= 2 s. Ratio = cold / warm.
* ``leaderboard_20``: ``itbench leaderboard`` over 20 records (copies of the
  test fixtures, with a sweep). Target: <= 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "records"


def _itbench(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one ``itbench`` process (raises if it fails)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "itbench.cli", *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ITBENCH_HOME": str(home),
        "ITBENCH_RESULTS": str(home / "results"),
        "ITBENCH_ROOT": str(ROOT),
    }


def warm_rescore(repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="itbench-bench-") as tmp:
        env = _env(Path(tmp))
        args = ["score", "submissions/pixels_ridge", "--benchmark", "demo", "--device", "cpu"]
        cold = _itbench(args, env)
        warm = statistics.median(_itbench(args, env) for _ in range(repeats))
    return {
        "task": "warm_rescore",
        "ours_s": warm,
        "ref_s": cold,
        "ratio": cold / warm,
        "accuracy": "same record scores (cached predictions)",
        "target": "warm <= 2 s",
        "met": warm <= 2.0,
        "notes": f"cold (fit+predict) {cold:.1f} s; median of {repeats} warm runs",
    }


def _twenty_records(root: Path) -> int:
    """Copy the fixture records until there are 20 (ids made unique)."""
    sources = sorted(
        p
        for p in FIXTURES.rglob("*.json")
        if "sweeps" not in p.parts and p.name not in ("broken.json", "wrong_schema.json")
    )
    count = 0
    for i in range(20):
        src = sources[i % len(sources)]
        record = json.loads(src.read_text())
        if record.get("kind") == "sweep":
            continue
        record["submission"]["id"] = f"{record['submission']['id']}_{i}"
        boot = record.get("bootstrap")
        if boot:  # as the scorer writes them: 1000 shared resamples per record, all pairs compared
            boot["n_boot"] = 1000
            for key in ("mean_r", "normalized_r"):
                if boot.get(key):
                    boot[key] = (boot[key] * (1000 // len(boot[key]) + 1))[:1000]
        bench = record["benchmark"]["id"]
        (root / bench).mkdir(parents=True, exist_ok=True)
        (root / bench / f"{record['submission']['id']}.json").write_text(json.dumps(record))
        count += 1
    for sweep in (FIXTURES / "demo" / "sweeps").glob("*.json"):
        (root / "demo" / "sweeps").mkdir(parents=True, exist_ok=True)
        shutil.copy(sweep, root / "demo" / "sweeps" / sweep.name)
    return count


def leaderboard_20(repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="itbench-bench-") as tmp:
        env = _env(Path(tmp))
        n = _twenty_records(Path(tmp) / "results")
        cold = []
        for i in range(repeats):  # a fresh output folder each time: every figure drawn
            cold.append(_itbench(["leaderboard", "--out", str(Path(tmp) / f"cold{i}")], env))
        warm = [_itbench(["leaderboard", "--out", str(Path(tmp) / "cold0")], env) for _ in range(repeats)]
    median, median_cold = statistics.median(warm), statistics.median(cold)
    return {
        "task": "leaderboard_20",
        "ours_s": median,
        "ref_s": median_cold,
        "ratio": round(median_cold / median, 2),
        "accuracy": f"{n} submission records + sweeps rendered",
        "target": "<= 2 s",
        "met": median <= 2.0,
        "notes": f"whole `itbench leaderboard` process, median of {repeats}: re-render of unchanged records "
        f"(figures reused) {median:.2f} s; first render into an empty folder (every figure drawn, "
        f"matplotlib imported) {median_cold:.2f} s",
    }


def run(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    repeats = 3 if quick else 5
    return [warm_rescore(repeats), leaderboard_20(repeats)]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
