"""Result records: canonical JSON, atomic writes, locks, failures never replace ok records."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from itbench.errors import ItbenchError
from itbench.harness.record import (
    SCHEMA,
    atomic_write_text,
    dumps,
    failure_path,
    locked,
    read_record,
    record_path,
    write_record,
)


def rec(status: str = "ok", value: float = 0.5) -> dict:
    return {
        "schema": SCHEMA,
        "kind": "submission",
        "status": status,
        "error": None,
        "scores": {"mean_r": value, "bad": math.nan},
    }


def test_paths_per_split(tmp_path):
    assert record_path(tmp_path, "demo", "x", "val") == tmp_path / "demo" / "x.json"
    assert record_path(tmp_path, "demo", "x", "test") == tmp_path / "demo" / "x.test.json"


def test_canonical_json_nan_to_null_and_sorted():
    text = dumps(rec())
    assert json.loads(text)["scores"]["bad"] is None
    assert text == dumps(dict(reversed(list(rec().items()))))


def test_failed_run_keeps_ok_record_byte_identical(tmp_path):
    path = tmp_path / "demo" / "x.json"
    write_record(rec("ok"), path)
    before = path.read_bytes()
    where = write_record(rec("failed"), path)
    assert where == failure_path(path)
    assert path.read_bytes() == before
    assert read_record(where)["status"] == "failed"
    write_record(rec("ok", 0.7), path)  # a new good run replaces and clears the failure
    assert read_record(path)["scores"]["mean_r"] == 0.7
    assert not failure_path(path).exists()


def test_failed_record_written_when_no_ok_record(tmp_path):
    path = tmp_path / "x.json"
    assert write_record(rec("skipped"), path) == path


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    atomic_write_text(path, "old")

    def boom(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no temp file left


def test_read_record_rejects_invalid(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "other"}')
    with pytest.raises(ValueError, match="not an"):
        read_record(bad)
    bad.write_text("{truncated")
    with pytest.raises(json.JSONDecodeError):
        read_record(bad)


def _hold_lock(path: str, seconds: float) -> None:
    with locked(Path(path)):
        time.sleep(seconds)


def test_lock_excludes_a_concurrent_writer(tmp_path):
    path = tmp_path / "x.json"
    proc = mp.get_context("spawn").Process(target=_hold_lock, args=(str(path), 3.0))
    proc.start()
    deadline = time.time() + 20
    lock_file = tmp_path / ".x.json.lock"
    while not lock_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # child holds the lock now
    with pytest.raises(ItbenchError, match="another itbench run"), locked(path, wait=False):
        pass
    start = time.time()
    with locked(path):  # waits for the child to release
        waited = time.time() - start
    proc.join()
    assert waited > 0.3
