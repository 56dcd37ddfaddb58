"""Run the benchmarks side by side, print a table, write perf/results/<label>-<date>.{json,md}.

``python -m perf.run [--quick] [--only NAME] [--device cpu|cuda] [--label LABEL]``

Rows come from ``perf.readouts.run`` (ours vs scikit-learn) and, when it can be
imported, ``perf.extraction.run`` (row format: see perf/README.md). ``--only``
keeps one module (``readouts``, ``extraction``, ``harness``, ``scaleout``) or the readout tasks whose name
contains NAME. The results files carry a description of the machine (CPU, cores,
RAM, versions, BLAS libraries and threads, GPU) and the load average before and
after, since the two-core development machines are shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("task", "ours_s", "ref_s", "ratio", "accuracy", "target", "met")
HEADERS = ("task", "ours median s", "reference median s", "ratio", "accuracy check", "target", "met?")


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    """Total memory in GiB."""
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        try:
            kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
            return round(kib / 2**20, 1)
        except (OSError, AttributeError):
            return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    """Everything needed to interpret the timings: hardware, versions, BLAS, threads."""
    import numpy as np
    import scipy
    import scipy.linalg
    import sklearn
    import torch
    from threadpoolctl import threadpool_info

    blas = [
        {
            k: lib.get(k)
            for k in ("user_api", "internal_api", "version", "num_threads", "architecture", "prefix")
        }
        for lib in threadpool_info()
    ]
    torch_blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "hostname": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": _ram_gib(),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "sklearn": sklearn.__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "torch_blas": torch_blas.group(1) if torch_blas else None,
        "blas": blas,
        "env": {
            k: os.environ.get(k)
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
        },
        "git_commit": _git_commit(),
    }


# --------------------------------------------------------------------------- running


def _call_run(module: str, quick: bool, device: str, only: str | None) -> list[dict]:
    """Import ``bench.<module>`` and call its ``run`` with the arguments it accepts."""
    mod = importlib.import_module(f"perf.{module}")
    params = inspect.signature(mod.run).parameters
    kwargs: dict[str, Any] = {"quick": quick}
    if "device" in params:
        kwargs["device"] = device
    if "only" in params and only not in (None, module):
        kwargs["only"] = only
    return list(mod.run(**kwargs))


def collect(quick: bool, device: str, only: str | None) -> list[dict]:
    """Rows from every benchmark module that applies; a crashing module becomes an error row."""
    rows: list[dict] = []
    modules = ["readouts", "extraction", "harness"]
    # scaleout (Ray vs serial) starts a cluster, brainscore runs Brain-Score's code (~30 min): only when asked
    if only in [*modules, "scaleout", "brainscore"]:
        modules = [only]
    elif only is not None:
        modules = ["readouts"]  # task names within the readout benchmarks
    for module in modules:
        try:
            importlib.import_module(f"perf.{module}")
        except ImportError as err:
            if module != "readouts":
                print(f"[bench] skipping {module}: {err}", file=sys.stderr)
                continue
            raise
        start = time.perf_counter()
        try:
            new = _call_run(module, quick, device, only)
        except Exception as err:  # keep the other module's results
            traceback.print_exc()
            new = [
                {
                    "task": f"{module}: failed",
                    "ours_s": None,
                    "ref_s": None,
                    "ratio": None,
                    "target": None,
                    "met": False,
                    "notes": f"{type(err).__name__}: {err}",
                }
            ]
        for row in new:
            row.setdefault("module", module)
        rows.extend(new)
        print(f"[bench] {module}: {len(new)} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        print(table(new), file=sys.stderr, flush=True)  # progress: a long run shows each module as it ends
    return rows


# --------------------------------------------------------------------------- output


def _cell(row: dict, key: str) -> str:
    """Table cell text for one column."""
    value = row.get(key)
    if value is None:
        return "-"
    if key == "met":
        return "yes" if value else "NO"
    if key == "ratio":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(rows: list[dict]) -> str:
    """Plain-text table for the terminal."""
    cells = [HEADERS] + [tuple(_cell(r, k) for k in COLUMNS) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The results file for humans: machine, table, per-row notes."""
    m = result["machine"]
    blas = "; ".join(
        " ".join(filter(None, [b["internal_api"], b.get("version")])) + f" ({b['prefix']}, "
        f"{b['num_threads']} threads)"
        for b in m["blas"]
    )
    env = ", ".join(f"{k}={v}" for k, v in m["env"].items() if v is not None) or "no thread variables set"
    lines = [
        f"# Benchmark results: {result['label']} ({result['date']})",
        "",
        f"`python -m perf.run {' '.join(result['argv'])}`, {result['wall_s']:.0f} s wall, git {m['git_commit']}.",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| host | {m['hostname']} ({m['platform']}) |",
        f"| CPU | {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable) |",
        f"| RAM | {m['ram_gib']} GiB |",
        f"| GPU | {m['gpu'] or 'none'} |",
        f"| versions | python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + " |",
        f"| BLAS | {blas}; torch BLAS {m['torch_blas']}, {m['torch_threads']} threads |",
        f"| env | {env} |",
        f"| load average (1 min) | {result['load_before']:.2f} before, {result['load_after']:.2f} after |",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "| " + " | ".join("---" for _ in HEADERS) + " |",
    ]
    lines += [
        "| " + " | ".join(_cell(r, k).replace("|", "/") for k in COLUMNS) + " |" for r in result["rows"]
    ]
    lines += ["", "Notes:", ""]
    lines += [f"- **{r['task']}**: {r.get('notes', '')}" for r in result["rows"]]
    if result.get("remark"):
        lines += ["", result["remark"]]
    return "\n".join(lines) + "\n"


def _label(args: argparse.Namespace, host: str) -> str:
    """File-name label: --label, else the hostname; plus the device and '-quick' where they apply."""
    base = args.label or host
    base += "" if args.device == "cpu" else f"-{args.device}"
    base += "-quick" if args.quick else ""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run in well under a minute"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="'readouts', 'extraction', 'harness', 'scaleout' (Ray vs serial), or part of a readout task name",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--label", default=None, help="results file name prefix (default: hostname)")
    parser.add_argument(
        "--remark", default=None, help="a sentence to keep with the results (e.g. overlapping jobs)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device visible")
    info = machine()
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    rows = collect(args.quick, args.device, args.only)
    result = {
        "schema": "itbench.bench/1",
        "label": _label(args, info["hostname"]),
        "date": dt.date.today().isoformat(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "device": args.device,
        "wall_s": round(time.perf_counter() - start, 1),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "remark": args.remark,
        "machine": info,
        "rows": rows,
    }
    print(table(rows))
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = RESULTS / f"{result['label']}-{result['date']}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(result))
        print(f"wrote {stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
