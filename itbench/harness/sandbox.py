"""Isolation of submission processes: a bubblewrap sandbox plus resource limits.

A submission is untrusted code that must not see the held-out responses it is
scored on. The runner therefore executes each submission in a child process
(``python -m itbench.harness.worker <workdir>``) through :func:`run_isolated`, which

- wraps the command in bubblewrap (``bwrap``) when it is available: the whole
  file system read-only, the data home / demo responses / results / the user's
  home replaced by empty tmpfs mounts, a private ``/tmp``, only the workdir and
  an explicit cache dir writable, no network (own network namespace), own PID,
  IPC and UTS namespaces, so nothing survives the run;
- enforces a wall-clock timeout and a memory limit (RSS of the process tree,
  polled with psutil, so it also works with CUDA; ``RLIMIT_AS`` is an option
  for CPU-only runs), killing the whole process tree (SIGTERM, then SIGKILL);
- forwards the child's output as it comes (tqdm bars keep working) and keeps a
  tail of it for error messages;
- kills the child on Ctrl-C in the parent and re-raises the interrupt.

Without bubblewrap (or with ``ITBENCH_NO_SANDBOX=1``) the child runs with the
same limits but *unsandboxed*: a loud warning says so and the result carries
``sandboxed=False`` so the runner can record it in the provenance.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import psutil

from itbench.errors import ItbenchError

log = logging.getLogger(__name__)

NO_SANDBOX_ENV = "ITBENCH_NO_SANDBOX"
"""Set to ``1`` to run submissions without bubblewrap (recorded as unsandboxed)."""

GIB = 2**30
KilledReason = Literal["timeout", "memory", "signal", "interrupted"]

# Paths hidden from every sandboxed child, whatever the caller passes: the
# user's home (credentials, the default data home) and runtime sockets.
_ALWAYS_HIDDEN = ("/home", "/root", "/run")
_TAIL_CHARS = 8000
_HIDDEN_TMPFS_BYTES = 1 << 20  # holds only the mount points of binds inside it


class SandboxUnavailable(ItbenchError):
    """A sandbox was required but bubblewrap cannot run on this machine."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one isolated run.

    ``memory_gb`` is in GiB of resident memory summed over the process tree;
    ``rlimit_as`` additionally caps each process's address space at that size
    (a hard cap that catches fast allocations, but it breaks CUDA, so it is off
    by default). ``grace_s`` is how long a killed child may clean up after
    SIGTERM before SIGKILL.
    """

    timeout_s: float | None
    memory_gb: float | None = None
    cpu_threads: int | None = None
    rlimit_as: bool = False
    grace_s: float = 3.0
    poll_s: float = 0.1


@dataclass
class IsolatedResult:
    """What happened to an isolated child.

    ``returncode`` follows ``subprocess``: negative means killed by that signal
    (also when bubblewrap reports it as ``128 + signal``). ``killed_reason`` is
    why it ended abnormally: ``timeout`` / ``memory`` (we killed it),
    ``signal`` (it died of a signal, e.g. a segfault), ``interrupted`` (Ctrl-C
    in the parent), or ``None`` for a normal exit with any status.
    """

    returncode: int | None
    timed_out: bool
    killed_reason: KilledReason | None
    peak_rss_gb: float
    stdout_tail: str
    stderr_tail: str
    sandboxed: bool
    wall_s: float
    argv: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True for a normal exit with status 0."""
        return self.returncode == 0 and self.killed_reason is None

    def describe(self) -> str:
        """One line for an error message: why the child ended."""
        if self.killed_reason == "timeout":
            return f"timed out after {self.wall_s:.1f} s and was killed"
        if self.killed_reason == "memory":
            return f"exceeded the memory limit (peak {self.peak_rss_gb:.2f} GiB) and was killed"
        if self.killed_reason == "interrupted":
            return "was interrupted (Ctrl-C) and killed"
        if self.killed_reason == "signal" and self.returncode is not None:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"died of {name}"
        return f"exited with status {self.returncode}"


# ---------------------------------------------------------------------------
# availability


