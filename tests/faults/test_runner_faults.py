"""Fault injection through the whole runner: hostile submissions on the demo benchmark.

Every hostile submission in ``tests/faults/submissions/`` is scored with
``itbench.harness.runner.score_submission``. Whatever it does, the run must end with a
result record (status ``failed`` and an error naming the fault, or, for a
submission that swallows the sandbox's refusals, an honest ``ok`` record), the
earlier good record must stay byte-identical, and no file or process may be
left behind. The peeking submissions report what they could see; the held-out
responses must never be among it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from itbench.errors import ItbenchError
from itbench.harness import sandbox
from itbench.harness.record import (
    BenchmarkRef,
    Scores,
    SubmissionRecord,
    SubmissionRef,
    failure_path,
    read_record,
    record_path,
)

FIXTURES = Path(__file__).resolve().parent / "submissions"
GRANDCHILD_MARK = "itbench-hostile-grandchild"
HOSTILE_TMP_FILE = Path("/tmp/itbench-hostile-tmp-file")
WORKER_FILES = {"job.json", "train_images.npy", "train_responses.npy", "train_meta.json", "eval_images.npy"}


@pytest.fixture(scope="module")
def demo():
    """The embedded demo benchmark (skip cleanly while it is not installed)."""
    from itbench.scoring.benchmark import load_benchmark

    try:
        bench = load_benchmark("demo")
        bench.responses("val")
    except (ItbenchError, FileNotFoundError) as err:
        pytest.skip(f"demo benchmark not available: {err}")
    return bench


@pytest.fixture
def run_case(demo, tmp_path, monkeypatch, capfd, find_procs):
    """Score one hostile fixture with a good record already in place; check the aftermath.

    Returns ``(record, stdout)``. The fixture is copied so the test can write
    a port into its params, the runner's temp folder is redirected to an empty
    folder that must be empty again afterwards, and the prediction cache is
    bypassed so every case really runs.
    """
    from itbench.harness.runner import score_submission
    from itbench.paths import cache_root

    scratch = tmp_path / "runner-tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    results = tmp_path / "results"

    def run(
        case: str,
        *,
        port: int | None = None,
        expect_ok: bool = False,
        protocol: str = "fixed-split",
        features=False,
    ):
        sub = tmp_path / "subs" / case
        shutil.copytree(FIXTURES / case, sub)
        if port is not None:
            toml = sub / "submission.toml"
            toml.write_text(toml.read_text().replace("port = 0", f"port = {port}"))
        if features:
            with (sub / "model.py").open("a") as model:
                model.write(FEATURES_WRAPPER)
        good = record_path(results, "demo", case, "cv" if protocol == "brainscore" else "val")
        good_bytes = _plant_good_record(good, case)
        assert find_procs(GRANDCHILD_MARK) == []
        capfd.readouterr()
        record = score_submission(
            sub,
            "demo",
            split="val",
            device="cpu",
            batch_size=32,
            seed=0,
            results_root=results,
            use_cache=False,
            n_boot=20,
            log=lambda msg: None,
            submissions_root=sub.parent,
            protocol=protocol,
        )
        out = capfd.readouterr().out
        # a record was written, and an earlier ok record was not damaged
        assert record.status in ("ok", "failed"), record
        written = record.path
        assert read_record(written).status == record.status
        if record.status == "failed":
            assert written == failure_path(good)
            assert good.read_bytes() == good_bytes, "the earlier good record was changed"
            assert record.error, "a failed record must say why"
        assert expect_ok == (record.status == "ok"), record.error
        # nothing left behind: temp folders, files, half-written caches, processes
        assert list(scratch.iterdir()) == [], "runner left files in its temp folder"
        assert not HOSTILE_TMP_FILE.exists(), "the child wrote into the real /tmp"
        assert list(cache_root().glob("fitted/*.partial")) == []
        assert find_procs(GRANDCHILD_MARK) == []
        return record, out

    return run


FEATURES_WRAPPER = """

