"""Hostile fixture: allocates (and touches) memory in 100 MiB steps without bound."""

import time

import numpy as np


class Model:
    def fit(self, train):
        hog = []
        for _ in range(200):  # 20 GiB if nobody stops it
            hog.append(np.ones(100 * 2**20 // 8))
            time.sleep(0.01)
        raise AssertionError("allocated 20 GiB without being stopped")

    def predict(self, images):
        raise AssertionError("unreachable")


def build(ctx):
    return Model()
