"""Result records: canonical JSON, atomic writes, locks, failures never replace ok records."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import re
import time
from pathlib import Path

import pytest

from itbench.errors import ItbenchError
from itbench.harness.record import (
    BenchmarkRef,
    InvalidRecord,
    RunLimits,
    Scores,
    SubmissionRecord,
    SubmissionRef,
    SweepRecord,
    atomic_write_text,
    failure_path,
    parse_record,
    read_record,
    record_path,
    same_result,
    write_record,
)
from itbench.locks import locked

REPO = Path(__file__).resolve().parents[1]


def rec(status: str = "ok", value: float = 0.5) -> SubmissionRecord:
    return SubmissionRecord(
        submission=SubmissionRef(id="x", name="X"),
        benchmark=BenchmarkRef(id="demo", synthetic=True),
        status=status,
        scores=Scores(mean_r=value, median_r=math.nan) if status == "ok" else None,
    )


def test_paths_per_split(tmp_path):
    assert record_path(tmp_path, "demo", "x", "val") == tmp_path / "demo" / "x.json"
    assert record_path(tmp_path, "demo", "x", "test") == tmp_path / "demo" / "x.test.json"


def test_canonical_json_nan_to_null_and_sorted():
    text = rec().to_json()
    data = json.loads(text)
    assert data["scores"]["median_r"] is None and data["schema"] == "itbench.record/1"
    assert list(data) == sorted(data)
    assert parse_record(data).to_json() == text  # one serialiser, one parser: a fixed point


def test_failed_run_keeps_ok_record_byte_identical(tmp_path):
    path = tmp_path / "demo" / "x.json"
    write_record(rec("ok"), path)
    before = path.read_bytes()
    where = write_record(rec("failed"), path)
    assert where == failure_path(path)
    assert path.read_bytes() == before
    assert read_record(where).status == "failed"
    write_record(rec("ok", 0.7), path)  # a new good run replaces and clears the failure
    assert read_record(path).scores.mean_r == 0.7
    assert not failure_path(path).exists()


def test_a_rescore_that_reproduces_the_record_leaves_the_file_as_it_is(tmp_path):
    path = tmp_path / "demo" / "x.json"
    first = rec("ok", 0.5)
    first.provenance.stamp(12.0)
    write_record(first, path)
    before = path.read_bytes()
    again = rec("ok", 0.5 * (1 + 1e-13))  # floating-point noise of a rerun
    again.created = "2031-01-01T00:00:00+00:00"
    again.provenance.stamp(3.0)
    again.provenance.peak_rss_gb = 9.9
    again.provenance.limits = RunLimits(timeout_s=60.0)  # a cached rerun ran no child: other or no limits
    assert same_result(read_record(path), again)
    assert write_record(again, path) == path and path.read_bytes() == before
    changed = rec("ok", 0.5001)
    assert not same_result(read_record(path), changed)
    write_record(changed, path)
    assert read_record(path).scores.mean_r == 0.5001
    other_platform = rec("ok", 0.5001)
    other_platform.provenance.stamp(1.0)
    other_platform.provenance.platform = "Linux aarch64 python 3.13.0"
    assert not same_result(read_record(path), other_platform)


def test_float32_noise_of_another_cpu_reproduces_and_a_real_change_does_not():
    """The committed effnet_lite0_ridge record rescored on another VM: median r moved in the 7th digit."""
    stored, rescored = 0.7188657257082324, 0.7188656285922583  # measured, 1.4e-7 relative
    assert same_result(rec("ok", stored), rec("ok", rescored))
    assert same_result(rec("ok", 0.727104), rec("ok", 0.727105))  # a bootstrap value stored to 6 decimals
    assert same_result(rec("ok", 1e-7), rec("ok", -1e-6))  # near zero, absolute precision counts
    assert not same_result(rec("ok", stored), rec("ok", stored * (1 + 3e-5)))
    assert not same_result(rec("ok", 0.0), rec("ok", 1e-5))


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": "other"}', "schema is 'other'"),
        ("{truncated", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (b"\xff\xfe".decode("latin-1"), "not valid JSON"),
    ],
)
def test_read_record_rejects_invalid(tmp_path, text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(InvalidRecord, match=message):
        read_record(bad)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda r: r.update(status="great"), "status"),
        (lambda r: r["submission"].update(id="../escape"), "submission.id"),
        (lambda r: r["scores"].update(mean_r="0.5"), "scores.mean_r"),
        (lambda r: r["scores"].update(n_images=3.5), "scores.n_images"),
        (lambda r: r.update(unexpected=1), "unexpected"),
        (lambda r: r["submission"].update(table1_row=13), "submission.table1_row"),
    ],
)
def test_parse_names_the_bad_field(mutate, where):
    data = json.loads(rec().to_json())
    mutate(data)
    with pytest.raises(InvalidRecord, match=re.escape(where)):
        parse_record(data)


def test_every_committed_record_loads_and_round_trips():
    """Records written before the typed module (leaderboard/ and the fixtures) still load."""
    files = sorted((REPO / "leaderboard" / "results").rglob("*.json"))
    files += sorted((REPO / "tests" / "fixtures" / "records").rglob("*.json"))
    loaded = 0
    for path in files:
        if path.name in ("broken.json", "wrong_schema.json"):  # fixtures that must fail
            continue
        record = read_record(path)
        assert isinstance(record, SubmissionRecord | SweepRecord)
        again = parse_record(json.loads(record.to_json()))
        assert again == record, path
        loaded += 1
    assert loaded >= 20


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
