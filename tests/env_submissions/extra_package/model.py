"""Imports a package the base environment lacks and checks that its environment is read-only."""

import os
from pathlib import Path

import numpy as np
import tabulate

ENV = Path(os.environ["ITBENCH_ENV_DIR"])
assert Path(tabulate.__file__).resolve().is_relative_to(ENV.resolve()), tabulate.__file__
assert tabulate.__version__ == "0.9.0", tabulate.__version__


def _env_is_read_only():
    for target in (ENV / "planted.py", Path(tabulate.__file__)):
        try:
            with open(target, "a") as handle:
                handle.write("# planted\n")
        except OSError:
            continue
        return False
    return True


class TrainMean:
    def fit(self, train):
        self.mean = np.asarray(train.responses).mean(axis=0)

    def predict(self, images):
        if not _env_is_read_only():
            raise RuntimeError("the environment is writable inside the sandbox")
        rng = np.random.default_rng(0)
        return self.mean + 0.01 * rng.standard_normal((len(images), len(self.mean)))


def build(ctx):
    return TrainMean()
