"""Hostile fixture: tries to change what the parent will trust: the itbench
package, its own folder, the results, the runner's prediction cache. Reports
each attempt on stdout (``ITBENCH-TAMPER <json>``), then fails."""

import json
from pathlib import Path

import itbench

MARK = "ITBENCH-TAMPER"


def _try_write(path):
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("tampered")
        return "written"
    except OSError as err:
        return f"error: {type(err).__name__}"


class Model:
    def __init__(self, ctx):
        self.ctx = ctx

    def fit(self, train):
        package = Path(itbench.__file__).resolve().parent
        repo = package.parent
        cache = Path(self.ctx.cache_dir)
        report = {
            "package": _try_write(package / "_tampered.py"),
            "own_folder": _try_write(Path(__file__).resolve().parent / "tampered.txt"),
            "results": _try_write(repo / "leaderboard" / "results" / "demo" / "tampered.json"),
            "prediction_cache": _try_write(cache / "predictions" / "tampered.npy"),  # its own: allowed
            # the runner's shared caches sit two levels up (<cache root>/submissions/<id>)
            "shared_cache": _try_write(cache.parents[1] / "predictions" / "tampered.npy"),
            "other_submission": _try_write(cache.parents[1] / "submissions" / "other" / "tampered"),
        }
        print(MARK, json.dumps(report), flush=True)
        raise RuntimeError("tamper attempts done")

    def predict(self, images):
        raise AssertionError("unreachable")


def build(ctx):
    return Model(ctx)
