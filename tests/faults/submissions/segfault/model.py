"""Hostile fixture: the process dies of SIGSEGV in predict (as a broken C extension would)."""

import os
import signal


class Model:
    def fit(self, train):
        self.n = train.responses.shape[1]

    def predict(self, images):
        os.kill(os.getpid(), signal.SIGSEGV)


def build(ctx):
    return Model()
