"""Hostile fixture: predict returns a dict instead of an array."""

import numpy as np


class Model:
    def fit(self, train):
        self.n = train.responses.shape[1]

    def predict(self, images):
        return {"predictions": np.zeros((len(images), self.n))}


def build(ctx):
    return Model()
