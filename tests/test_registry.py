"""itbench.data.registry: benchmarks are manifests; V4 beside IT from one download; README from the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers_data import LocalServer, build_majajhong_source, isolate, trial_values

from itbench.cli import cli
from itbench.data import registry
from itbench.data.sources import describe, installed, load_source, majajhong2015
from itbench.data.split import split_path
from itbench.errors import BenchmarkError, DataError
from itbench.scoring.benchmark import load_benchmark

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    return isolate(tmp_path, monkeypatch)


def test_committed_manifests_are_the_registry(monkeypatch):
    monkeypatch.setenv("ITBENCH_ROOT", str(REPO))
    assert registry.benchmark_ids() == ("majajhong2015", "majajhong2015.V4", "nx414", "demo")
    it, v4 = registry.get("majajhong2015"), registry.get("majajhong2015.V4")
    assert registry.resolve("majajhong2015.IT") == "majajhong2015"  # old records' id still works
    assert (it.region, v4.region) == ("IT", "V4")
    assert it.files == v4.files and it.split_path() == v4.split_path()  # same download, same split
    assert registry.get("demo").synthetic and not it.synthetic
    assert "brainscore" in it.protocols and registry.get("nx414").protocols == ("fixed-split",)
    for spec in registry.all_specs():
        for entry in spec.files.values():
            if entry.url:
                assert entry.sha1 and entry.url.startswith("https://")


def test_unknown_id_lists_the_known_ones(monkeypatch):
    monkeypatch.setenv("ITBENCH_ROOT", str(REPO))
    with pytest.raises(
        BenchmarkError, match="known benchmarks: majajhong2015, majajhong2015.V4, nx414, demo"
    ):
        registry.get("nope")
    result = CliRunner().invoke(cli, ["score", "submissions/pixels_ridge", "--benchmark", "nope"])
    assert result.exit_code == 2 and "known: majajhong2015, majajhong2015.V4" in result.output


def _manifest(bid: str, **extra) -> dict:
    return {"benchmark_id": bid, "title": f"T {bid}", "description": "d", "loader": "demo", **extra}


def test_adding_a_manifest_adds_a_benchmark(project):
    _home, root = project
    (root / "benchmark" / "mine").mkdir()
    (root / "benchmark" / "mine" / "manifest.json").write_text(json.dumps(_manifest("mine", order=5)))
    assert registry.benchmark_ids()[0] == "mine"  # order 5 sorts before the built-ins (10..30)
    assert set(registry.benchmark_ids()) == {"mine", "majajhong2015", "majajhong2015.V4", "nx414", "demo"}
    assert split_path("mine") == root / "benchmark" / "splits" / "mine.csv"
    out = CliRunner().invoke(cli, ["data", "list"])
    assert out.exit_code == 0 and "T mine" in out.output and "majajhong2015.V4" in out.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"loader": "../evil"}, "loader"),
        ({"benchmark_id": "a/b"}, "benchmark_id"),
        ({"protocols": ["leave-one-out"]}, "unknown protocol"),
        ({"default_protocol": "brainscore"}, "default_protocol"),
        ({"title": None}, "title"),
    ],
)
def test_bad_manifest_is_a_clear_error(project, change, message):
    _home, root = project
    data = {**_manifest("bad"), **change}
    folder = root / "benchmark" / "bad"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        registry.all_specs()


def test_manifest_folder_must_match_its_id(project):
    _home, root = project
    (root / "benchmark" / "here").mkdir()
    (root / "benchmark" / "here" / "manifest.json").write_text(json.dumps(_manifest("there")))
    with pytest.raises(DataError, match="its folder is 'here'"):
        registry.all_specs()


def test_readme_table_is_the_registry(monkeypatch):
    monkeypatch.setenv("ITBENCH_ROOT", str(REPO))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert registry.markdown_table() in readme, "regenerate with `itbench data list --markdown`"


def test_page_titles_come_from_manifests(monkeypatch):
    from itbench.page.leaderboard import benchmark_info

    monkeypatch.setenv("ITBENCH_ROOT", str(REPO))
    assert benchmark_info("majajhong2015.V4")[0] == "MajajHong2015 public, V4"
    assert benchmark_info("unregistered")[0] == "unregistered"


def test_v4_beside_it_from_one_download(project, tmp_path):
    home, _root = project
    src = build_majajhong_source(tmp_path / "bucket", n_objects=4, per_object=5, n_reps=3)
    with LocalServer(src.folder) as server, pytest.warns(UserWarning, match="no committed split"):
        majajhong2015.fetch(mirror=server.url, progress=False, manifest=src.manifest)
        assert set(server.requests.values()) == {1}  # each file downloaded once for both regions
    assert installed("majajhong2015") and installed("majajhong2015.V4") and installed("majajhong2015.IT")
    it, v4 = load_source("majajhong2015"), load_source("majajhong2015.V4")
    assert set(it.responses["region"].values) == {"IT"} and set(v4.responses["region"].values) == {"V4"}
    ref = trial_values(src.trials)
    v4_sites = [str(n) for n in v4.responses["neuroid_id"].values]
    regions = np.asarray(src.trials["region"].values).astype(str)
    expected_v4 = sorted(np.asarray(src.trials["neuroid_id"].values).astype(str)[regions == "V4"])
    assert sorted(v4_sites) == expected_v4
    expected = ref.groupby("stimulus_id", sort=False)[v4_sites].mean()
    np.testing.assert_allclose(
        v4.responses.values, expected.loc[v4.responses["stimulus_id"].values].to_numpy(), rtol=1e-5, atol=1e-7
    )
    assert v4.trials is not None and v4.trials.sizes["presentation"] == it.trials.sizes["presentation"]
    b_it, b_v4 = load_benchmark("majajhong2015.IT"), load_benchmark("majajhong2015.V4")
    assert b_it.id == "majajhong2015" and b_v4.id == "majajhong2015.V4"
    assert b_it.split_hash == b_v4.split_hash  # one split file for both
    assert b_v4.trials("val").shape[2] == len(v4_sites)
    info = describe("majajhong2015.V4")
    names = {f["name"] for f in info["files"]}
    assert "processed_V4_trials.nc" in names and "processed_IT_trials.nc" not in names
    assert (home / "majajhong2015" / "processed_V4_trials.nc").is_file()