_hostile_build = build


class _AskedForFeatures:
    # the same hostile model on Brain-Score's features path: features() runs its fit and predict

    def __init__(self, inner):
        self.inner = inner

    def predict(self, images):
        return self.inner.predict(images)

    def features(self, images):
        import numpy as np

        from itbench.contract import TrainData

        n = len(images)
        names = np.array([f"s{i}" for i in range(n)])
        if hasattr(self.inner, "fit"):
            zeros = np.zeros((n, 168), np.float32)
            neuroids = np.array([f"n{i}" for i in range(168)])
            self.inner.fit(TrainData(images, zeros, names, names, names, neuroids))
        return self.inner.predict(images)


def build(ctx):
    return _AskedForFeatures(_hostile_build(ctx))
"""


def _plant_good_record(path: Path, case: str) -> bytes:
    """An ok record from an earlier run that a failing run must not touch."""
    record = SubmissionRecord(
        submission=SubmissionRef(id=case, name=case, code_hash="0" * 40),
        benchmark=BenchmarkRef(id="demo", synthetic=True),
        scores=Scores(mean_r=0.42),
        created="2026-01-01T00:00:00+00:00",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record.to_json())
    return path.read_bytes()


def _report(out: str, mark: str) -> dict:
    """The JSON line a peeking fixture printed."""
    lines = [line for line in out.splitlines() if line.startswith(mark + " ")]
    assert lines, f"fixture printed no {mark} line; stdout was:\n{out[-2000:]}"
    return json.loads(lines[-1][len(mark) + 1 :])


# --- crashes and limits -----------------------------------------------------

FAILURES = {
    "crash_fit": ["RuntimeError in fit", "boom in fit after seeing"],
    "crash_predict": ["ValueError in predict", "boom in predict"],
    "segfault": ["died of SIGSEGV"],
    "exit_silently": ["exited with status 0"],
    "strings": ["TypeError in predict", "dtype <U4, not numbers"],
    "dict": ["TypeError in predict", "predict returned dict, not an array"],
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_crashing_and_malformed_submissions_fail_cleanly(run_case, case):
    record, _ = run_case(case)
    for fragment in FAILURES[case]:
        assert fragment in record.error, record.error
    assert record.scores is None and record.per_neuroid is None


BRAINSCORE_CASES = [
    *((case, "per-split") for case in sorted(FAILURES)),
    *((case, "features") for case in sorted(FAILURES)),
    ("hang", "per-split"),
    ("oom", "features"),
    ("peek_raise", "features"),
]


@pytest.mark.parametrize("case, path", BRAINSCORE_CASES)
def test_hostile_cases_under_the_brainscore_protocol(run_case, case, path):
    """The same faults on Brain-Score's two paths: one fit per split, or features of every image."""
    record, _ = run_case(case, protocol="brainscore", features=path == "features")
    expected = {
        **FAILURES,
        "hang": ["timed out after 15 s"],
        "oom": ["ran out of memory"],
        "peek_raise": ["FileNotFoundError in fit", "benchmark/demo/assembly.nc"],
    }[case]
    if path == "features":  # the fault happens inside features(), the phase the worker names
        expected = [re.sub(r"^([A-Z]\w*) in (fit|predict)$", r"\1 in features", f) for f in expected]
    for fragment in expected:
        assert fragment in record.error, (case, path, record.error)
    assert record.protocol == "brainscore" and record.scores is None and record.brainscore is None


def test_wrong_predictions_are_rejected_with_the_problem(run_case, demo):
    n, k = len(demo.stimulus_ids("val")), len(demo.neuroid_ids)
    expected = {
        "wrong_shape": f"shape ({n}, {k + 1}), expected ({n}, {k})",
        "too_few_rows": f"shape ({n - 1}, {k}), expected ({n}, {k})",
        "nan": "contain 1 NaN and 0 inf values (in 1 neuroids)",
        "inf": "contain 0 NaN and 1 inf values (in 1 neuroids)",
    }
    for case, fragment in expected.items():
        record, _ = run_case(case)
        assert fragment in record.error, (case, record.error)
        assert record.scores is None


