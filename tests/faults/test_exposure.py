"""Trust, third round: what a run was shown decides what it may keep; the parent's memory has a bound.

Attacks (all sandboxed, as root, on the demo):

* a submission that memorises every response it is shown (keyed by the image)
  in its own cache, under Brain-Score's per-split fits (each shown 90 % of all
  stimuli, so over 10 splits every stimulus with responses), and answers a
  later fixed-split val run from memory;
* the same memory replayed as ``features`` under the brainscore protocol after a
  fixed-split fit stored the train responses;
* features whose header claims a million columns (a sparse file: no disk, no
  child memory), as features and as a Gram matrix: the parent must not follow;
* degenerate features (constant, NaN): a failed record with the reason.
"""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from itbench.errors import ItbenchError
from itbench.harness import runcore
from itbench.harness.runner import score_submission

MEMORISER = """
import hashlib
from pathlib import Path

import numpy as np


def key(image):
    return hashlib.sha1(np.asarray(image.numpy(), np.float32).tobytes()).hexdigest()[:20]


class Memoriser:
    '''Remembers every response it is shown, by image; answers from memory where it can.'''

    def __init__(self, ctx):
        self.memory = Path(ctx.cache_dir) / "memory"
        self.mean = None

    def fit(self, train):
        self.memory.mkdir(parents=True, exist_ok=True)
        for image, response in zip(train.images, train.responses):
            np.save(self.memory / f"{key(image)}.npy", response)
        self.mean = train.responses.mean(axis=0)

    def recall(self, images):
        rows, hits = [], 0
        for image in images:
            found = self.memory / f"{key(image)}.npy"
            if found.exists():
                rows.append(np.load(found))
                hits += 1
            else:  # an honest, poor guess: the mean, nudged by the image's brightness
                rows.append(self.mean + 0.01 * float(image.mean()))
        print(f"ITBENCH-RECALL {hits}/{len(images)}", flush=True)
        return np.stack(rows).astype("float32")

    def predict(self, images):
        return self.recall(images)
FEATURES_HOOK


def build(ctx):
    return Memoriser(ctx)
"""

REPLAY = """
    def features(self, images):
        self.mean = np.zeros(168, np.float32)
        pixels = images.reshape(len(images), -1)[:, :64].numpy()
        return np.concatenate([self.recall(images), pixels], axis=1)
"""


@pytest.fixture
def demo_home(tmp_path, monkeypatch, sandboxed):
    """A fresh data home with the demo benchmark, results and caches of this test only."""
    from itbench.scoring.benchmark import load_benchmark

    try:
        load_benchmark("demo").responses("val")
    except (ItbenchError, FileNotFoundError) as err:
        pytest.skip(f"demo benchmark not available: {err}")
    monkeypatch.setenv("ITBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _folder(root: Path, name: str, model: str) -> Path:
    folder = root / "submissions" / name
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(textwrap.dedent(model))
    (folder / "submission.toml").write_text(f'name = "{name}"\n')
    return folder


def _score(folder: Path, root: Path, **kw):
    opts = {"device": "cpu", "results_root": root / "results", "n_boot": 10, "use_cache": False}
    opts["submissions_root"] = folder.parent
    return score_submission(folder, "demo", log=lambda msg: None, **{**opts, **kw})


def test_per_split_fits_keep_nothing_that_a_fixed_split_run_can_recall(demo_home, capfd):
    sub = _folder(demo_home, "memoriser", MEMORISER.replace("FEATURES_HOOK", ""))
    control = _score(sub, demo_home, split="val")
    assert control.status == "ok", control.error
    capfd.readouterr()
    attack = _score(sub, demo_home, protocol="brainscore")  # ten fits, each shown 90 % of all stimuli
    assert attack.status == "ok", attack.error
    again = _score(sub, demo_home, split="val")
    recalled = [line for line in capfd.readouterr().out.splitlines() if line.startswith("ITBENCH-RECALL")]
    n_val = again.scores.n_images
    assert again.status == "ok" and recalled[-1] == f"ITBENCH-RECALL 0/{n_val}", recalled[-1:]
    print(
        f"ITBENCH-MEMO val mean r {again.scores.mean_r:.4f} (control {control.scores.mean_r:.4f}, ceiling {again.scores.ceiling:.3f})"
    )
    # exactly what it scored before anything was memorised: far from the 1.0 of a recall
    assert again.scores.mean_r == pytest.approx(control.scores.mean_r, abs=1e-9)
    assert again.scores.mean_r < 0.5 * again.scores.ceiling
    # each per-split fit recalled nothing from its predecessors either
    assert all(line.startswith("ITBENCH-RECALL 0/") for line in recalled[:-1]), recalled


def test_a_features_run_cannot_replay_what_a_fixed_split_fit_was_shown(demo_home, capfd):
    sub = _folder(demo_home, "replayer", MEMORISER.replace("FEATURES_HOOK", REPLAY))
    fitted = _score(sub, demo_home, split="val")  # stores the train responses in its own cache
    assert fitted.status == "ok", fitted.error
    capfd.readouterr()
    replay = _score(sub, demo_home, protocol="brainscore")
    out = capfd.readouterr().out
    assert "ITBENCH-RECALL 0/" in out, out[-500:]  # the features run saw an empty cache
    assert replay.status == "ok", replay.error
    assert replay.brainscore.raw_r < 0.5 * replay.brainscore.ceiling  # no replayed responses


def test_exposure_namespaces_differ_by_what_was_shown(demo_home):
    from itbench.scoring.benchmark import load_benchmark

    bench = load_benchmark("demo")
    train = [str(s) for s in bench.stimulus_ids("train")]
    val = [str(s) for s in bench.stimulus_ids("val")]
    shown_train = runcore.Exposure.responses_of(bench, train)
    assert shown_train == runcore.Exposure.responses_of(bench, list(reversed(train)))  # a set, not a list
    spaces = {
        e.namespace("s", "sandboxed")
        for e in (runcore.Exposure.nothing(), shown_train, runcore.Exposure.responses_of(bench, train + val))
    }
    assert len(spaces) == 3
    assert shown_train.namespace("s", "sandboxed") != shown_train.namespace("s", "unsandboxed")
    with runcore.own_cache(runcore.Exposure.responses_of(bench, train, keep=False), "s", "sandboxed") as tmp:
        (tmp / "kept").write_text("x")
    assert not tmp.exists() and not (shown_train.namespace("s", "sandboxed") / "kept").exists()


# --- the parent's memory follows no claim ------------------------------------------------

CLAIMS_WIDE = """
import json, os
import numpy as np


class Claimer:
    def predict(self, images):
        return np.zeros((len(images), 168), np.float32)

    def features(self, images):
        n = len(images)
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, SHAPE)}
        text = repr(header).encode("latin1")
        text += b" " * (63 - (len(text) + 10) % 64) + b"\\n"
        with open(FILE, "wb") as f:
            f.write(b"\\x93NUMPY\\x01\\x00" + len(text).to_bytes(2, "little") + text)
            f.truncate(f.tell() + n * SHAPE * 4)  # sparse: the claim costs no disk and no memory
        json.dump({"ok": True, "features": True, "gram": GRAM, "fit_cached": False}, open("status.json", "w"))
        os._exit(0)


def build(ctx):
    return Claimer()
"""

HONEST_FEATURES = """
import numpy as np


class Pixels:
    def predict(self, images):
        return np.zeros((len(images), 168), np.float32)

    def features(self, images):
        return images.reshape(len(images), -1)[:, :3072].numpy()


def build(ctx):
    return Pixels()
"""


def _peak_rss_while(fn) -> tuple[object, int]:
    """Run ``fn`` while sampling this process's resident memory; (result, peak bytes above the start)."""
    me, peak, done = psutil.Process(), [0], threading.Event()
    start = me.memory_info().rss

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss - start)
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return result, peak[0]


