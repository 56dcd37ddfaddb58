"""Hostile fixture: opens the demo benchmark's responses (val and test included)
from the repository in fit and lets the error escape."""

from pathlib import Path

import itbench


class Model:
    def fit(self, train):
        repo = Path(itbench.__file__).resolve().parents[1]
        with open(repo / "benchmark" / "demo" / "assembly.nc", "rb") as handle:
            self.stolen = handle.read()

    def predict(self, images):
        raise AssertionError("read the held-out responses: the sandbox failed")


def build(ctx):
    return Model()
