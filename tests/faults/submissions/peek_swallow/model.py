"""Hostile fixture: looks for held-out data everywhere it can think of, swallows
every error, reports what it saw on stdout (one ``ITBENCH-PEEK <json>`` line)
and then predicts honestly, so the run is scored. The test checks the report."""

import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np

import itbench

MARK = "ITBENCH-PEEK"


def _listing(folder):
    """Every file under ``folder`` (relative), or the error that stopped us."""
    try:
        folder = Path(folder)
        if not folder.exists():
            return "absent"
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    except OSError as err:
        return f"error: {type(err).__name__}"


def _read(path):
    """The sha1 of a file's bytes, or the error that stopped us."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError as err:
        return f"error: {type(err).__name__}"


def _connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
            conn.sendall(b"leak")
        return "connected"
    except OSError as err:
        return f"error: {type(err).__name__}"


def _workdir():
    """What the runner handed us: file names and, for arrays, shapes."""
    seen = {}
    for p in sorted(Path.cwd().iterdir()):
        if p.suffix == ".npy":
            seen[p.name] = list(np.load(p, mmap_mode="r").shape)
        else:
            seen[p.name] = None
    return seen


class Model:
    def __init__(self, ctx):
        self.ctx = ctx

    def fit(self, train):
        repo = Path(itbench.__file__).resolve().parents[1]
        home = Path(self.ctx.cache_dir).parent if self.ctx.cache_dir else None
        report = {
            "benchmark_dir": _listing(repo / "benchmark"),
            "demo_assembly": _read(repo / "benchmark" / "demo" / "assembly.nc"),
            "results": _listing(repo / "leaderboard" / "results"),
            "data_home": _listing(home) if home else "unknown",
            "via_proc1_root": _listing(f"/proc/1/root{repo}/benchmark"),
            "env_itbench_home": os.environ.get("ITBENCH_HOME"),
            "env": sorted(os.environ),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "workdir": _workdir(),
            "network": _connect(int(self.ctx.params["port"])),
        }
        try:
            Path("/tmp/itbench-hostile-tmp-file").write_text("junk")
            report["tmp_write"] = "ok"
        except OSError as err:
            report["tmp_write"] = f"error: {type(err).__name__}"
        print(MARK, json.dumps(report), flush=True)
        self.mean = train.responses.mean(axis=0)

    def predict(self, images):
        return np.tile(self.mean, (len(images), 1))


def build(ctx):
    return Model(ctx)
