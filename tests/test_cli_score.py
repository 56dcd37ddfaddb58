"""`itbench score` end to end on the embedded demo benchmark, through the CLI.

Runs the real pipeline: sandboxed worker, fit, predict, metrics, record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from itbench.cli import cli
from itbench.harness.record import read_record

REPO = Path(__file__).resolve().parents[1]


def itbench(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (as a user would)."""
    return subprocess.run(
        [sys.executable, "-m", "itbench.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def scored(results):
    """Score the two starters once for the module through the Python front door."""
    import itbench

    out = {}
    for sub in ("pixels_ridge", "effnet_lite0_ridge"):
        started = time.perf_counter()
        record = itbench.score(REPO / "submissions" / sub, benchmark="demo", results_root=results, n_boot=200)
        out[sub] = (record, time.perf_counter() - started)
    return out


def test_records_are_complete_and_on_disk(scored, results):
    for sub, (record, _) in scored.items():
        assert record.status == "ok", record.error
        assert record.path == results / "demo" / f"{sub}.json"
        on_disk = read_record(record.path)
        assert on_disk.scores == record.scores
        assert on_disk.benchmark.synthetic is True
        assert len(on_disk.per_neuroid.r) == 168
        assert (
            on_disk.submission.code_hash and on_disk.benchmark.data_checksum and on_disk.benchmark.split_hash
        )
        prov = on_disk.provenance.model_dump()
        for key in ("packages", "device", "seed", "wall_time_s", "sandboxed"):
            assert prov.get(key) is not None, key


def test_scores_reproduce_the_committed_demo_records(scored):
    """Same code, data and seeds as the committed demo page: the same numbers (``make demo``)."""
    for sub, (record, _) in scored.items():
        committed = read_record(REPO / "leaderboard" / "results" / "demo" / f"{sub}.json")
        for key in ("mean_ev", "median_ev", "mean_r", "median_r", "ceiling"):
            assert getattr(record.scores, key) == pytest.approx(getattr(committed.scores, key), abs=2e-4), key


def test_pretrained_network_beats_pixels_and_both_below_ceiling(scored):
    (pixels_rec, pixels_s), (effnet_rec, effnet_s) = scored["pixels_ridge"], scored["effnet_lite0_ridge"]
    pixels, effnet = pixels_rec.scores, effnet_rec.scores
    print(
        f"\npixels mean r {pixels.mean_r:.3f} ({pixels_s:.1f} s), "
        f"effnet mean r {effnet.mean_r:.3f} ({effnet_s:.1f} s), ceiling {effnet.ceiling:.3f}"
    )
    assert effnet.mean_r > pixels.mean_r + 0.15
    assert effnet.ci["mean_r"][0] > pixels.ci["mean_r"][1]  # CIs do not overlap
    assert effnet.median_r < effnet.ceiling
    assert pixels.median_r < pixels.ceiling


def test_warm_rescore_uses_cache_and_is_fast(scored, results):
    from itbench.harness.runner import RunOptions, score_submission

    started = time.perf_counter()
    again = score_submission(
        REPO / "submissions" / "effnet_lite0_ridge",
        "demo",
        options=RunOptions(results_root=results, n_boot=200),
    )
    elapsed = time.perf_counter() - started
    assert again.provenance.predictions_cached is True
    assert again.scores == scored["effnet_lite0_ridge"][0].scores
    assert elapsed < 10  # generous: the bench measures the real target


def test_cli_json_and_table(results):
    runner = CliRunner()
    out = runner.invoke(
        cli,
        ["score", "submissions/pixels_ridge", "--benchmark", "demo", "--json", "--n-boot", "50"],
        env={"ITBENCH_ROOT": str(REPO)},
    )
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert record["status"] == "ok" and record["split"] == "val"
    table = itbench("score", "submissions/pixels_ridge", "--benchmark", "demo", "--n-boot", "50")
    assert table.returncode == 0, table.stderr
    assert "SYNTHETIC" in table.stdout and "mean r" in table.stdout and "ceiling" in table.stdout


def test_cli_user_errors_are_one_line(tmp_path):
    bad = itbench("score", str(tmp_path / "missing"), "--benchmark", "demo")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "no submission folder" in bad.stderr
    assert not list(Path(os.environ["ITBENCH_RESULTS"]).glob("*/missing.json"))  # nothing recorded
    unknown = itbench("score", "submissions/pixels_ridge", "--benchmark", "nope")
    assert unknown.returncode == 2 and "unknown benchmark 'nope'" in unknown.stderr
    test_split = itbench("score", "submissions/pixels_ridge", "--benchmark", "demo", "--split", "bogus")
    assert test_split.returncode == 2 and "Traceback" not in test_split.stderr


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI, walked from the click group itself."""
    out = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += _commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def test_every_command_explains_itself():
    """Each command has help with an example, and every option says what it does."""
    runner = CliRunner()
    paths = _commands(cli)
    assert ("perf",) in paths and ("cache", "clear") in paths and ("bench",) not in paths
    for path in paths:
        out = runner.invoke(cli, [*path, "--help"], terminal_width=100)
        assert out.exit_code == 0, (path, out.output)
        command = cli
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        if not isinstance(command, click.Group) and path:
            assert "Example" in out.output, f"itbench {' '.join(path)} --help has no example"
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"itbench {' '.join(path)} {param.opts[0]} has no description"


def test_closed_sets_are_choices_and_reject_typos():
    runner = CliRunner()
    for args, word in (
        (["score", "x", "--device", "gpu"], "--device"),
        (["score", "x", "--size", "huge"], "--size"),
        (["cache", "clear", "--kind", "fitted"], "--kind"),
    ):
        out = runner.invoke(cli, args)
        assert out.exit_code == 2 and word in out.output and "is not one of" in out.output, out.output


def test_new_scaffold_scores_as_generated(tmp_path, results):
    """`itbench new` in a scratch project tree, then scored on the demo."""
    import shutil

    root = tmp_path / "proj"
    (root / "submissions").mkdir(parents=True)
    shutil.copytree(REPO / "benchmark", root / "benchmark")
    made = itbench("new", "my_model", "--root", str(root))
    assert made.returncode == 0, made.stderr
    scored = itbench(
        "score",
        str(root / "submissions" / "my_model"),
        "--benchmark",
        "demo",
        "--n-boot",
        "50",
        "--json",
        env={"ITBENCH_ROOT": str(root)},
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["status"] == "ok"
    tested = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(root / "submissions" / "my_model"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert tested.returncode == 0, tested.stdout[-2000:]
