"""Hostile fixture: predict raises after a successful fit."""


class Model:
    def fit(self, train):
        self.n = train.responses.shape[1]

    def predict(self, images):
        raise ValueError("boom in predict")


def build(ctx):
    return Model()
