"""Hostile fixture: predict never returns, ignores SIGTERM and leaves a detached
grandchild (marked ``itbench-hostile-grandchild``) that must not survive the run."""

import signal
import subprocess
import sys
import time


class Model:
    def fit(self, train):
        self.n = train.responses.shape[1]

    def predict(self, images):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(3600)", "itbench-hostile-grandchild"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print("HANG-STARTED", flush=True)
        while True:
            time.sleep(1)


def build(ctx):
    return Model()