@pytest.mark.parametrize(
    "file, gram, fragment",
    [("features.npy", False, "more than the"), ("gram.npy", True, "more than the")],
)
def test_a_claimed_million_columns_never_reach_the_parents_memory(demo_home, file, gram, fragment):
    honest = _folder(demo_home, "honest", HONEST_FEATURES)
    control, control_peak = _peak_rss_while(lambda: _score(honest, demo_home, protocol="brainscore"))
    assert control.status == "ok", control.error
    model = CLAIMS_WIDE.replace("SHAPE", "1_000_000").replace("FILE", repr(file)).replace("GRAM", str(gram))
    claimer = _folder(demo_home, f"claimer-{str(gram).lower()}", model)
    record, peak = _peak_rss_while(lambda: _score(claimer, demo_home, protocol="brainscore"))
    assert record.status == "failed" and fragment in record.error, record.error
    assert "Traceback" not in record.error
    print(
        f"ITBENCH-PEAK parent +{peak / 2**20:.0f} MiB (claim, {file}) vs +{control_peak / 2**20:.0f} MiB (3,072 honest features)"
    )
    assert peak < control_peak + 256 * 2**20, (peak / 2**20, control_peak / 2**20)


@pytest.mark.parametrize(
    "features, fragment",
    [
        ("np.zeros((len(images), 5000), np.float32)", "same for every image"),
        ("np.ones((len(images), 12), np.float32)", "same for every image"),
        ("np.full((len(images), 5000), np.nan, np.float32)", "contain NaN or inf"),
        ("np.full((len(images), 12), np.inf, np.float32)", "contain NaN or inf"),
    ],
)
def test_degenerate_features_fail_with_a_reason(demo_home, features, fragment):
    model = HONEST_FEATURES.replace("images.reshape(len(images), -1)[:, :3072].numpy()", features)
    record = _score(_folder(demo_home, "degenerate", model), demo_home, protocol="brainscore")
    assert record.status == "failed" and fragment in record.error, record.error
    assert record.path is not None and record.path.exists()


QUOTA_FEATURES = """
import os
from pathlib import Path

import numpy as np


class Filler:
    def __init__(self, ctx):
        self.cache = Path(ctx.cache_dir)

    def predict(self, images):
        return np.zeros((len(images), 168), np.float32)

    def features(self, images):
        (self.cache / "blob").write_bytes(os.urandom(700_000))  # its own cache: within the quota
        return images.reshape(len(images), -1)[:, :100].numpy()  # 256 KB sent; 512 KB as float64


def build(ctx):
    return Filler(ctx)
"""


def test_the_parents_caches_count_against_the_submissions_quota(demo_home):
    from itbench.models.cache import outputs_dir

    sub = _folder(demo_home, "quota", QUOTA_FEATURES)
    (sub / "submission.toml").write_text('name = "quota"\n[limits]\ndisk_gb = 0.001\n')
    record = _score(sub, demo_home, protocol="brainscore", use_cache=True)
    assert record.status == "ok", record.error
    assert not list(outputs_dir("quota").glob("*.npy"))  # 0.7 MB kept + 0.5 MB more > 1.07 MB
    roomy = _folder(demo_home, "roomy", QUOTA_FEATURES)
    assert _score(roomy, demo_home, protocol="brainscore", use_cache=True).status == "ok"
    assert len(list(outputs_dir("roomy").glob("*.npy"))) == 1
