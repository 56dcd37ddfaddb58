"""The Ray executor against the serial path: wall time, per-task overhead, driver memory.

``run(quick) -> list[dict]`` rows for perf/run.py (``python -m perf.run --only scaleout``; not
part of a default run: it starts a cluster).
A local two-node Ray cluster (``ray.cluster_utils.Cluster``: head + one
node, one CPU each, each with its own raylet and object store) is started
here; every measurement is a whole driver process (``itbench.score_all``,
what ``itbench score --all`` runs), in a private data home with caches off,
so both paths fit and predict from scratch:

* ``ray_demo_2node``: the demo's submissions (``make demo``: pixels_ridge and
  effnet_lite0_ridge; ``--quick``: two pooled-pixel test fixtures) scored
  serially vs through the cluster. Ratio = serial / Ray (> 1: Ray faster).
* ``ray_task_overhead``: one empty submission (no fit, predicts zeros):
  Ray wall minus serial wall, median of 3: what one task costs on top of
  the run itself (object-store transfer of the inputs, worker start,
  scheduling), with the cluster already up.
* driver peak RSS of each driver process (``ru_maxrss``; the sandboxed
  children are not the driver) goes into the notes.

On the shared two-core development VM the two nodes share the same two
cores as the serial path (each child's BLAS uses both), so the ratio
measures overlap of I/O and process start-up, not added compute.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "ray_submissions"
DEMO = ("pixels_ridge", "effnet_lite0_ridge")
QUICK = ("pooled_ridge", "pooled_pca_ols")
STORE = 600 * 2**20

DRIVER = """
import json, resource, sys, time
import itbench
started = time.perf_counter()
records = itbench.score_all("demo", stale_only=False, executor=sys.argv[1], address=sys.argv[2] or None,
                            device="cpu", n_boot=100, use_cache=False, log=lambda m: None)
wall = time.perf_counter() - started
print(json.dumps({"wall_s": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "status": {r.submission.id: r.status for r in records},
                  "mean_r": {r.submission.id: r.scores.mean_r if r.scores else None for r in records}}))
"""

EMPTY_TOML = 'name = "perf: empty (predicts zeros, no fit)"\n\n[needs]\ngpu = false\nweights = []\n'
EMPTY_MODEL = """import numpy as np


class Model:
    def predict(self, images):
        return np.zeros((len(images), 168))


def build(ctx):
    return Model()
"""


def _project(tmp: Path, names: tuple[str, ...]) -> Path:
    """A project tree with only ``names`` under submissions/ (the demo benchmark linked in)."""
    root = tmp / "project"
    (root / "submissions").mkdir(parents=True)
    (root / "benchmark").symlink_to(ROOT / "benchmark")
    for name in names:
        if name == "empty":
            (root / "submissions" / "empty").mkdir()
            (root / "submissions" / "empty" / "submission.toml").write_text(EMPTY_TOML)
            (root / "submissions" / "empty" / "model.py").write_text(EMPTY_MODEL)
        else:
            src = ROOT / "submissions" / name
            shutil.copytree(src if src.is_dir() else FIXTURES / name, root / "submissions" / name)
    return root


def _drive(project: Path, home: Path, executor: str, address: str) -> dict[str, Any]:
    """One whole driver process; its wall time, peak RSS and records' status."""
    env = {
        **os.environ,
        "ITBENCH_ROOT": str(project),
        "ITBENCH_HOME": str(home),
        "ITBENCH_RESULTS": str(home / f"results-{executor}"),
    }
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, executor, address],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=project,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict[str, Any]]:
    import ray
    from ray.cluster_utils import Cluster

    names = QUICK if quick else DEMO
    node = {"num_cpus": 1, "object_store_memory": STORE}
    with tempfile.TemporaryDirectory(prefix="itbench-perf-ray-") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "home"  # shared by the cluster's nodes and the drivers, as on a shared FS
        os.environ["ITBENCH_HOME"] = str(home)
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        try:
            cluster.add_node(**node)
            cluster.wait_for_nodes()
            address = cluster.address
            demo = _project(tmp_path / "demo", names)
            serial = _drive(demo, home, "local", "")
            clustered = _drive(demo, home, "ray", address)
            empty = _project(tmp_path / "empty", ("empty",))
            pairs = [
                (_drive(empty, home, "local", ""), _drive(empty, home, "ray", address)) for _ in range(3)
            ]
        finally:
            ray.shutdown()
            cluster.shutdown()
    same = serial["mean_r"] == clustered["mean_r"]
    overheads = [r["wall_s"] - s["wall_s"] for s, r in pairs]
    return [
        {
            "task": "ray_demo_2node",
            "ours_s": clustered["wall_s"],
            "ref_s": serial["wall_s"],
            "ratio": serial["wall_s"] / clustered["wall_s"],
            "accuracy": "same mean r per submission"
            if same
            else f"DIFFERENT: {serial['mean_r']} vs {clustered['mean_r']}",
            "target": "same scores; information",
            "met": same,
            "notes": (
                f"{', '.join(names)} on demo/val, caches off, n_boot 100; ours = 2-node local Ray cluster "
                f"(1 CPU per node), reference = serial path; driver peak RSS {clustered['peak_rss_mib']:.0f} MiB "
                f"(Ray) vs {serial['peak_rss_mib']:.0f} MiB (serial); status {clustered['status']}"
            ),
        },
        {
            "task": "ray_task_overhead",
            "ours_s": statistics.median(r["wall_s"] for _, r in pairs),
            "ref_s": statistics.median(s["wall_s"] for s, _ in pairs),
            "ratio": None,
            "accuracy": f"overhead per task {statistics.median(overheads):.1f} s (median of 3)",
            "target": "information",
            "met": True,
            "notes": (
                "one empty submission (no fit, predicts zeros), whole driver process, cluster already up; "
                f"overheads {', '.join(f'{o:.1f}' for o in overheads)} s; driver peak RSS "
                f"{statistics.median(r['peak_rss_mib'] for _, r in pairs):.0f} MiB (Ray) vs "
                f"{statistics.median(s['peak_rss_mib'] for s, _ in pairs):.0f} MiB (serial)"
            ),
        },
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
