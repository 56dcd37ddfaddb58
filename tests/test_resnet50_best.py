"""`itbench score submissions/resnet50_best`, the README's first example, works as written.

The weights cannot be fetched here (a private, empty torch cache and a proxy
that refuses every connection), so the run must end as a ``skipped`` record
with a one-line reason and exit status 0, never as a crash or a failure.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from itbench.harness.record import read_record

REPO = Path(__file__).resolve().parents[1]


def test_score_resnet50_best_offline_is_a_skipped_record(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ITBENCH_RESULTS": str(tmp_path / "results"),
        "ITBENCH_HOME": str(tmp_path / "home"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "HF_HOME": str(tmp_path / "hf"),
        "HTTPS_PROXY": "http://127.0.0.1:9",  # nothing listens on the discard port: no download
        "https_proxy": "http://127.0.0.1:9",
    }
    env.pop("ITBENCH_RANDOM_WEIGHTS", None)  # real weights are asked for, and cannot be had
    done = subprocess.run(
        [sys.executable, "-m", "itbench.cli", "score", "submissions/resnet50_best", "--benchmark", "demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = read_record(tmp_path / "results" / "demo" / "resnet50_best.json")
    assert record.submission.id == "resnet50_best" and record.submission.table1_row == 12
    assert record.status == "skipped" and record.scores is None
    assert "resnet50 weights" in (record.error or "").splitlines()[0]
    assert "SKIPPED" in done.stdout


def test_table1_csv_names_the_submission_of_every_row() -> None:
    with (REPO / "benchmark" / "table1.csv").open() as handle:
        rows = {int(r["row"]): r["submission"] for r in csv.DictReader(handle)}
    assert sorted(rows) == list(range(1, 13)) and rows[12] == "resnet50_best"
    for row, sub in rows.items():
        meta = tomllib.loads((REPO / "submissions" / sub / "submission.toml").read_text())
        assert meta["table1_row"] == row, sub
