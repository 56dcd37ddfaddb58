"""Hostile fixture: exits with status 0 in predict without writing predictions or status."""

import os


class Model:
    def fit(self, train):
        self.n = train.responses.shape[1]

    def predict(self, images):
        os._exit(0)


def build(ctx):
    return Model()
