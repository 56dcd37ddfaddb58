"""The Ray executor on a real two-node Ray cluster on this machine (head + one more node).

Small on purpose (two CPU cores in CI): cheap fixture submissions from
``tests/ray_submissions`` on the embedded demo benchmark, ``n_boot`` small.
Checks that the records equal the serial path's exactly, that a rerun skips
current records, that a crashing submission is recorded as locally, that a
run whose node is killed mid-run is retried (and recorded failed with the
cause when retries are exhausted), that Ctrl-C leaves earlier records
intact, and that no Ray process outlives the cluster.
"""

from __future__ import annotations

import _thread
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
pytestmark = pytest.mark.ray

from ray.cluster_utils import Cluster  # noqa: E402

from itbench import api  # noqa: E402
from itbench.harness.ray_executor import RayExecutor, loopback_only  # noqa: E402
from itbench.harness.record import (  # noqa: E402
    BenchmarkRef,
    Scores,
    SubmissionRecord,
    SubmissionRef,
    read_record,
    record_path,
    write_record,
)
from itbench.harness.runner import RunOptions  # noqa: E402
from tests.helpers_net import beyond_loopback  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "ray_submissions"
CRASH = Path(__file__).resolve().parent / "faults" / "submissions" / "crash_fit"
STORE = 600 * 2**20  # the demo's worker inputs are ~350 MiB: one copy per node
NODE = {"num_cpus": 1, "object_store_memory": STORE, "node_ip_address": "127.0.0.1"}  # loopback only
WORKER = "itbench_test_worker"  # a custom resource only the non-head node has
WORKER_NODE = {**NODE, "resources": {WORKER: 1}}


def _ray_processes() -> list[psutil.Process]:
    """Our descendants that belong to Ray (raylet, gcs_server, workers, dashboard agents)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Head (1 CPU) + one worker node (1 CPU), each with its own raylet and object store."""
    with loopback_only():  # every node and the driver on 127.0.0.1: the cluster is no open door
        c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        with loopback_only():
            c.add_node(**WORKER_NODE)
            c.wait_for_nodes()
            ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
        open_doors = beyond_loopback([psutil.Process(), *_ray_processes()])
        assert not open_doors, f"the test cluster listens beyond loopback: {open_doors}"
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        deadline = time.monotonic() + 20
        while _ray_processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p.cmdline()[:3] for p in _ray_processes()]
        assert not left, f"Ray processes left behind: {left}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project tree whose submissions/ holds the fixtures (the demo benchmark linked in)."""
    root = tmp_path / "project"
    (root / "submissions").mkdir(parents=True)
    (root / "benchmark").symlink_to(REPO / "benchmark")
    for name in ("pooled_ridge", "pooled_pca_ols"):
        shutil.copytree(FIXTURES / name, root / "submissions" / name)
    shutil.copytree(CRASH, root / "submissions" / "crash_fit")
    monkeypatch.setenv("ITBENCH_ROOT", str(root))
    return root


def _same_scores(a: SubmissionRecord, b: SubmissionRecord) -> None:
    assert (a.submission.id, a.status, a.error) == (b.submission.id, b.status, b.error)
    assert a.scores == b.scores
    assert a.per_neuroid == b.per_neuroid
    assert a.examples == b.examples
    assert a.bootstrap == b.bootstrap


