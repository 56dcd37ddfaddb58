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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from itbench.scoring.benchmark import example_neuroids, load_benchmark

from . import test_trust
from .conftest import REPO
from .test_trust import HONEST, _submission

tiny = test_trust.tiny_runner  # that suite's fixture, by this name here: a real runner, tiny inputs

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


# --- limits belong to the operator -------------------------------------------------------


def _opts(**kw: Any) -> Any:
    from itbench.harness.runner import RunOptions

    return RunOptions(**kw)


@pytest.fixture
def no_operator_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No maxima in the environment; ``$ITBENCH_CONFIG`` names a file the test may write."""
    from itbench.harness import quotas

    for name in quotas.ENV.values():
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "itbench.toml"
    config.write_text("# no [limits]\n")
    monkeypatch.setenv(quotas.CONFIG_ENV, str(config))
    return config


def test_maxima_come_from_flags_then_environment_then_config_then_defaults(
    no_operator_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from itbench.harness import quotas

    config = no_operator_settings
    defaults = quotas.operator_maxima(_opts())
    assert (defaults.timeout_s, defaults.disk_gb, defaults.processes, defaults.threads) == (
        4 * 3600.0,
        20.0,
        1024,
        None,
    )
    assert defaults.memory_gb == quotas.default_memory_gb()
    config.write_text("[limits]\nmemory_gb = 6\ntimeout_s = 600\nthreads = 3\n")
    from_file = quotas.operator_maxima(_opts())
    assert (from_file.memory_gb, from_file.timeout_s, from_file.threads, from_file.disk_gb) == (6, 600, 3, 20)
    monkeypatch.setenv("ITBENCH_MAX_MEMORY_GB", "5")
    monkeypatch.setenv("ITBENCH_MAX_PROCESSES", "99")
    from_env = quotas.operator_maxima(_opts())
    assert (from_env.memory_gb, from_env.processes, from_env.timeout_s) == (5, 99, 600)
    flags = quotas.operator_maxima(_opts(memory_gb=4.0, max_threads=1, disk_gb=2.0))
    assert (flags.memory_gb, flags.threads, flags.disk_gb, flags.processes) == (4, 1, 2, 99)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[limits]\nmemory_gb = -1\n", "memory_gb"),
        ("[limits]\nprocesses = 2.5\n", "processes"),
        ("[limits]\nmemroy_gb = 1\n", "memroy_gb"),
        ("[limits\n", "cannot read"),
    ],
)
def test_a_bad_config_is_one_clear_error(no_operator_settings: Path, text: str, problem: str) -> None:
    from itbench.errors import ItbenchError
    from itbench.harness import quotas

    no_operator_settings.write_text(text)
    with pytest.raises(ItbenchError, match=problem):
        quotas.operator_maxima(_opts())


def test_a_request_is_granted_up_to_the_maximum_and_refused_above_it(no_operator_settings: Path) -> None:
    from itbench.errors import SubmissionError
    from itbench.harness.quotas import granted
    from itbench.harness.record import RunLimits

    most = RunLimits(timeout_s=600.0, memory_gb=8.0, disk_gb=20.0, processes=256, threads=None)
    less = granted(RunLimits(memory_gb=2.0, processes=16, threads=4), most, "x")
    assert less == RunLimits(timeout_s=600.0, memory_gb=2.0, disk_gb=20.0, processes=16, threads=4)
    assert granted(RunLimits(memory_gb=8.0), most, "x").memory_gb == 8.0  # up to, inclusive
    for key, value, named in [
        ("memory_gb", 4096.0, "maximum of 8 GiB"),
        ("timeout_s", 7 * 24 * 3600.0, "maximum of 600 s"),
        ("processes", 100000, "maximum of 256"),
    ]:
        with pytest.raises(SubmissionError, match=named) as err:
            granted(RunLimits(**{key: value}), most, "greedy")
        assert f"[limits] {key}" in str(err.value) and "greedy" in str(err.value)
    with pytest.raises(SubmissionError, match="memory_gb = 9 .* 8 GiB; processes = 257 .* 256\n"):
        granted(RunLimits(memory_gb=9.0, processes=257), most, "greedy")


def test_a_greedy_submission_gets_a_failed_record_naming_the_maximum(
    tiny: Any, no_operator_settings: Path
) -> None:
    """`[limits] memory_gb = 4096` under `score --all` defaults used to be granted; now refused."""
    folder = _submission(tiny.subs, "greedy", HONEST, "[limits]\nmemory_gb = 4096\ntimeout_s = 604800\n")
    record = tiny(folder)
    assert record.status == "failed"
    assert "memory_gb = 4096 is above the operator's maximum of" in (record.error or "")
    assert "timeout_s = 604800 is above the operator's maximum of 14400 s" in (record.error or "")
    assert record.provenance.model_dump().get("peak_rss_gb") is None  # refused before any child ran
    record = tiny(folder, memory_gb=5000.0, timeout_s=10.0)
    assert record.status == "failed" and "timeout_s = 604800 is above the operator's maximum of 10 s" in (
        record.error or ""
    )


MODEST = """
    import os, time
    import numpy as np
    class M:
        def predict(self, images):
            if os.environ.get("OMP_NUM_THREADS") != "2":
                raise RuntimeError(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
            if images.shape[0] and os.environ.get("SLEEP"):
                time.sleep(60)
            return np.zeros((images.shape[0], 168), "float32")
    def build(ctx):
        return M()
"""


def test_a_modest_submission_gets_what_it_asks_for_in_the_record_and_on_its_page(
    tiny: Any, no_operator_settings: Path, tmp_path: Path
) -> None:
    from itbench import api

    asks = "[limits]\nmemory_gb = 1.5\ntimeout_s = 120\nprocesses = 64\nthreads = 2\n"
    record = tiny(_submission(tiny.subs, "modest", MODEST, asks), memory_gb=3.0)
    assert record.status == "ok", record.error
    limits = record.provenance.limits
    assert limits is not None
    assert limits.model_dump() == {
        "timeout_s": 120.0,
        "memory_gb": 1.5,
        "disk_gb": 20.0,
        "processes": 64,
        "threads": 2,
    }
    out = tmp_path / "page"
    api.render(tiny.results, out, ["demo"])
    page = (out / "submissions" / "demo" / "modest.html").read_text()
    for key, shown in [("memory_gb", "1.5"), ("timeout_s", "120.0"), ("processes", "64"), ("threads", "2")]:
        assert f'<th>limits.{key}</th><td class="mono">{shown}</td>' in page


def test_a_shorter_timeout_asked_for_is_enforced(tiny: Any, no_operator_settings: Path) -> None:
    sleepy = MODEST.replace('os.environ.get("SLEEP")', "True")
    folder = _submission(tiny.subs, "sleepy", sleepy, "[limits]\ntimeout_s = 3\nthreads = 2\n")
    started = time.monotonic()
    record = tiny(folder)
    assert record.status == "failed" and "timed out after 3 s" in (record.error or "")
    assert time.monotonic() - started < 40


def test_a_ray_driver_sends_its_maxima_not_its_defaults(no_operator_settings: Path) -> None:
    from itbench.harness import quotas

    no_operator_settings.write_text("[limits]\ndisk_gb = 7\n")
    sent = quotas.pinned(_opts(timeout_s=30.0))
    assert (sent.timeout_s, sent.disk_gb, sent.memory_gb, sent.max_processes) == (30.0, 7.0, None, None)


# --- the private local Ray is not an open door ------------------------------------------


def _ray_descendants() -> list[Any]:
    import psutil

    me = psutil.Process()
    out = []
    for p in me.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_helper_sees_a_socket_beyond_loopback() -> None:
    """The check can fail: a socket on every interface is reported, one on loopback is not."""
    import socket

    import psutil

    from tests.helpers_net import beyond_loopback, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")
    with socket.socket() as wide, socket.socket() as narrow:
        wide.bind(("0.0.0.0", 0))
        wide.listen()
        narrow.bind(("127.0.0.1", 0))
        narrow.listen()
        found = beyond_loopback([psutil.Process()])
        assert [port for *_, port in found] == [wide.getsockname()[1]]


@pytest.mark.ray
def test_private_ray_listens_on_loopback_only_without_a_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--executor ray` without an address: every Ray server on 127.0.0.1, no dashboard."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    import psutil

    from itbench.harness.ray_executor import RayExecutor
    from tests.helpers_net import beyond_loopback, listening

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    with RayExecutor().connected():
        assert ray.util.get_node_ip_address() == "127.0.0.1"

        @ray.remote(num_cpus=0)
        def where() -> str:
            return str(ray.util.get_node_ip_address())

        assert ray.get(where.remote(), timeout=120) == "127.0.0.1"  # a worker is up, its server too
        time.sleep(2)  # agents finish binding
        procs = _ray_descendants()
        names = {p.name() for p in procs}
        assert {"gcs_server", "raylet"} <= names, names
        sockets = listening([*procs, psutil.Process()])
        assert len(sockets) >= 4, sockets  # gcs, raylet, object manager, a worker at least
        assert beyond_loopback([*procs, psutil.Process()]) == []
        # no dashboard (nor its job API) among our processes (another user's Ray may hold 8265)
        assert 8265 not in {port for *_, port in sockets}
        heads = [p.cmdline() for p in procs if any(a.endswith("dashboard/dashboard.py") for a in p.cmdline())]
        for argv in heads:  # Ray's head process runs without its web modules: usage stats only
            assert "--modules-to-load=UsageStatsHead" in argv and "--disable-frontend" in argv, argv
    assert not ray.is_initialized()
