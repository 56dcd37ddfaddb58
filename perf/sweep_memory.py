"""Peak memory of ``itbench sweep`` as users run it: the CLI, its defaults, 3200 images.

Why: the issue's 6.3 GiB peak (EfficientNet-Lite0, defaults, 3200 images)
came from the shipped command, while the extraction benchmark measured a
different reducer in-process. This script measures the command itself with
``/usr/bin/time -v`` (Maximum resident set size) on a 3200-image benchmark
made by tiling the demo's 640 images (distinct stimulus ids, the demo's
trial-level responses repeated, split 2592 / 288 / 320 stratified by object)
and registered with ``itbench data add`` in a private project and data home.

    .venv/bin/python -m perf.sweep_memory                     # lite0 (ImageNet) and resnet50 (random)
    .venv/bin/python -m perf.sweep_memory --models efficientnet_lite0 --n-images 640

Where the memory went before (3200 images, Lite0, 9 default layers): the
benchmark's cached train and val image tensors (1.7 GiB) plus their
concatenation (1.7 GiB), the 9 layers' reduced features (1.3 GiB: flatten up
to 60,000 values, else a projection to 8000), torch and the model (~0.6 GiB).
The sweep now decodes images 256 at a time (``itbench.harness.sweep.IMAGE_CHUNK``)
and never builds the full image tensor, so the features are the main cost.
Target: <= 4 GiB peak for both models.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TARGET_GIB = 4.0
MODELS = {"efficientnet_lite0": {"random": False}, "resnet50": {"random": True}}


def make_tiled_benchmark(root: Path, home: Path, n_total: int) -> str:
    """A BrainIO benchmark of ``n_total`` tiled demo images registered in ``root`` / ``home``."""
    import xarray as xr

    from itbench.data.assembly import load_assembly
    from itbench.data.stimuli import read_stimulus_csv

    demo = REPO / "benchmark" / "demo"
    table = read_stimulus_csv(demo / "stimuli.csv")
    trials = load_assembly(demo / "assembly.nc")
    files = root / "tiled-files"
    files.mkdir(parents=True)
    ids = table.index.to_numpy().astype(str)
    rows, blocks = [], []
    with zipfile.ZipFile(demo / "stimuli.zip") as src, zipfile.ZipFile(files / "stimuli.zip", "w") as dst:
        members = {Path(n).name: n for n in src.namelist()}
        for k in range(n_total):
            sid = ids[k % len(ids)]
            new = f"tile{k // len(ids)}-{sid}"
            name = f"{new}.png"
            dst.writestr(name, src.read(members[Path(str(table.loc[sid, "filename"])).name]))
            rows.append({"stimulus_id": new, "filename": name, "object_name": table.loc[sid, "object_name"]})
    stim = np.asarray(trials.coords["stimulus_id"].values).astype(str)
    for k in range((n_total + len(ids) - 1) // len(ids)):
        keep = np.isin(stim, ids[: max(0, min(len(ids), n_total - k * len(ids)))])
        part = trials.isel(presentation=np.flatnonzero(keep))
        part = part.assign_coords(stimulus_id=("presentation", [f"tile{k}-{s}" for s in stim[keep]]))
        blocks.append(part)
    tiled = xr.concat(blocks, dim="presentation")
    keep_coords = {"stimulus_id", "repetition", "object_name", "neuroid_id", "region"}
    tiled = tiled.drop_vars([c for c in tiled.coords if c not in keep_coords])
    tiled.name = None
    tiled.to_netcdf(files / "assembly.nc", engine="h5netcdf")
    pd.DataFrame(rows).to_csv(files / "stimuli.csv", index=False)
    env = {**os.environ, "ITBENCH_ROOT": str(root), "ITBENCH_HOME": str(home)}
    bid = f"tiled{n_total}"
    subprocess.run(
        [sys.executable, "-m", "itbench.cli", "data", "add", bid, "--assembly", str(files / "assembly.nc"),
         "--stimuli", str(files / "stimuli.csv"), "--images", str(files / "stimuli.zip"),
         "--split", "0.81,0.09,0.1", "--synthetic"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    shutil.rmtree(files)
    return bid


def _max_rss_gib(stderr: str) -> float:
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(match.group(1)) / 2**20 if match else float("nan")


def _wall_s(stderr: str) -> float:
    match = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", stderr)
    if not match:
        return float("nan")
    parts = [float(p) for p in match.group(1).split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def measure(model: str, bid: str, root: Path, home: Path, random: bool) -> dict:
    """One ``/usr/bin/time -v itbench sweep MODEL -b BID`` run, defaults otherwise."""
    env = {**os.environ, "ITBENCH_ROOT": str(root), "ITBENCH_HOME": str(home),
           "ITBENCH_RESULTS": str(root / "results")}  # fmt: skip
    argv = [str(Path(sys.executable).parent / "itbench"), "sweep", model, "-b", bid, "--device", "cpu"]
    if random:
        env["ITBENCH_RANDOM_WEIGHTS"] = "1"
    command = ["/usr/bin/time", "-v", *argv]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    peak = _max_rss_gib(proc.stderr)
    return {
        "task": f"itbench sweep {model} (defaults, {'random' if random else 'ImageNet'} weights)",
        "command": " ".join(
            ["ITBENCH_RANDOM_WEIGHTS=1"] * random + ["/usr/bin/time -v", *argv[0:1], *argv[1:]]
        ),
        "returncode": proc.returncode,
        "peak_rss_gib": round(peak, 3),
        "wall_s": round(_wall_s(proc.stderr), 1),
        "target": f"<= {TARGET_GIB} GiB",
        "met": bool(proc.returncode == 0 and peak <= TARGET_GIB),
        "stdout_tail": proc.stdout[-600:],
        "stderr_tail": "" if proc.returncode == 0 else proc.stderr[-1500:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--n-images", type=int, default=3200)
    parser.add_argument("--label", default=platform.node() or "machine")
    parser.add_argument("--remark", default="")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="itbench-sweep-memory-"))
    root, home = work / "root", work / "home"
    for folder in (root / "benchmark", root / "submissions", home):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        bid = make_tiled_benchmark(root, home, args.n_images)
        rows = []
        for model in args.models.split(","):
            row = measure(model, bid, root, home, MODELS.get(model, {}).get("random", True))
            print(f"{row['task']}: peak {row['peak_rss_gib']} GiB, {row['wall_s']} s, rc {row['returncode']}")
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "date": dt.date.today().isoformat(),
        "n_images": args.n_images,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_1min_after": load},
        "remark": args.remark,
        "rows": rows,
    }
    out = REPO / "perf" / "results" / f"{args.label}-sweep-memory-{result['date']}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# itbench sweep peak memory, {args.n_images} images ({result['date']}, {args.label})", "",
             "| command | peak RSS (GiB) | wall (s) | target | met |", "| --- | ---: | ---: | --- | --- |"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| `{row['command']}` | {row['peak_rss_gib']} | {row['wall_s']} | {row['target']} | {row['met']} |"
        )
    if args.remark:
        lines += ["", args.remark]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json and .md")


if __name__ == "__main__":
    main()
