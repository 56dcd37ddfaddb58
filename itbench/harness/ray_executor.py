"""Scoring on a Ray cluster: one Ray task per run, the held-out responses staying on the driver.

The driver (this process) does everything the local path does except
running the child:

1. plans each run (``fixed_split.plan_run``): resolves device, size, params and
   the cache key; a run whose predictions are cached never becomes a task;
2. puts the worker inputs of the benchmark split (train images, train
   responses and labels, the images to predict: :class:`WorkerInputs`) into
   Ray's object store **once**, shared by every task, and each submission
   folder as a small tarball (used when the node does not have the same
   folder, checked by code hash);
3. submits one task per run, asking for ``num_gpus=1`` when the run uses a
   GPU and ``memory`` from ``[limits] memory_gb``, at most the operator's
   maximum (``--memory-gb``; ``harness/quotas.py``);
   inside, the task runs ``fixed_split.run_child``: the same sandboxed worker
   process, with the same limits, on the worker node;
4. receives raw predictions and the child's status, and validates, scores
   and writes the record exactly as the local path (``fixed_split.complete_run``).

Caches: the prediction cache is the driver's (read and written only here).
Fitted states and activation caches live in the submission's namespace for
the run's exposure (``runcore.Exposure``) in the cache of the node that ran the task (``$ITBENCH_CACHE`` or
``$ITBENCH_HOME/cache`` in the environment of ``ray start``): point that at
a shared file system and every node reuses every fitted state; otherwise a
run landing on another node refits (same result, more time).

Faults: a task whose node or Ray worker dies is retried ``max_retries``
times by Ray, then recorded ``failed`` with the cause; a crashing, hanging
or out-of-memory submission is caught by the sandbox on the node and
recorded ``failed`` as locally (never retried: it would fail again);
Ctrl-C cancels the tasks, records the runs that had started as
interrupted, and leaves every earlier record as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import ray

from itbench.errors import ItbenchError, SubmissionError, WeightsUnavailable
from itbench.harness import quotas
from itbench.harness.executor_base import Log, OnRecord, stderr_log
from itbench.harness.fixed_split import PlannedRun, complete_run, plan_run, run_child
from itbench.harness.inputs import WorkerInputs
from itbench.harness.record import SubmissionRecord
from itbench.harness.runcore import Exposure, RunOptions, RunState, recording
from itbench.harness.runner import check_allowed, check_sandbox, record_path_of, store_record
from itbench.harness.sandbox import SandboxUnavailable
from itbench.harness.submission import Submission, find_submission, load_submission
from itbench.harness.sweep import LayerPredictions, sweep_predictions
from itbench.harness.untrusted import ChildStatus
from itbench.locks import locked
from itbench.scoring.benchmark import Benchmark, load_benchmark

DEFAULT_MAX_RETRIES = 2
FORWARDED_ENV = ("ITBENCH_RANDOM_WEIGHTS", "ITBENCH_NO_SANDBOX")
"""Driver settings a worker must share to produce the same run (the rest is the node's own)."""
_CANCEL_GRACE_S = 10.0
HEAD_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node


@dataclass
class TaskResult:
    """What a task sends back: raw predictions and status, or the submission's fault. Never responses."""

    pred: Any
    status: ChildStatus | None
    provenance: dict[str, Any]
    error: Exception | None
    node: str


@dataclass
class _Run:
    """One run on the driver: its record as it is built, and its task once submitted."""

    index: int
    path: Path
    state: RunState
    plan: PlannedRun | None = None
    ref: Any = None


# --------------------------------------------------------------------------- worker side


class _ProgressBoard:
    """Where tasks say that they started, and on which node: the driver's 'running' count and the
    number of attempts per run (a retried task starts again)."""

    def __init__(self) -> None:
        self.starts: dict[str, list[str]] = {}

    def started(self, key: str, node: str) -> None:
        self.starts.setdefault(key, []).append(node)

    def snapshot(self) -> dict[str, list[str]]:
        return self.starts


ProgressBoard: Any = ray.remote(num_cpus=0)(_ProgressBoard)


def _task(
    sub: Submission,
    code_hash: str,
    sub_tar: bytes,
    inputs: WorkerInputs,
    opts: RunOptions,
    job: dict[str, Any],
    fit_key: str,
    exposure: Exposure,
    env: dict[str, str],
    board: Any,
) -> TaskResult:
    """One run on a worker node: the runner's child part, in the node's sandbox, under its limits."""
    node = ray.get_runtime_context().get_node_id()
    if board is not None:  # waited for, so the driver's count of attempts is never behind
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get(board.started.remote(sub.id, node), timeout=60)
    provenance: dict[str, Any] = {"executor": "ray", "node": socket.gethostname(), "ray_node": node[:12]}
    with _environment(env), tempfile.TemporaryDirectory(prefix="itbench-sub-") as scratch:
        try:
            check_sandbox(opts)  # a node without bubblewrap refuses, as a single machine does
            here = _submission_here(sub, code_hash, sub_tar, Path(scratch))
            job = {**job, "submission_path": str(here.path)}
            pred, status = run_child(here, inputs, opts, job, fit_key, exposure, provenance, log=stderr_log)
            return TaskResult(pred, status, provenance, None, node)
        except SandboxUnavailable as err:
            refused = SubmissionError(f"node {socket.gethostname()} cannot run submissions: {err}")
            return TaskResult(None, None, provenance, refused, node)
        except (SubmissionError, WeightsUnavailable) as err:
            return TaskResult(None, None, provenance, err, node)


_remote_task = ray.remote(_task)


def _sweep_task(
    model_name: str, inputs: WorkerInputs, split: str, device: str, compute: dict[str, Any]
) -> LayerPredictions:
    """A layer sweep's compute part on a worker node (trusted torchvision/timm code, as locally)."""
    return sweep_predictions(model_name, inputs, split, device=device, log=stderr_log, **compute)


_remote_sweep = ray.remote(_sweep_task)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """The driver's forwarded settings for the duration of one task (Ray reuses worker processes)."""
    old = {k: os.environ.get(k) for k in FORWARDED_ENV}
    for k in FORWARDED_ENV:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _submission_here(sub: Submission, code_hash: str, sub_tar: bytes, scratch: Path) -> Submission:
    """The submission folder on this node: the driver's path when it holds the same code, else the
    shipped copy unpacked into ``scratch`` (same id and code hash, so the same cache keys)."""
    if sub.path.is_dir() and sub.code_hash() == code_hash:
        return sub
    target = scratch / sub.id
    try:
        with tarfile.open(fileobj=io.BytesIO(sub_tar)) as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise SubmissionError(
            f"submission '{sub.id}': its folder cannot be unpacked on this node: {err}"
        ) from None
    here = dataclasses.replace(sub, path=target)
    if here.code_hash() != code_hash:
        raise SubmissionError(f"submission '{sub.id}': the copy shipped to this node does not match its hash")
    return here


def pack_submission(folder: Path) -> bytes:
    """The submission folder as an uncompressed tarball (what a node without it unpacks).

    Regular files and links as they are (never followed), like ``code_hash``,
    so an unpacked copy hashes the same; anything else is left out.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for root, dirs, files in os.walk(folder, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files) + [d for d in dirs if Path(root, d).is_symlink()]:
                path = Path(root, name)
                if path.suffix != ".pyc" and (path.is_symlink() or path.is_file()):
                    tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------- driver side

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While held, Ray keeps a loopback node address as given (the tests' clusters start in it).

    Ray turns a loopback node address into the machine's external one unless it
    thinks multi-node clusters are off (its Windows/macOS default), so that
    switch is held off here.
    """
    from ray._private import ray_constants

    with mock.patch.object(ray_constants, "ENABLE_RAY_CLUSTER", False):
        yield


def start_private_ray(options: dict[str, Any]) -> None:
    """A single-node Ray for this process alone, reachable from this machine only.

    Every Ray server (GCS, raylet, object manager, workers, agents) binds the
    node address, so the node address is loopback; there is no dashboard (its
    job API would run code for anyone who reaches it). Fails closed: a node
    that came up on another address is shut down and refused.
    """
    with loopback_only():
        ray.init(include_dashboard=False, _node_ip_address=LOOPBACK, **options)
    where = {ray.util.get_node_ip_address(), ray.get_runtime_context().gcs_address.rpartition(":")[0]}
    if where != {LOOPBACK}:
        ray.shutdown()
        raise ItbenchError(
            f"the private Ray came up on {', '.join(sorted(where))}, not on loopback only; refused",
            "run a cluster on a trusted network and pass --address (README: Scaling out on Ray)",
        )


class RayExecutor:
    """One Ray task per run; planning, validation, scoring and records stay in this process."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        progress: bool | None = None,
        resources: dict[str, float] | None = None,
    ) -> None:
        self.address = address
        self.max_retries = max_retries
        self.resources = dict(resources or {})  # custom Ray resources every task asks for (node pools)
        self.progress = progress  # None: a bar on a terminal, one line per stage otherwise
        self.board: Any = None

    # -- connection

    @contextlib.contextmanager
    def connected(self) -> Iterator[None]:
        """Join the cluster at ``address`` (``auto``: the one ``ray start`` made here; None:
        ``$RAY_ADDRESS``, else a private single-node Ray); leave it afterwards if we joined it."""
        if ray.is_initialized():
            yield
            return
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **options)
        else:
            start_private_ray(options)
        try:
            yield
        finally:
            ray.shutdown()

    # -- layer sweeps

    def sweep(
        self,
        model_name: str,
        bench: Benchmark,
        split: str,
        device: str,
        compute: dict[str, Any],
        log: Log = stderr_log,
    ) -> tuple[str, LayerPredictions]:
        """A layer sweep's compute part as one Ray task (GPU when asked for or available);
        returns the device used and the per-layer predictions, which the caller scores."""
        with self.connected():
            gpus = float(ray.cluster_resources().get("GPU", 0))
            device = device if device != "auto" else ("cuda" if gpus >= 1 else "cpu")
            log(f"ray: sweep of {model_name} on {_describe_cluster()}, device {device}")
            inputs_ref = ray.put(WorkerInputs.of(bench, split))
            ref = _remote_sweep.options(
                num_cpus=1,
                num_gpus=1 if device.startswith("cuda") else 0,
                max_retries=self.max_retries,
                name=f"itbench:sweep:{model_name}:{bench.id}:{split}",
                runtime_env={"env_vars": _thread_env()},
            ).remote(model_name, inputs_ref, split, device, compute)
            try:
                return device, ray.get(ref)
            except KeyboardInterrupt:
                ray.cancel(ref, force=True)
                raise

    # -- scoring

    def score(
        self,
        folders: Sequence[str | Path],
        benchmark_id: str,
        opts: RunOptions,
        log: Log = stderr_log,
        on_record: OnRecord | None = None,
    ) -> list[SubmissionRecord]:
        check_allowed(opts)  # the sandbox is checked on each node, where the children run
        opts = quotas.pinned(opts)  # the driver's operator maxima travel with each run
        bench = load_benchmark(benchmark_id)
        bench.stimulus_ids(opts.split)  # validates the split name early, as locally
        sub_paths = [find_submission(f) for f in folders]  # a typo is not a submission fault: no record
        runs = [
            _Run(i, record_path_of(p, bench, opts), RunState.start(p, bench, opts))
            for i, p in enumerate(sub_paths)
        ]
        records: dict[int, SubmissionRecord] = {}

        def done(run: _Run) -> None:
            with locked(run.path):
                record = store_record(run.state.finish(), run.path, opts)
            records[run.index] = record
            if on_record is not None:
                on_record(record)

        with self.connected():
            gpus = float(ray.cluster_resources().get("GPU", 0))
            todo = []
            for run, sub_path in zip(runs, sub_paths, strict=True):
                with recording(run.state, run.path):
                    sub = load_submission(sub_path, opts.submissions_root)
                    run.plan = plan_run(sub, bench, opts, run.state, _quiet, device=_device(opts, sub, gpus))
                    if run.plan.job is None:  # cached predictions: nothing to run
                        complete_run(run.plan, run.plan.cached, None, bench, opts, run.state, _quiet)
                if run.state.ended or run.plan is None or run.plan.job is None:
                    done(run)
                else:
                    todo.append(run)
            log(
                f"ray: {len(runs)} runs on {bench.id}/{opts.split}: {len(runs) - len(todo)} from records "
                f"or caches, {len(todo)} to run on {_describe_cluster()}"
            )
            if todo:
                self._run_tasks(todo, bench, opts, log, done)
        return [records[i] for i in range(len(runs))]

    def _run_tasks(self, todo: list[_Run], bench: Benchmark, opts: RunOptions, log: Log, done: Any) -> None:
        """Submit one task per run, then complete each run on the driver as its task returns."""
        started = time.perf_counter()
        inputs = WorkerInputs.of(bench, opts.split)
        inputs_ref = ray.put(inputs)  # once per benchmark split, shared by every task
        log(
            f"ray: worker inputs in the object store: {inputs.nbytes / 2**20:.0f} MiB (no held-out responses)"
        )
        del inputs
        # on the head node (it holds the cluster's state anyway): a worker node's death must not
        # take the count of starts and attempts with it
        board = ProgressBoard.options(resources={HEAD_RESOURCE: 0.001}).remote()
        self.board = board  # tests watch it to kill a node or press Ctrl-C mid-run
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        pending: dict[Any, _Run] = {}
        for run in todo:
            plan = run.plan
            assert plan is not None and plan.job is not None
            options: dict[str, Any] = {
                "num_cpus": 1,
                "max_retries": self.max_retries,
                "retry_exceptions": False,  # a submission's fault would fail again: not retried
                "name": f"itbench:{plan.sub.id}:{bench.id}:{opts.split}",
            }
            if self.resources:
                options["resources"] = self.resources
            if str(plan.job["device"]).startswith("cuda"):
                options["num_gpus"] = 1
            # what the run may use (a request above the maximum is refused on the node, by name)
            memory_gb = min((m for m in (opts.memory_gb, plan.sub.memory_gb) if m), default=None)
            if memory_gb:
                options["memory"] = int(memory_gb * 2**30)
            run.ref = _remote_task.options(**options).remote(
                plan.sub,
                plan.sub.code_hash(),
                pack_submission(plan.sub.path),
                inputs_ref,
                opts,
                plan.job,
                plan.fit_key,
                plan.exposure,
                env,
                board,
            )
            pending[run.ref] = run
        display = _Display(len(todo), log, self.progress)
        watch = _BoardWatch(board)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    run = pending.pop(ref)
                    self._complete(run, ref, watch.latest(wait_s=60.0), bench, opts)
                    done(run)
                    display.finished(run.state.record)
                starts = watch.latest()
                display.update(sum(1 for r in pending.values() if r.plan and r.plan.sub.id in starts))
        except KeyboardInterrupt:
            self._cancel(pending, watch.latest(wait_s=10.0), done)
            raise
        finally:
            display.close(time.perf_counter() - started)
            with contextlib.suppress(ray.exceptions.RayError):
                ray.kill(board)

    def _complete(
        self, run: _Run, ref: Any, starts: dict[str, list[str]], bench: Benchmark, opts: RunOptions
    ) -> None:
        """The driver part after a task: the same validation, scoring and fault handling as locally."""
        plan = run.plan
        assert plan is not None
        attempts = len(starts.get(plan.sub.id, [])) or None
        with recording(run.state, run.path):
            try:
                result: TaskResult = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                raise KeyboardInterrupt from None
            except ray.exceptions.RayTaskError as err:  # itbench's own code failed on the node
                run.state.provenance.update(executor="ray", attempts=attempts)
                raise SubmissionError(
                    f"submission '{plan.sub.id}': the Ray task failed: {_cause(err)}"
                ) from None
            except ray.exceptions.RayError as err:  # node or worker died, out of memory, object lost
                run.state.provenance.update(executor="ray", attempts=attempts)
                raise SubmissionError(
                    f"submission '{plan.sub.id}': the Ray task was lost after {self.max_retries + 1} "
                    f"attempt(s) (max_retries={self.max_retries}): {_cause(err)}"
                ) from None
            run.state.provenance.update(result.provenance, attempts=attempts)
            if result.error is not None:
                raise result.error
            complete_run(plan, result.pred, result.status, bench, opts, run.state, _quiet)

    def _cancel(self, pending: dict[Any, _Run], starts: dict[str, list[str]], done: Any) -> None:
        """Ctrl-C: cancel every task (their sandboxes kill the children), record the started runs as
        interrupted, leave every other record as it was."""
        refs = list(pending)
        for ref in refs:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.cancel(ref)
        _, left = ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_GRACE_S)
        for ref in left:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.cancel(ref, force=True)
        for run in pending.values():
            if run.plan is not None and run.plan.sub.id in starts:
                run.state.record.mark("failed", "interrupted by the user (Ctrl-C)")
                done(run)


class _BoardWatch:
    """The progress board's latest snapshot without blocking the driver's loop on the actor."""

    def __init__(self, board: Any) -> None:
        self.board = board
        self.starts: dict[str, list[str]] = {}
        self.ref: Any = board.snapshot.remote()

    def latest(self, wait_s: float = 0.0) -> dict[str, list[str]]:
        """Starts per run id; ``wait_s`` > 0 waits for a fresh snapshot (to count a run's attempts)."""
        if wait_s:
            self.ref = self.board.snapshot.remote()
        ready, _ = ray.wait([self.ref], timeout=wait_s)
        if ready:
            with contextlib.suppress(ray.exceptions.RayError):
                self.starts = ray.get(self.ref)
            self.ref = self.board.snapshot.remote()
        return self.starts


def _thread_env() -> dict[str, str]:
    """This process's thread counts (torch's and BLAS's), for the Ray worker that runs a sweep.

    Ray starts a worker for a one-CPU task with one OpenMP thread; a sweep
    runs in that worker itself (not in a child with its own environment, as
    a submission does), so it gets the counts a local sweep would use: the
    float sums happen in the same order and the scores are the same.
    """
    import torch
    from threadpoolctl import threadpool_info

    blas = max((p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"), default=1)
    torch_threads = torch.get_num_threads()
    return {
        "OMP_NUM_THREADS": str(torch_threads),
        "OPENBLAS_NUM_THREADS": str(blas),
        "MKL_NUM_THREADS": str(blas),
    }


def _device(opts: RunOptions, sub: Submission, cluster_gpus: float) -> str:
    """Where a run goes: ``auto`` gives a GPU to submissions that declare ``[needs] gpu`` when the
    cluster has one, and the CPU to the rest; an explicit ``--device`` applies to every run."""
    if opts.device != "auto":
        return opts.device
    return "cuda" if sub.needs_gpu and cluster_gpus >= 1 else "cpu"


def _cause(err: Exception) -> str:
    """One line naming why Ray gave up on a task (node died, worker crashed, out of memory ...)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def _describe_cluster() -> str:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    return f"{len(nodes)} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU"


def _quiet(message: str) -> None:
    """The runner's step-by-step messages are for one run at a time; the progress display replaces them."""


class _Display:
    """Runs done / running / failed with an ETA: a tqdm bar on a terminal, else one line per run."""

    def __init__(self, total: int, log: Log, progress: bool | None) -> None:
        self.total, self.log = total, log
        self.n_done = self.n_failed = self.running = 0
        tty = progress if progress is not None else sys.stderr.isatty()
        self.bar: Any = None
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", desc="ray", file=sys.stderr, dynamic_ncols=True)

    def update(self, running: int) -> None:
        if self.bar is not None and running != self.running:
            self.running = running
            self.bar.set_postfix_str(f"running {running}, failed {self.n_failed}")

    def finished(self, record: SubmissionRecord) -> None:
        self.n_done += 1
        self.n_failed += record.status == "failed"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"running {self.running}, failed {self.n_failed}")
        else:
            detail = f": {record.error.splitlines()[0][:200]}" if record.error else ""
            self.log(f"ray: [{self.n_done}/{self.total}] {record.submission.id} {record.status}{detail}")

    def close(self, wall_s: float) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log(f"ray: {self.n_done}/{self.total} runs done, {self.n_failed} failed, in {wall_s:.1f} s")