def test_hang_is_killed_at_the_timeout_with_its_grandchild(run_case):
    t0 = time.monotonic()
    record, out = run_case("hang")
    assert "HANG-STARTED" in out, "the hang (and its grandchild) was never reached"
    assert "timed out after 15 s" in record.error
    assert time.monotonic() - t0 < 15 + 30  # limit + setup + grace, not forever


def test_memory_hog_is_killed_at_the_limit(run_case):
    record, _ = run_case("oom")
    assert "ran out of memory" in record.error and "1.5 GiB" in record.error
    assert "allocated 20 GiB" not in record.error


# --- isolation ----------------------------------------------------------------


@pytest.fixture
def need_sandbox(monkeypatch):
    if not sandbox.available():
        pytest.skip("bubblewrap unavailable, so held-out data is not hidden: " + sandbox.unavailable_reason())
    monkeypatch.delenv(sandbox.NO_SANDBOX_ENV, raising=False)


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that records whether anyone connected."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                received.append(conn.recv(64) or b"<connected>")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join(timeout=2)
    server.close()


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_reading_held_out_responses_is_blocked(run_case, need_sandbox):
    record, _out = run_case("peek_raise")
    assert "FileNotFoundError in fit" in record.error
    assert "benchmark/demo/assembly.nc" in record.error
    assert "the sandbox failed" not in record.error
    assert record.provenance.sandboxed is None or record.provenance.sandboxed


def test_network_is_blocked(run_case, need_sandbox, listener):
    port, received = listener
    record, _ = run_case("net", port=port)
    assert "in fit" in record.error and "network reachable" not in record.error
    assert any(
        name in record.error
        for name in ("Network is unreachable", "Connection refused", "ConnectionRefusedError", "OSError")
    ), record.error
    time.sleep(0.3)
    assert received == []


def test_swallowed_peeks_see_nothing_and_the_run_is_scored(run_case, need_sandbox, listener, demo):
    from itbench.paths import benchmark_dir, data_home

    port, received = listener
    canary = data_home() / "canary-held-out.txt"
    canary.write_text("HELD-OUT")
    try:
        record, out = run_case("peek_swallow", port=port, expect_ok=True)
    finally:
        canary.unlink()
    seen = _report(out, "ITBENCH-PEEK")
    # the run was scored, and the record says it ran sandboxed
    assert record.scores.n_images == len(demo.stimulus_ids("val"))
    assert record.provenance.sandboxed is True
    # the demo's responses, the results and the data home were invisible
    demo_files = sorted(p for p in benchmark_dir().rglob("*") if p.is_file())
    assert demo_files, "nothing to hide? the demo benchmark files are missing"
    assert seen["benchmark_dir"] in ("absent", [])
    assert seen["via_proc1_root"] in ("absent", [], "error: PermissionError")
    assert seen["demo_assembly"].startswith("error: FileNotFound")
    assert seen["demo_assembly"] not in {_sha1(p) for p in demo_files}
    assert seen["results"] in ("absent", [])
    assert isinstance(seen["data_home"], list)
    assert all(p.startswith("cache/") for p in seen["data_home"]), seen["data_home"]
    assert "canary-held-out.txt" not in json.dumps(seen)
    assert seen["env_itbench_home"] is None and "ITBENCH_HOME" not in seen["env"]
    # no network, no shared /tmp, own PID namespace
    assert seen["network"].startswith("error:") and received == []
    assert seen["tmp_write"] == "ok"  # private tmpfs: checked gone by run_case
    assert len(seen["pids"]) <= 4
    # only the train split's responses were handed over
    n_train, n_val = len(demo.stimulus_ids("train")), len(demo.stimulus_ids("val"))
    k = len(demo.neuroid_ids)
    assert set(seen["workdir"]) <= WORKER_FILES | {"status.json", ".status.json.tmp"}
    assert seen["workdir"]["train_responses.npy"] == [n_train, k]
    assert seen["workdir"]["eval_images.npy"][0] == n_val
    assert [n_val, k] not in seen["workdir"].values()


