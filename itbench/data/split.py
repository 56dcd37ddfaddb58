"""Fixed, committed train/val/test splits: ``benchmark/splits/<id>.csv``.

A split file has columns ``stimulus_id,split`` (split in train / val / test);
lines starting with ``#`` are comments (provenance: how and with which seed
the split was made). The file's sha1 goes into every result record, so a score
always says which split it was computed on.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from itbench import paths
from itbench.data.download import file_sha1
from itbench.errors import DataError

LABELS = ("train", "val", "test")


def split_path(benchmark_id: str) -> Path:
    """Where the committed split of a benchmark lives: its manifest's ``split.path``.

    Benchmarks that share images share a split (MajajHong2015 IT and V4). An id
    without a manifest gets the conventional ``benchmark/splits/<id>.csv``.
    """
    from itbench.data import registry
    from itbench.errors import BenchmarkError

    try:
        return registry.get(benchmark_id).split_path()
    except BenchmarkError:
        return paths.benchmark_dir() / "splits" / f"{benchmark_id}.csv"


def file_hash(path: str | os.PathLike) -> str:
    """sha1 of a split (or any) file, as recorded in result records."""
    return file_sha1(path)


def _read_csv_skipping_comments(path: Path) -> pd.DataFrame:
    """Read the CSV after dropping whole-line ``#`` comments (ids may contain '#')."""
    lines = [
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")
    ]
    try:
        return pd.read_csv(io.StringIO("\n".join(lines)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"cannot parse the split file {path}: {err}", hint="restore it from git") from err


def validate_split(split: pd.Series, where: str) -> pd.Series:
    """Refuse unknown labels and duplicate stimulus ids; return the split unchanged."""
    bad = sorted(set(split.to_numpy()) - set(LABELS))
    if bad:
        raise DataError(
            f"split {where} has unknown label(s) {', '.join(map(repr, bad[:5]))}; allowed: {', '.join(LABELS)}",
            hint="each row's split must be train, val or test",
        )
    dup = split.index[split.index.duplicated()].unique()
    if len(dup):
        raise DataError(
            f"split {where} lists {len(dup)} stimulus id(s) more than once: {', '.join(map(str, dup[:5]))}",
            hint="each stimulus_id must be assigned to exactly one split",
        )
    return split


def read_split(path: str | os.PathLike) -> pd.Series:
    """A split file as a Series: index stimulus_id, values train/val/test (file order)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no split file at {path}", hint="restore the committed split file from git")
    table = _read_csv_skipping_comments(path)
    missing = [c for c in ("stimulus_id", "split") if c not in table.columns]
    if missing:
        raise DataError(
            f"split file {path} lacks column(s) {', '.join(missing)} (has {', '.join(table.columns)})",
            hint="a split file has the header `stimulus_id,split`",
        )
    split = pd.Series(
        table["split"].str.strip().to_numpy(),
        index=pd.Index(table["stimulus_id"], name="stimulus_id"),
        name="split",
    )
    return validate_split(split, str(path))


def load_split(benchmark_id: str) -> pd.Series:
    """The committed split of a benchmark (``benchmark/splits/<id>.csv``)."""
    return read_split(split_path(benchmark_id))


def _stratified_take(
    table: pd.DataFrame, n_take: int, n_keep: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ``n_take`` rows stratified by object (sklearn); returns (kept, taken)."""
    from sklearn.model_selection import train_test_split

    if n_take == 0:
        return table, table.iloc[:0]
    if n_keep == 0:
        return table.iloc[:0], table
    return train_test_split(
        table, test_size=n_take, train_size=n_keep, stratify=table["object"], random_state=seed
    )


def make_split(
    ids: Sequence[str] | np.ndarray,
    objects: Sequence[str] | np.ndarray,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
) -> pd.Series:
    """Assign ids to train/val/test with exact sizes, stratified by object, deterministically.

    Ids are sorted first, so the result depends only on the set of (id, object)
    pairs and the seed, never on input order. Stratification uses
    scikit-learn's ``train_test_split`` (test first, then val out of the rest),
    so every object keeps its share in each split (within one image).
    """
    table = pd.DataFrame({"stimulus_id": [str(i) for i in ids], "object": [str(o) for o in objects]})
    if len(table) != n_train + n_val + n_test:
        raise DataError(
            f"cannot split {len(table)} stimuli into {n_train} + {n_val} + {n_test} = {n_train + n_val + n_test}",
            hint="the split sizes must add up to the number of stimuli",
        )
    validate_split(pd.Series("train", index=table["stimulus_id"]), "to be made")
    table = table.sort_values("stimulus_id", kind="stable").reset_index(drop=True)
    labels = pd.Series("train", index=pd.Index(table["stimulus_id"], name="stimulus_id"), name="split")
    try:
        rest, test = _stratified_take(table, n_test, n_train + n_val, seed)
        _, val = _stratified_take(rest, n_val, n_train, seed + 1)
    except ValueError as err:
        raise DataError(
            f"cannot stratify {len(table)} stimuli of {table['object'].nunique()} objects into "
            f"{n_train}/{n_val}/{n_test}: {err}",
            hint="every object needs at least as many images as there are non-empty splits",
        ) from err
    labels.loc[test["stimulus_id"].to_numpy()] = "test"
    labels.loc[val["stimulus_id"].to_numpy()] = "val"
    return labels


def write_split(split: pd.Series, path: str | os.PathLike, comment: str = "") -> Path:
    """Write a split file (comment lines first), atomically."""
    path = Path(path)
    validate_split(split, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    body = pd.DataFrame({"stimulus_id": split.index.astype(str), "split": split.to_numpy()}).to_csv(
        index=False, lineterminator="\n"
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(header + body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def split_counts(split: pd.Series) -> dict[str, int]:
    """Images per split, in train/val/test order."""
    counts = split.value_counts()
    return {label: int(counts.get(label, 0)) for label in LABELS}


def check_split_covers(split: pd.Series, ids: Sequence[str] | np.ndarray, where: str) -> None:
    """The split must list exactly the benchmark's stimuli: no more, no fewer."""
    index = pd.Index([str(i) for i in ids])
    extra = split.index.difference(index)
    missing = index.difference(split.index)
    if len(extra) or len(missing):
        raise DataError(
            f"split {where} does not match the data: {len(missing)} stimuli have no split "
            f"(e.g. {', '.join(map(str, np.asarray(missing[:3])))}), {len(extra)} split ids are not in the data "
            f"(e.g. {', '.join(map(str, np.asarray(extra[:3])))})",
            hint="the data files and the committed split belong to different versions: re-fetch the data",
        )
