"""Hostile fixture: fit raises. The record must say so, in fit, with the message."""


class Model:
    def fit(self, train):
        raise RuntimeError(f"boom in fit after seeing {len(train)} training images")

    def predict(self, images):
        raise AssertionError("predict must not run when fit failed")


def build(ctx):
    return Model()