def bwrap_path() -> str | None:
    """The bubblewrap executable, or None when it is not installed."""
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def _probe_bwrap(exe: str) -> tuple[bool, str]:
    """Run a trivial sandbox once; containers without user namespaces fail here."""
    cmd = [
        exe,
        "--ro-bind",
        "/",
        "/",
        "--unshare-net",
        "--unshare-pid",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "true",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"bwrap probe failed: {err}"
    if proc.returncode != 0:
        return False, f"bwrap probe failed: {proc.stderr.strip() or proc.returncode}"
    return True, ""


@functools.cache
def _bwrap_has_option(exe: str, option: str) -> bool:
    """Whether this bwrap knows ``option`` (``--size`` came with bubblewrap 0.7)."""
    try:
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in out.stdout + out.stderr


def available() -> bool:
    """Whether bubblewrap is installed and can create namespaces here (cached)."""
    exe = bwrap_path()
    return exe is not None and _probe_bwrap(exe)[0]


def unavailable_reason() -> str:
    """Why submissions would run unsandboxed ('' when they would not)."""
    if os.environ.get(NO_SANDBOX_ENV, "") not in ("", "0"):
        return f"{NO_SANDBOX_ENV} is set"
    exe = bwrap_path()
    if exe is None:
        return "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)"
    return _probe_bwrap(exe)[1]


# ---------------------------------------------------------------------------
# the bwrap command line


def _norm(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Absolute, symlink-free paths, deduplicated: bwrap mounts the real targets."""
    out: dict[Path, None] = {}
    for p in paths:
        out[Path(p).expanduser().resolve()] = None
    return list(out)


def _gpu_devices() -> list[Path]:
    """NVIDIA device nodes: ``--dev /dev`` would otherwise hide the GPU."""
    dev = Path("/dev")
    found = sorted(dev.glob("nvidia*"))
    return [p for p in found if p.exists()]


def sandbox_argv(
    argv: Sequence[str],
    *,
    ro_paths: Iterable[str | os.PathLike[str]] = (),
    rw_paths: Iterable[str | os.PathLike[str]] = (),
    hidden_paths: Iterable[str | os.PathLike[str]] = (),
    network: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    gpu: bool | None = None,
    tmp_bytes: int | None = None,
) -> list[str]:
    """The bubblewrap command that runs ``argv`` with the given view of the disk.

    Everything is visible read-only; each hidden path (plus the user's home,
    ``/run`` and ``/tmp``) is covered by an empty tmpfs (a hidden *file* by
    ``/dev/null``); ``ro_paths`` and ``rw_paths`` are bound back in. Mounts are
    applied shallowest first, so a deeper path wins: a cache dir under the
    hidden data home stays writable, and a hidden ``benchmark/`` inside a
    read-only repo stays hidden. ``gpu`` (default: whenever the host has them)
    passes the NVIDIA device nodes through, which ``--dev /dev`` would drop.
    Hidden folders are read-only; ``tmp_bytes`` caps the private ``/tmp`` and
    ``/dev/shm`` (tmpfs pages are RAM that the RSS limit does not see).
    """
    exe = bwrap_path()
    if exe is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed",
            hint="apt-get install bubblewrap, or set ITBENCH_NO_SANDBOX=1",
        )
    hidden = _norm([*_ALWAYS_HIDDEN, Path.home(), "/tmp", *hidden_paths])
    ro, rw = _norm(ro_paths), _norm(rw_paths)
    rw_set = set(rw)
    ro = [p for p in ro if p not in rw_set]
    clash = set(hidden) & (set(ro) | rw_set)
    clash -= {Path(p).resolve() for p in (*_ALWAYS_HIDDEN, Path.home(), "/tmp")}
    if clash:
        raise ValueError(f"paths both hidden and bound: {sorted(map(str, clash))}")

    mounts: list[tuple[int, int, Path]] = []  # (depth, priority, path)
    mounts += [(len(p.parts), 0, p) for p in hidden if p not in rw_set and p not in set(ro)]
    mounts += [(len(p.parts), 1, p) for p in ro]
    mounts += [(len(p.parts), 2, p) for p in rw]
    mounts.sort(key=lambda m: (m[0], m[1], str(m[2])))

    def size(n_bytes: int | None) -> list[str]:
        return ["--size", str(n_bytes)] if n_bytes and _bwrap_has_option(exe, "--size") else []

    cmd = [
        exe,
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        *size(tmp_bytes),
        "--tmpfs",
        "/dev/shm",
    ]
    if gpu or gpu is None:
        for dev in _gpu_devices():
            cmd += ["--dev-bind", str(dev), str(dev)]
    emitted: list[tuple[Path, int]] = []
    read_only_tmpfs: list[Path] = []
    for _, kind, path in mounts:
        parent_kind = next((k for p, k in reversed(emitted) if path.is_relative_to(p)), 1)
        if kind == 0:  # hide: an empty tmpfs over a folder, /dev/null over a file
            if parent_kind == 0 and path != Path("/tmp"):
                continue  # already inside a hidden folder
            if path == Path("/tmp"):
                cmd += [*size(tmp_bytes), "--tmpfs", str(path)]
            elif path.is_dir():
                cmd += [*size(_HIDDEN_TMPFS_BYTES), "--tmpfs", str(path)]
                read_only_tmpfs.append(path)
            elif path.exists():
                cmd += ["--ro-bind", "/dev/null", str(path)]
            else:
                continue
        elif kind == 1:
            if not path.exists():
                continue
            cmd += ["--ro-bind", str(path), str(path)]
        else:
            cmd += ["--bind", str(path), str(path)]
        emitted.append((path, kind))
    for path in read_only_tmpfs:  # after the binds inside them created their mount points
        cmd += ["--remount-ro", str(path)]
    if not network:
        cmd.append("--unshare-net")
    cmd += [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
    ]
    if cwd is not None:
        cmd += ["--chdir", str(Path(cwd).resolve())]
    cmd += ["--", *argv]
    return cmd


sandbox_command = sandbox_argv  # the name used in docs/internals.md


# ---------------------------------------------------------------------------
# environment


def _itbench_import_root() -> Path:
    """The directory that makes ``import itbench`` work (repo root or site-packages)."""
    return Path(__file__).resolve().parents[2]


def python_paths() -> list[Path]:
    """What the child needs read-only to run Python with our packages."""
    import site

    paths = {
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(sys.exec_prefix),
        Path(__file__).resolve().parents[1],
    }
    for p in site.getsitepackages():
        paths.add(Path(p))
    return sorted(p for p in paths if p.exists())


def child_env(
    *,
    home: str | os.PathLike[str],
    limits: Limits | None = None,
    extra: Mapping[str, str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """A minimal environment: no secrets, no ``ITBENCH_HOME``, threads from limits.

    ``weights_dir`` (read-only pretrained weights) becomes ``TORCH_HOME`` and
    ``HF_HOME`` so torchvision/timm find cached weights without the network.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": str(_itbench_import_root()),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLCONFIGDIR": str(Path(home) / ".mplconfig"),
    }
    for key in ("CUDA_VISIBLE_DEVICES", "TERM", "COLUMNS", "LC_ALL"):
        if key in os.environ:
            env[key] = os.environ[key]
    if limits is not None and limits.cpu_threads:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[key] = str(limits.cpu_threads)
    if weights_dir is not None:
        env["TORCH_HOME"] = str(weights_dir)
        env["HF_HOME"] = str(weights_dir)
        env["HF_HUB_OFFLINE"] = "1"
    env.update(extra or {})
    env.pop("ITBENCH_HOME", None)  # the data home is never the child's business
    return env


# ---------------------------------------------------------------------------
# running


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved now: dlopen after fork is not async-signal-safe."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    """Ask the kernel to SIGKILL the child if the parent dies (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _preexec(limits: Limits, sandboxed: bool) -> Callable[[], None]:
    """Runs in the forked child before exec: address-space cap, parent-death signal."""

    def fn() -> None:
        if not sandboxed:  # bwrap has --die-with-parent
            _set_pdeathsig()
        if limits.rlimit_as and limits.memory_gb:
            cap = int(limits.memory_gb * GIB)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return fn


class _Pump(threading.Thread):
    """Copies a child's pipe to our stream as it arrives, keeping a tail.

    Reads raw chunks, not lines, so tqdm's carriage-return updates show live.
    """

    def __init__(self, pipe: IO[bytes], sink: IO[str] | None):
        super().__init__(daemon=True)
        self.pipe, self.sink = pipe, sink
        self.tail: deque[str] = deque()
        self.size = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def run(self) -> None:
        fd = self.pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self._add(self.decoder.decode(chunk))
        self._add(self.decoder.decode(b"", final=True))

    def _add(self, text: str) -> None:
        if not text:
            return
        if self.sink is not None:
            try:
                self.sink.write(text)
                self.sink.flush()
            except (OSError, ValueError):
                self.sink = None
        self.tail.append(text)
        self.size += len(text)
        while self.size - len(self.tail[0]) >= _TAIL_CHARS and len(self.tail) > 1:
            self.size -= len(self.tail.popleft())

    def text(self) -> str:
        return "".join(self.tail)[-_TAIL_CHARS:]


class _Tree:
    """The child's process tree, remembered across polls so we can kill it all.

    The process group catches ordinary descendants; remembering every pid seen
    (with its start time, against pid reuse) also catches ones that called
    setsid. In the sandbox the PID namespace makes this airtight anyway.
    """

    def __init__(self, pid: int):
        self.root = pid
        self.pgid = pid  # start_new_session=True makes the child a group leader
        self.seen: dict[int, float] = {}
        with contextlib.suppress(psutil.Error):
            self.seen[pid] = psutil.Process(pid).create_time()

    def members(self) -> list[psutil.Process]:
        """Live processes of the tree, refreshing the remembered set."""
        procs: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.root)
            for p in [root, *root.children(recursive=True)]:
                procs[p.pid] = p
        except psutil.Error:
            pass
        for pid, created in list(self.seen.items()):
            if pid in procs:
                continue
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:
                    procs[pid] = p
                    for c in p.children(recursive=True):
                        procs[c.pid] = c
            except psutil.Error:
                self.seen.pop(pid, None)
        for pid, p in procs.items():
            if pid not in self.seen:
                with contextlib.suppress(psutil.Error):
                    self.seen[pid] = p.create_time()
        return [p for p in procs.values() if _alive(p)]

    def rss_bytes(self) -> int:
        total = 0
        for p in self.members():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for p in self.members():
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap(proc: subprocess.Popen, timeout: float) -> tuple[int | None, float]:
    """Wait for the direct child; returns (wait status, its ru_maxrss in bytes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return proc.returncode, 0.0
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss * 1024.0
        if time.monotonic() >= deadline:
            return None, 0.0
        time.sleep(0.02)


def _normalise_rc(rc: int | None, sandboxed: bool) -> int | None:
    """bwrap reports a child killed by signal N as 128+N; make it -N like subprocess."""
    if sandboxed and rc is not None and 128 < rc <= 128 + 64:
        return -(rc - 128)
    return rc


def run_isolated(
    argv: Sequence[str],
    *,
    limits: Limits,
    cwd: str | os.PathLike[str] | None = None,
    ro_paths: Iterable[str | os.PathLike[str]] = (),
    rw_paths: Iterable[str | os.PathLike[str]] = (),
    hidden_paths: Iterable[str | os.PathLike[str]] = (),
    env: Mapping[str, str] | None = None,
    stream_output: bool = True,
    network: bool = False,
    gpu: bool | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    require_sandbox: bool = False,
) -> IsolatedResult:
    """Run ``argv`` in the sandbox (if available) under ``limits``; never leaves strays.

    ``cwd`` is the workdir: always writable, the child's HOME and working
    directory (default: the first of ``rw_paths``). ``env`` adds variables to
    the minimal environment of :func:`child_env`. The memory limit applies to
    the summed RSS of the process tree (pages shared between forked workers
    count once per process, so it errs on the strict side). Submission faults
    (crash, hang, memory) are reported in the result, never raised; a
    KeyboardInterrupt kills the child and is re-raised with the result
    attached as ``err.isolated_result``.
    """
    rw_list = _norm(rw_paths)
    if cwd is None:
        if not rw_list:
            raise ValueError("run_isolated needs a workdir: pass cwd= or at least one rw path")
        cwd = rw_list[0]
    cwd = Path(cwd).resolve()
    rw_list = _norm([cwd, *rw_list])
    for p in rw_list:
        p.mkdir(parents=True, exist_ok=True)
    reason = unavailable_reason()
    sandboxed = not reason
    if not sandboxed:
        if require_sandbox:
            raise SandboxUnavailable(
                f"cannot sandbox the submission: {reason}",
                hint="install bubblewrap (apt-get install bubblewrap)",
            )
        msg = (
            f"submission is NOT sandboxed: {reason}; it can read every file this user "
            "can (including held-out responses) and use the network"
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
        cmd = list(argv)
    else:
        weights = [weights_dir] if weights_dir is not None else []
        cmd = sandbox_argv(
            argv,
            ro_paths=[*python_paths(), *ro_paths, *weights],
            rw_paths=rw_list,
            hidden_paths=hidden_paths,
            network=network,
            cwd=cwd,
            gpu=gpu,
            tmp_bytes=int(limits.memory_gb * GIB) if limits.memory_gb else None,
        )
    child_environ = child_env(home=cwd, limits=limits, extra=env, weights_dir=weights_dir)

    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=child_environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_preexec(limits, sandboxed),
    )
    assert proc.stdout is not None and proc.stderr is not None  # both are PIPEs
    tree = _Tree(proc.pid)
    pumps = [
        _Pump(proc.stdout, sys.stdout if stream_output else None),
        _Pump(proc.stderr, sys.stderr if stream_output else None),
    ]
    for pump in pumps:
        pump.start()

    killed: KilledReason | None = None
    peak = 0
    rc: int | None = None
    maxrss = 0.0
    interrupt: BaseException | None = None
    try:
        while True:
            rc, maxrss = _reap(proc, 0)
            if rc is not None:
                break
            peak = max(peak, tree.rss_bytes())
            if limits.memory_gb is not None and peak > limits.memory_gb * GIB:
                killed = "memory"
                break
            if limits.timeout_s is not None and time.monotonic() - start > limits.timeout_s:
                killed = "timeout"
                break
            time.sleep(limits.poll_s)
    except BaseException as err:  # KeyboardInterrupt, SystemExit: clean up, then re-raise
        killed, interrupt = "interrupted", err
    finally:
        rc, maxrss = _terminate(proc, tree, limits.grace_s, rc, maxrss)
        for pump in pumps:
            pump.join(timeout=2.0)
        for pipe in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()

    rc = _normalise_rc(rc, sandboxed)
    if killed is None and rc is not None and rc < 0:
        killed = "signal"
    stderr_tail = pumps[1].text()
    if killed is None and rc and limits.rlimit_as and "MemoryError" in stderr_tail:
        killed = "memory"
    result = IsolatedResult(
        returncode=rc,
        timed_out=killed == "timeout",
        killed_reason=killed,
        peak_rss_gb=max(peak, maxrss) / GIB,
        stdout_tail=pumps[0].text(),
        stderr_tail=stderr_tail,
        sandboxed=sandboxed,
        wall_s=time.monotonic() - start,
        argv=cmd,
    )
    if interrupt is not None:
        interrupt.isolated_result = result  # type: ignore[attr-defined]
        raise interrupt
    return result


def _terminate(
    proc: subprocess.Popen, tree: _Tree, grace_s: float, rc: int | None, maxrss: float
) -> tuple[int | None, float]:
    """Kill what is left of the tree: SIGTERM, a grace period, then SIGKILL."""
    if rc is None or tree.members():
        tree.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if rc is None:
                rc, maxrss = _reap(proc, 0)
            if rc is not None and not tree.members():
                break
            time.sleep(0.05)
        tree.signal(signal.SIGKILL)
    if rc is None:
        rc, maxrss = _reap(proc, 10.0)
    tree.signal(signal.SIGKILL)  # daemonised leftovers of a child that exited normally
    # grandchildren re-parented to init are reaped there; wait until they are gone
    deadline = time.monotonic() + 5.0
    while tree.members() and time.monotonic() < deadline:
        tree.signal(signal.SIGKILL)
        time.sleep(0.05)
    return rc, maxrss
