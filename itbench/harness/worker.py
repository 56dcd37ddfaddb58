"""The child process that runs one submission: ``python -m itbench.harness.worker WORKDIR``.

It sees only what the runner wrote into WORKDIR (train images, train
responses and labels, the images to predict) and writes ``predictions.npy``
and ``status.json`` back. Held-out responses never reach this process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from itbench.contract import TrainData, can_fit, can_persist, has_features

JOB = "job.json"
STATUS = "status.json"
PREDICTIONS = "predictions.npy"
TRAIN_IMAGES = "train_images.npy"
TRAIN_RESPONSES = "train_responses.npy"
TRAIN_META = "train_meta.json"
TRAIN_META_KEYS = ("stimulus_id", "object_name", "category_name", "neuroid_id")
EVAL_IMAGES = "eval_images.npy"
FEATURES = "features.npy"
GRAM = "gram.npy"


def _write_status(workdir: Path, status: dict[str, Any]) -> None:
    tmp = workdir / f".{STATUS}.tmp"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, workdir / STATUS)


def write_train(workdir: Path, images: np.ndarray, responses: np.ndarray, meta: dict[str, list[str]]) -> None:
    """The parent's side of the train split: what :func:`_train_data` reads back in the child."""
    np.save(workdir / TRAIN_IMAGES, images)
    np.save(workdir / TRAIN_RESPONSES, responses.astype(np.float32))
    (workdir / TRAIN_META).write_text(json.dumps(meta))


def _send_features(workdir: Path, features: np.ndarray, n_images: int) -> bool:
    """Features no wider than there are images as they are; wider ones as their Gram matrix.

    Returns whether the Gram was sent. PLS needs only inner products of the
    rows, and this keeps what the parent reads to at most n x n numbers.
    Features of the wrong shape go back as they are, for the parent to name.
    """
    if features.ndim >= 2 and features.shape[0] == n_images:
        features = features.reshape(n_images, -1)
        if features.shape[1] > n_images:
            from itbench.linalg import gram_matrix

            np.save(workdir / GRAM, gram_matrix(features), allow_pickle=False)
            return True
    np.save(workdir / FEATURES, features, allow_pickle=False)
    return False


def _train_data(workdir: Path) -> TrainData:
    import torch

    meta = json.loads((workdir / TRAIN_META).read_text())
    return TrainData(
        images=torch.from_numpy(np.load(workdir / TRAIN_IMAGES)),
        responses=np.load(workdir / TRAIN_RESPONSES),
        stimulus_id=np.array(meta["stimulus_id"]),
        object_name=np.array(meta["object_name"]),
        category_name=np.array(meta["category_name"]),
        neuroid_id=np.array(meta["neuroid_id"]),
    )


def _as_array(pred: Any) -> np.ndarray:
    """Bring a torch tensor or array-like to numpy without trusting its type."""
    if hasattr(pred, "detach") and hasattr(pred, "cpu"):
        pred = pred.detach().float().cpu().numpy()
    if not isinstance(pred, np.ndarray):
        raise TypeError(f"predict returned {type(pred).__name__}, not an array (N, n_neuroids)")
    if pred.dtype.kind not in "fiub":
        raise TypeError(f"predict returned an array of dtype {pred.dtype}, not numbers")
    return pred


def _fit_or_restore(model: Any, job: dict[str, Any], workdir: Path) -> bool:
    """Fit on train, or load the cached fitted state. Returns True when restored."""
    fitted = Path(job["fitted_dir"]) if job.get("fitted_dir") else None
    can_save = can_persist(model)
    if fitted and can_save and (fitted / "COMPLETE").exists():
        model.load(fitted)
        return True
    if can_fit(model):
        model.fit(_train_data(workdir))
        if fitted and can_save:
            partial = fitted.with_name(fitted.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            model.save(partial)
            (partial / "COMPLETE").write_text("ok")
            shutil.rmtree(fitted, ignore_errors=True)
            os.replace(partial, fitted)
    return False


def _where(err: BaseException, folder: Path) -> str | None:
    """``model.py:12``: the deepest frame of the error inside the submission's folder."""
    found = None
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, SyntaxError) and cause.filename and cause.lineno:
            path = Path(cause.filename)
            if path.is_relative_to(folder):
                return f"{path.relative_to(folder)}:{cause.lineno}"
        for frame in traceback.extract_tb(cause.__traceback__):
            path = Path(frame.filename)
            if path.is_relative_to(folder):
                found = f"{path.relative_to(folder)}:{frame.lineno}"
        if found:
            return found
        cause = cause.__cause__ or cause.__context__
    return None


def _add_env_pth() -> None:
    """Run the ``.pth`` files of the submission's own packages: here, inside the sandbox, never in the parent.

    The folder is already first on ``sys.path`` (``PYTHONPATH``), where Python
    skips ``.pth`` files; ``addsitedir`` processes them without moving it.
    """
    env_dir = os.environ.get("ITBENCH_ENV_DIR")
    if env_dir:
        import site

        site.addsitedir(env_dir)


def run(workdir: Path) -> int:
    """Build, fit (or restore) and predict; report the outcome in status.json."""
    import torch

    from itbench.contract import Context
    from itbench.harness.submission import build_model, load_submission

    job = json.loads((workdir / JOB).read_text())
    phase = "build"
    try:
        _add_env_pth()
        torch.manual_seed(job["seed"])
        np.random.seed(job["seed"])
        sub = load_submission(job["submission_path"])
        ctx = Context(
            device=job["device"],
            batch_size=job["batch_size"],
            seed=job["seed"],
            params=job["params"],
            benchmark_id=job["benchmark_id"],
            size=job["size"],
            cache_dir=Path(job["cache_dir"]) if job.get("cache_dir") else None,
        )
        model = build_model(sub, ctx)
        if job.get("mode") == "features":  # Brain-Score's protocol: features of every image, no fit
            phase = "features"
            offered, gram = has_features(model), False
            if offered:
                images = torch.from_numpy(np.load(workdir / EVAL_IMAGES))
                gram = _send_features(workdir, _as_array(model.features(images)), len(images))
            _write_status(workdir, {"ok": True, "features": offered, "gram": gram, "fit_cached": False})
            return 0
        phase = "fit"
        restored = _fit_or_restore(model, job, workdir)
        phase = "predict"
        images = torch.from_numpy(np.load(workdir / EVAL_IMAGES))
        pred = _as_array(model.predict(images))
        np.save(workdir / PREDICTIONS, pred, allow_pickle=False)
        _write_status(workdir, {"ok": True, "fit_cached": restored})
        return 0
    except BaseException as err:  # report everything, including SystemExit from user code
        hint = getattr(err, "hint", None)
        _write_status(
            workdir,
            {
                "ok": False,
                "phase": phase,
                "error_type": type(err).__name__[:200],
                "error": str(err).splitlines()[0][:500] if str(err) else type(err).__name__,
                "where": _where(err, Path(job["submission_path"])),
                "hint": hint[:2000] if isinstance(hint, str) else None,
                "traceback": traceback.format_exc()[-4000:],
            },
        )
        # one line for the terminal; the full traceback travels in status.json to the record
        print(f"submission failed: {type(err).__name__} in {phase}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
