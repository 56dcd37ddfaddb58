"""Submission environments on a real two-node Ray cluster on this machine: built on the node that runs the task.

The worker node has its own data home (as a real node has its own disk), so
the test can tell where the environment was built: there, under the node's
``envs/``, and never on the driver; a rerun on that node builds nothing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
pytestmark = pytest.mark.ray

from ray.cluster_utils import Cluster  # noqa: E402
from test_environments import _pypi_reachable  # noqa: E402

from itbench import api  # noqa: E402
from itbench.harness import environments  # noqa: E402
from itbench.harness.ray_executor import RayExecutor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "env_submissions" / "extra_package"
STORE = 600 * 2**20
WORKER = "itbench_env_worker"


@pytest.fixture(scope="module")
def node_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("node-home")


@pytest.fixture(scope="module")
def cluster(node_home: Path) -> Iterator[Cluster]:
    """Head (1 CPU) + one worker node (1 CPU) whose data home is its own."""
    reason = _pypi_reachable()
    if reason:
        pytest.skip(f"needs the package index to build environments ({reason})")
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False},
    )
    try:
        c.add_node(
            num_cpus=1,
            object_store_memory=STORE,
            resources={WORKER: 1},
            env_vars={"ITBENCH_HOME": str(node_home)},
        )
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        time.sleep(1)


def test_environment_is_built_on_the_node_and_cached_there(
    cluster: Cluster, node_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    (root / "submissions").mkdir(parents=True)
    (root / "benchmark").symlink_to(REPO / "benchmark")
    shutil.copytree(FIXTURE, root / "submissions" / "extra_package")
    monkeypatch.setenv("ITBENCH_ROOT", str(root))
    monkeypatch.setenv("ITBENCH_HOME", str(tmp_path / "driver-home"))
    on_worker = RayExecutor(resources={WORKER: 1})

    (record,) = api.score_all(
        "demo", executor=on_worker, results_root=tmp_path / "r1", n_boot=5, device="cpu"
    )
    assert record.status == "ok", (record.error, record.error_traceback)
    env = record.provenance.environment
    assert env is not None and env.layered == ["tabulate==0.9.0"]
    built = node_home / "envs" / env.key
    assert (built / environments.META_FILE).is_file()  # on the node that ran it
    assert not (tmp_path / "driver-home" / "envs" / env.key).exists()  # not on the driver
    before = (built / environments.META_FILE).stat().st_mtime_ns

    (again,) = api.score_all(
        "demo", executor=on_worker, results_root=tmp_path / "r2", n_boot=5, device="cpu", use_cache=False
    )
    assert again.status == "ok" and again.provenance.environment == env
    assert (built / environments.META_FILE).stat().st_mtime_ns == before  # the node's cache served it