def test_tampering_with_trusted_files_is_blocked(run_case, need_sandbox):
    from itbench.paths import cache_root, project_root

    package = Path(sandbox.__file__).resolve().parent
    results = project_root() / "leaderboard" / "results" / "demo" / "tampered.json"
    record, out = run_case("tamper")
    seen = _report(out, "ITBENCH-TAMPER")
    assert "RuntimeError in fit at model.py:" in record.error
    assert "tamper attempts done" in record.error
    assert seen["package"].startswith("error:") and not (package / "_tampered.py").exists()
    assert seen["own_folder"].startswith("error:")
    # refused, or (when the checkout itself lives under /tmp) swallowed by the sandbox's
    # private /tmp: either way nothing reaches the real results folder
    assert seen["results"] and not results.exists()
    # the runner's prediction cache and other submissions' states are out of reach: the
    # write fails, or lands in the sandbox's private /tmp (where the test's data home lives)
    assert seen["shared_cache"] and seen["other_submission"]
    assert not (cache_root() / "predictions" / "tampered.npy").exists()
    assert not (cache_root() / "submissions" / "other" / "tampered").exists()


# --- the unsandboxed fallback and Ctrl-C --------------------------------------


def test_unsandboxed_fallback_still_records_faults_and_warns(run_case, monkeypatch):
    monkeypatch.setenv(sandbox.NO_SANDBOX_ENV, "1")
    with pytest.warns(RuntimeWarning, match="submission is NOT sandboxed"):
        record, _ = run_case("crash_predict")
    assert "ValueError in predict" in record.error and "boom in predict" in record.error


def test_ctrl_c_during_a_run_records_it_and_leaves_nothing(demo, tmp_path, find_procs, sigint_handled):
    """SIGINT to a process inside score_submission: interrupted record, good one kept."""
    import os
    import signal
    import subprocess
    import sys

    sub = tmp_path / "subs" / "hang"
    shutil.copytree(FIXTURES / "hang", sub)
    results, scratch = tmp_path / "results", tmp_path / "runner-tmp"
    scratch.mkdir()
    good = record_path(results, "demo", "hang", "val")
    good_bytes = _plant_good_record(good, "hang")
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import signal\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored\n"
        "from pathlib import Path\n"
        "from itbench.harness.runner import score_submission\n"
        "try:\n"
        f"    score_submission(Path({str(sub)!r}), 'demo', split='val', device='cpu',\n"
        f"                     results_root=Path({str(results)!r}), use_cache=False, n_boot=20,\n"
        f"                     submissions_root=Path({str(sub.parent)!r}),\n"
        "                     log=lambda msg: None)\n"
        "except KeyboardInterrupt:\n"
        "    print('DRIVER-INTERRUPTED', flush=True)\n"
        "    raise\n"
    )
    repo = Path(sandbox.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "PYTHONPATH": str(repo),
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.Popen(
        [sys.executable, str(driver)], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    lines: list[str] = []
    started = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "HANG-STARTED" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not started.wait(timeout=240):  # a loaded 2-core machine needs minutes to get there
            proc.kill()
            pytest.fail("the hang never started:\n" + "".join(lines) + proc.stderr.read())
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=5)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert "DRIVER-INTERRUPTED" in "".join(lines)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    interrupted = read_record(failure_path(good))
    assert interrupted.status == "failed" and "interrupted" in interrupted.error
    assert good.read_bytes() == good_bytes
    assert list(scratch.iterdir()) == []
    deadline = time.monotonic() + 5
    while find_procs(GRANDCHILD_MARK) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert find_procs(GRANDCHILD_MARK) == []