def test_ray_records_equal_serial_and_rerun_resumes(cluster: Cluster, project: Path, tmp_path: Path) -> None:
    ray_root, serial_root = tmp_path / "ray-results", tmp_path / "serial-results"
    lines: list[str] = []
    records = api.score_all(
        "demo",
        executor=RayExecutor(),
        results_root=ray_root,
        n_boot=20,
        device="cpu",
        log=lines.append,
    )
    by_id = {r.submission.id: r for r in records}
    assert sorted(by_id) == ["crash_fit", "pooled_pca_ols", "pooled_ridge"]
    assert by_id["pooled_ridge"].status == by_id["pooled_pca_ols"].status == "ok"
    assert by_id["crash_fit"].status == "failed" and "boom in fit" in (by_id["crash_fit"].error or "")
    for record in records:
        assert record.provenance.model_dump()["executor"] == "ray"
        assert record.path == record_path(ray_root, "demo", record.submission.id, "val")
        assert read_record(record.path) == record.model_copy(update={"path": None})
    assert any("3 to run" in line for line in lines), lines

    # a rerun skips every run with a current record: nothing is submitted
    assert api.score_all("demo", executor=RayExecutor(), results_root=ray_root, n_boot=20, device="cpu") == []

    # the serial path, from scratch (no cached predictions or fitted states), gives the same records
    serial = api.score_all(
        "demo",
        executor="local",
        results_root=serial_root,
        n_boot=20,
        device="cpu",
        use_cache=False,
        log=print,
    )
    for a, b in zip(records, serial, strict=True):
        _same_scores(a, b)


def _sleepers(tmp_path: Path, n: int, sleep_s: float) -> list[Path]:
    folders = []
    for i in range(n):
        folder = tmp_path / "subs" / f"sleeper_{i}"
        shutil.copytree(FIXTURES / "sleeper", folder)
        toml = folder / "submission.toml"
        toml.write_text(toml.read_text().replace("sleep_s = 6.0", f"sleep_s = {sleep_s}"))
        folders.append(folder)
    return folders


def _score_in_thread(
    executor: RayExecutor, folders: list[Path], results: Path
) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        try:
            out["records"] = executor.score(
                folders,
                "demo",
                RunOptions(
                    results_root=results,
                    n_boot=5,
                    device="cpu",
                    use_cache=False,
                    submissions_root=folders[0].parent,
                ),
                log=lambda m: None,
            )
        except BaseException as err:  # the test reports it
            out["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _wait_for_start(
    executor: RayExecutor, node_id: str | None = None, timeout: float = 400, out: dict | None = None
) -> str:
    """The id of a run that has started (on ``node_id`` when given), from the executor's progress board."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert not (out or {}), f"scoring ended before the run started: {out}"
        board = getattr(executor, "board", None)
        if board is not None:
            for key, nodes in ray.get(board.snapshot.remote()).items():
                if nodes and node_id in (None, nodes[-1]):
                    return key
        time.sleep(0.2)
    raise AssertionError(f"no run started (on node {node_id}) within {timeout} s")


@pytest.mark.parametrize("max_retries", [1, 0])
def test_node_killed_mid_run(cluster: Cluster, tmp_path: Path, max_retries: int) -> None:
    """The run's node dies mid-fit: Ray reruns it on a live node (max_retries=1), or it is recorded
    failed with the cause (max_retries=0); either way its record is written."""
    results = tmp_path / "results"
    (sleeper,) = _sleepers(tmp_path, 1, sleep_s=8.0)
    # the sleeper asks for the worker node's custom resource, so it runs there and only there
    executor = RayExecutor(max_retries=max_retries, resources={WORKER: 1})
    thread, out = _score_in_thread(executor, [sleeper], results)
    (victim,) = list(cluster.worker_nodes)
    _wait_for_start(executor, victim.node_id, out=out)
    time.sleep(1.0)  # the child is inside fit now
    cluster.remove_node(victim, allow_graceful=False)
    with loopback_only():
        cluster.add_node(**WORKER_NODE)  # where the retry can go (and the next test's worker node)
    thread.join(timeout=400)
    assert not thread.is_alive() and "error" not in out, out
    (lost,) = out["records"]
    assert read_record(record_path(results, "demo", "sleeper_0", "val")).status == lost.status  # nothing lost
    if max_retries:
        assert lost.status == "ok", lost.error
        assert lost.provenance.model_dump()["attempts"] == 2  # ran again on the live node
    else:
        assert lost.status == "failed"
        assert "Ray task was lost after 1 attempt(s)" in (lost.error or ""), lost.error
    assert not _our_workers()


def _our_workers() -> list[psutil.Process]:
    """Sandboxed worker processes below this test process (on any node of the local cluster)."""
    return [p for p in _ray_processes() if "itbench.harness.worker" in " ".join(p.cmdline())]


def test_ctrl_c_cancels_and_keeps_earlier_records(
    cluster: Cluster, tmp_path: Path, sigint_handled: None
) -> None:
    results = tmp_path / "results"
    folders = _sleepers(tmp_path, 2, sleep_s=120.0)
    good = record_path(results, "demo", "sleeper_0", "val")
    earlier = SubmissionRecord(
        submission=SubmissionRef(id="sleeper_0", name="earlier", code_hash="0" * 40),
        benchmark=BenchmarkRef(id="demo", synthetic=True),
        scores=Scores(mean_r=0.42),
        created="2026-01-01T00:00:00+00:00",
    )
    write_record(earlier, good)
    before = good.read_bytes()
    executor = RayExecutor()

    def interrupt_when_running() -> None:
        deadline = time.monotonic() + 400
        while not _our_workers() and time.monotonic() < deadline:  # a sandboxed child is running
            time.sleep(0.2)
        time.sleep(2.0)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        executor.score(
            folders,
            "demo",
            RunOptions(
                results_root=results,
                n_boot=5,
                device="cpu",
                use_cache=False,
                submissions_root=folders[0].parent,
            ),
            log=lambda m: None,
        )
    assert time.monotonic() - started < 400  # cancelled, not waited for the 120 s sleeps
    assert good.read_bytes() == before  # an interrupted run never replaces a good record
    interrupted = [read_record(p) for p in results.rglob("sleeper_*.json")]
    assert [r for r in interrupted if r.status == "failed" and "interrupted" in (r.error or "")]
    deadline = time.monotonic() + 20
    while _our_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _our_workers(), "a cancelled run left its sandboxed worker running"


def test_sweep_through_ray_equals_local(cluster: Cluster, tmp_path: Path) -> None:
    from itbench.harness.sweep import run_sweep

    kwargs = {
        "layers": ["blocks.0"],
        "pretrained": False,
        "benchmark_id": "demo",
        "device": "cpu",
        "n_components": 20,
        "n_boot": 10,
        "log": lambda m: None,
    }
    remote = run_sweep("efficientnet_lite0", results_root=tmp_path / "ray", executor=RayExecutor(), **kwargs)
    local = run_sweep("efficientnet_lite0", results_root=tmp_path / "local", **kwargs)
    assert [entry.scores for entry in remote.layers] == [entry.scores for entry in local.layers]
    assert remote.provenance.device == "cpu"


HOSTILE = Path(__file__).resolve().parent / "faults" / "submissions"
RAY_FAULTS = {
    "crash_fit": ["RuntimeError in fit", "boom in fit after seeing"],
    "crash_predict": ["ValueError in predict", "boom in predict"],
    "segfault": ["died of SIGSEGV"],
    "exit_silently": ["exited with status 0"],
    "strings": ["TypeError in predict", "not numbers"],
    "wrong_shape": ["expected ("],
    "hang": ["timed out after 15 s"],
    "peek_raise": ["FileNotFoundError in fit", "benchmark/demo/assembly.nc"],
}


def test_hostile_submissions_on_ray_are_recorded_as_locally(cluster: Cluster, tmp_path: Path) -> None:
    """The fault suite's submissions, run as Ray tasks in the nodes' sandboxes: each failed, with its reason."""
    subs = tmp_path / "subs"
    for case in RAY_FAULTS:
        shutil.copytree(HOSTILE / case, subs / case)
    opts = RunOptions(
        results_root=tmp_path / "results", n_boot=5, device="cpu", use_cache=False, submissions_root=subs
    )
    records = RayExecutor().score([subs / case for case in RAY_FAULTS], "demo", opts, log=lambda m: None)
    for case, record in zip(RAY_FAULTS, records, strict=True):
        assert record.status == "failed", (case, record.status)
        for fragment in RAY_FAULTS[case]:
            assert fragment in (record.error or ""), (case, record.error)
        assert record.provenance.model_dump()["executor"] == "ray"
        assert read_record(record.path).status == "failed"
