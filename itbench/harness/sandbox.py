"""Isolation of submission processes: a bubblewrap sandbox plus resource limits.

A submission is hostile code, run by root as often as not, that must not see
the held-out responses it is scored on. The runner therefore executes each
submission in a child process (``python -m itbench.harness.worker <workdir>``)
through :func:`run_isolated`, which

- wraps the command in bubblewrap (``bwrap``) as an allow-list
  (:func:`sandbox_argv`): only the system's ``/usr``, the Python prefix, the
  itbench package, the submission folder, the weights and its own cache exist
  inside; it runs as ``nobody`` (on the host too) with no capabilities, no
  new privileges, no further user namespaces, no network, own PID, IPC and
  UTS namespaces, so it can neither undo its mounts nor survive the run;
- fails closed: without a working bwrap it raises :class:`SandboxUnavailable`
  with the install command, unless the caller explicitly asked for
  ``unsandboxed`` (``--unsandboxed`` or ``ITBENCH_NO_SANDBOX=1``), in which
  case the result says ``sandboxed=False`` for the record;
- enforces a wall-clock timeout, a memory and a process limit (a cgroup per
  run from :mod:`itbench.harness.limits`, so tmpfs and memfd pages count; the
  RSS poll plus tmpfs and memfd sizes where no cgroup can be made) and a disk
  quota on the writable folders, killing the whole tree (SIGTERM, then SIGKILL);
- forwards the child's output as it comes (tqdm bars keep working), with
  escape sequences and control characters removed and the amount capped
  (head and tail kept), for the terminal and for error messages;
- kills the child on Ctrl-C in the parent and re-raises the interrupt.
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
import stat
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

from itbench.console import show_progress
from itbench.errors import ItbenchError
from itbench.harness.limits import RunCgroup, make_cgroup
from itbench.harness.untrusted import clean_text, scan_tree

log = logging.getLogger(__name__)

NO_SANDBOX_ENV = "ITBENCH_NO_SANDBOX"
"""``1`` means the same as ``--unsandboxed``: an explicit opt-out, recorded as such."""
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install "
    "bubblewrap), or, for your own trusted code only, pass --unsandboxed (the record is marked and "
    "never ranked above sandboxed ones)"
)

GIB = 2**30
KilledReason = Literal["timeout", "memory", "disk", "signal", "interrupted"]

# Paths hidden from every sandboxed child, whatever the caller passes: the
# user's home (credentials, the default data home) and runtime sockets.
_ALWAYS_HIDDEN = ("/home", "/root", "/run")
_TAIL_CHARS = 8000
_HEAD_CHARS = 8000
TERMINAL_CHARS = 64 * 1024  # streamed to the terminal before the rest is only kept as a tail
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
    max_pids: int | None = 1024
    disk_gb: float | None = None
    """Quota on what the run may add to its writable folders (and the largest file)."""


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
    limiter: str = "rss poll"
    """What enforced the memory limit: ``cgroup v1 (memory, pids)``, ..., or ``rss poll``."""

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
        if self.killed_reason == "disk":
            return "exceeded its disk quota and was killed"
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
    """Run a trivial sandbox once, as submissions will run; containers without user namespaces fail here."""
    try:
        cmd = sandbox_argv(["true"], cwd="/")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired, ItbenchError) as err:
        return False, f"bwrap probe failed: {err}"
    if proc.returncode != 0:
        return False, f"bwrap probe failed: {clean_text(proc.stderr.strip(), 500) or proc.returncode}"
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
    """Why submissions cannot be sandboxed here ('' when they can)."""
    exe = bwrap_path()
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    return _probe_bwrap(exe)[1]


def unsandboxed_requested() -> bool:
    """``ITBENCH_NO_SANDBOX=1``: the environment form of the explicit ``--unsandboxed`` flag."""
    return os.environ.get(NO_SANDBOX_ENV, "") not in ("", "0")


# ---------------------------------------------------------------------------
# the bwrap command line

SANDBOX_UID = 65534
"""The unprivileged uid/gid (``nobody``) a submission runs as, inside and on the host."""

# What a Python process needs from the system besides its own prefix: the OS
# files (usr-merged links or folders) and a few harmless /etc entries.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/alternatives",
    "/etc/fonts",
)
_CPU_INFO = "/sys/devices/system/cpu"  # torch's cpuinfo reads it; read-only, harmless


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


def privilege_drop() -> list[str]:
    """The command that turns root into ``nobody`` with no capabilities, before the inner bwrap."""
    setpriv = shutil.which("setpriv")
    uid = str(SANDBOX_UID)
    if setpriv:
        return [
            setpriv,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    code = (
        f"import os,sys;os.setgroups([]);os.setresgid({uid},{uid},{uid});os.setresuid({uid},{uid},{uid});"
        "os.execv(sys.argv[1],sys.argv[1:])"
    )
    return [sys.executable, "-I", "-S", "-c", code]


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
    as_root: bool | None = None,
) -> list[str]:
    """The bubblewrap command that runs ``argv`` seeing only what it must.

    An allow-list: the new root is an empty tmpfs (read-only once set up) into
    which only the system's ``/usr`` (and its ``/lib``, ``/bin`` links), a few
    ``/etc`` files, ``ro_paths`` (the Python prefix, the itbench package, the
    submission folder, the weights) and ``rw_paths`` (the workdir, the
    submission's own cache) are bound; ``/tmp`` and ``/dev/shm`` are private
    tmpfs of at most ``tmp_bytes``. ``hidden_paths`` that lie inside a bound
    folder are covered again (deeper mounts win). The command runs as uid/gid
    ``nobody`` in a user namespace that cannot create further user namespaces,
    with no capabilities and ``no_new_privs``, in its own PID, IPC, UTS,
    network (unless ``network``) and cgroup namespaces.

    Run as root (``as_root``, default: when our euid is 0), an outer privileged
    bwrap builds the view (it can bind paths below root-only folders such as
    ``/root/.pyenv``), drops to ``nobody`` on the host with ``setpriv``, and an
    inner unprivileged bwrap adds the user namespace; so the child's uid is
    ``nobody`` on the host too, and root-owned files (``/proc/sys``) refuse it.
    """
    exe = bwrap_path()
    if exe is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed", hint=INSTALL_HINT)
    as_root = os.geteuid() == 0 if as_root is None else as_root
    hidden = _norm(hidden_paths)
    ro, rw = _norm(ro_paths), _norm(rw_paths)
    rw_set = set(rw)
    ro = [p for p in ro if p not in rw_set]
    clash = set(hidden) & (set(ro) | rw_set)
    if clash:
        raise ValueError(f"paths both hidden and bound: {sorted(map(str, clash))}")

    def size(n_bytes: int | None) -> list[str]:
        return ["--size", str(n_bytes)] if n_bytes and _bwrap_has_option(exe, "--size") else []

    cmd = [exe, "--proc", "/proc", "--dev", "/dev"]
    if gpu or gpu is None:
        for dev in _gpu_devices():
            cmd += ["--dev-bind", str(dev), str(dev)]
        if _gpu_devices():  # the CUDA driver reads PCI topology from /sys
            cmd += ["--ro-bind", "/sys", "/sys"]
    if Path(_CPU_INFO).is_dir() and not _gpu_devices():
        cmd += ["--ro-bind", _CPU_INFO, _CPU_INFO]
    for name in _SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            cmd += ["--ro-bind", name, name]
    for name in _ETC_FILES:
        if Path(name).exists():
            cmd += ["--ro-bind", name, name]

    # (depth, kind, path): 0 hide, 1 read-only, 2 writable, 3 private tmpfs
    mounts: list[tuple[int, int, Path]] = [(2, 3, Path("/tmp")), (3, 3, Path("/dev/shm"))]
    mounts += [(len(p.parts), 1, p) for p in ro]
    mounts += [(len(p.parts), 2, p) for p in rw]
    mounts += [(len(p.parts), 0, p) for p in hidden]
    mounts.sort(key=lambda m: (m[0], m[1] if m[1] else 9, str(m[2])))
    made: set[Path] = {Path("/")}

    def parents_traversable(path: Path) -> list[str]:
        """``--dir`` for the folders above a mount point: traversable by nobody, whatever the umask."""
        out: list[str] = []
        for parent in reversed(path.parents):
            if parent not in made and str(parent) not in _SYSTEM_DIRS:
                made.add(parent)
                out += ["--perms", "0755", "--dir", str(parent)]
        return out

    emitted: list[tuple[Path, int]] = []
    read_only_tmpfs: list[Path] = []
    for _, kind, path in mounts:
        if kind in (0, 3):  # a tmpfs covers whatever folders were made below it
            made -= {m for m in made if m != path and m.is_relative_to(path)}
        elif path.exists():
            cmd += parents_traversable(path)
        parent_kind = next((k for p, k in reversed(emitted) if path.is_relative_to(p)), None)
        if kind == 0:  # hide what a bound folder would show: empty tmpfs, or /dev/null
            if parent_kind in (None, 0, 3):
                continue  # not visible anyway
            if path.is_dir():
                cmd += [*size(_HIDDEN_TMPFS_BYTES), "--tmpfs", str(path)]
                read_only_tmpfs.append(path)
            elif path.exists():
                cmd += ["--ro-bind", "/dev/null", str(path)]
            else:
                continue
        elif kind == 3:  # world-writable with the sticky bit, like the real /tmp
            cmd += ["--perms", "1777", *size(tmp_bytes), "--tmpfs", str(path)]
        elif kind == 1:
            if not path.exists():
                continue
            cmd += ["--ro-bind", str(path), str(path)]
        else:
            cmd += ["--bind", str(path), str(path)]
        emitted.append((path, kind))
    for path in read_only_tmpfs:  # after the binds inside them created their mount points
        cmd += ["--remount-ro", str(path)]
    cmd += ["--remount-ro", "/"]
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
    chdir = ["--chdir", str(Path(cwd).resolve())] if cwd is not None else []
    user = [
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--cap-drop",
        "ALL",
    ]
    if as_root:
        cmd += [*chdir, "--", *privilege_drop(), exe, "--dev-bind", "/", "/", *user, "--die-with-parent"]
    else:
        cmd += user
    cmd += [*chdir, "--", *argv]
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


def weight_homes() -> tuple[Path, Path]:
    """Where torchvision (``TORCH_HOME``) and timm / Hugging Face (``HF_HOME``) keep weights here."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return torch_home, hf_home


#: Variables of the operator's environment a submission may see (all others are dropped).
PASSED_THROUGH = ("CUDA_VISIBLE_DEVICES", "TERM", "COLUMNS", "LC_ALL", "ITBENCH_RANDOM_WEIGHTS")


def child_env(
    *,
    home: str | os.PathLike[str],
    limits: Limits | None = None,
    extra: Mapping[str, str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The child's whole environment, built here only: no secrets, no ``ITBENCH_HOME``.

    Pretrained weights are found offline through ``TORCH_HOME`` / ``HF_HOME``:
    ``weights_dir`` when given, else this machine's own weight folders (bound
    read-only by the runner). Threads follow the limits; progress bars follow
    the operator's terminal (``itbench.console``).
    """
    torch_home, hf_home = (
        (Path(weights_dir), Path(weights_dir)) if weights_dir is not None else weight_homes()
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": str(_itbench_import_root()),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLCONFIGDIR": str(Path(home) / ".mplconfig"),
        "TORCH_HOME": str(torch_home),
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "ITBENCH_PROGRESS": "1" if show_progress() else "0",
    }
    for key in PASSED_THROUGH:
        if key in os.environ:
            env[key] = os.environ[key]
    if limits is not None and limits.cpu_threads:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[key] = str(limits.cpu_threads)
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


def _preexec(limits: Limits, sandboxed: bool, cgroup: RunCgroup | None) -> Callable[[], None]:
    """Runs in the forked child before exec: join the cgroup, set rlimits, parent-death signal.

    Joining here (not after ``Popen`` returns) means no process of the run ever
    runs outside its cgroup. Without a cgroup, ``RLIMIT_NPROC`` stands in for
    the pids limit (it counts the sandbox uid's processes host-wide).
    """

    def fn() -> None:
        if cgroup is not None:
            cgroup.enter()
        if not sandboxed:  # bwrap has --die-with-parent
            _set_pdeathsig()
        if limits.rlimit_as and limits.memory_gb:
            cap = int(limits.memory_gb * GIB)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        if limits.disk_gb:
            cap = int(limits.disk_gb * GIB)
            resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
        if sandboxed and limits.max_pids and (cgroup is None or cgroup.pids is None):
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_pids, limits.max_pids))

    return fn


class _Pump(threading.Thread):
    """Copies a child's pipe to our stream as it arrives, sanitised and capped.

    Reads raw chunks, not lines, so tqdm's carriage-return updates show live.
    Escape sequences and control characters are dropped before anything is
    shown or kept. The terminal gets the first ``TERMINAL_CHARS`` characters;
    after that only a tail is kept and shown at the end with a note of how
    much was left out. ``text()`` is head and tail, for error messages.
    """

    def __init__(self, pipe: IO[bytes], sink: IO[str] | None):
        super().__init__(daemon=True)
        self.pipe, self.sink = pipe, sink
        self.head: list[str] = []
        self.head_size = 0
        self.tail: deque[str] = deque()
        self.size = 0
        self.total = 0
        self.shown = 0
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
        self._finish()

    def _add(self, text: str) -> None:
        text = clean_text(text, keep_cr=True)
        if not text:
            return
        self.total += len(text)
        if self.head_size < _HEAD_CHARS:
            part = text[: _HEAD_CHARS - self.head_size]
            self.head.append(part)
            self.head_size += len(part)
        if self.sink is not None and self.shown < TERMINAL_CHARS:
            part = text[: TERMINAL_CHARS - self.shown]
            self.shown += len(part)
            self._show(part)
        self.tail.append(text)
        self.size += len(text)
        while self.size - len(self.tail[0]) >= _TAIL_CHARS and len(self.tail) > 1:
            self.size -= len(self.tail.popleft())

    def _show(self, text: str) -> None:
        if self.sink is None:
            return
        try:
            self.sink.write(text)
            self.sink.flush()
        except (OSError, ValueError):
            self.sink = None

    def _finish(self) -> None:
        if self.sink is not None and self.total > self.shown:
            tail = "".join(self.tail)[-_TAIL_CHARS:]
            omitted = self.total - self.shown - len(tail)
            if omitted > 0:
                self._show(f"\n[itbench: {omitted} characters of submission output not shown]\n{tail}")
            else:
                self._show(tail[len(tail) - (self.total - self.shown) :])

    def text(self) -> str:
        """Head and tail of everything the child wrote (sanitised)."""
        tail = "".join(self.tail)[-_TAIL_CHARS:]
        if self.total <= _TAIL_CHARS:
            return tail
        if self.total <= _HEAD_CHARS + _TAIL_CHARS:
            return tail
        head = "".join(self.head)
        return f"{head}\n[... {self.total - len(head) - len(tail)} characters omitted ...]\n{tail}"


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


def _chown_tree(root: Path, uid: int) -> None:
    """Hand a writable folder to the sandbox uid, never following a link (lchown).

    Entries already owned by ``uid`` are skipped; a regular file with several
    links is left alone (a hard link to someone else's file must not change hands).
    """
    stack = [root]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError):
            info = os.lstat(folder)
            if info.st_uid != uid:
                os.lchown(folder, uid, uid)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                stack.append(Path(entry.path))
            elif info.st_uid != uid and not (stat.S_ISREG(info.st_mode) and info.st_nlink > 1):
                with contextlib.suppress(OSError):
                    os.lchown(entry.path, uid, uid)


def _tmpfs_bytes(procs: list[psutil.Process]) -> int:
    """Bytes the sandbox holds in its private /tmp and /dev/shm (seen via /proc/PID/root).

    The RSS fallback's view of tmpfs memory, which RSS does not count; the
    first process found in another mount namespace than ours shows it.
    """
    try:
        own = os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return 0
    best = 0
    for p in procs:
        try:
            if os.stat(f"/proc/{p.pid}/ns/mnt").st_ino == own:
                continue
        except OSError:
            continue
        total = 0
        for sub in ("tmp", "dev/shm"):
            with contextlib.suppress(OSError):
                st = os.statvfs(f"/proc/{p.pid}/root/{sub}")
                total += (st.f_blocks - st.f_bfree) * st.f_frsize
        best = max(best, total)
    return best


def _memfd_bytes(procs: list[psutil.Process]) -> int:
    """Bytes held in memfds (anonymous files) the tree has open: invisible to RSS."""
    total = 0
    for p in procs:
        try:
            fds = os.listdir(f"/proc/{p.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{p.pid}/fd/{fd}"
            try:
                if os.readlink(path).startswith("/memfd:"):
                    total += os.stat(path).st_size
            except OSError:
                continue
    return total


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
    unsandboxed: bool = False,
) -> IsolatedResult:
    """Run ``argv`` in the sandbox under ``limits``; never leaves strays.

    Fails closed: without a working bubblewrap it raises
    :class:`SandboxUnavailable` with the install command, unless the caller
    asked for ``unsandboxed`` (or ``ITBENCH_NO_SANDBOX=1``) explicitly.
    ``cwd`` is the workdir: always writable, the child's HOME and working
    directory (default: the first of ``rw_paths``). ``env`` adds variables to
    the minimal environment of :func:`child_env`. Memory and processes are
    limited by a cgroup per run when one can be made (every kind of memory
    counts), else by polling the tree's RSS plus its tmpfs and memfd bytes.
    The writable folders may grow by at most ``limits.disk_gb``. Submission
    faults (crash, hang, memory, disk) are reported in the result, never
    raised; a KeyboardInterrupt kills the child and is re-raised with the
    result attached as ``err.isolated_result``.
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
    unsandboxed = unsandboxed or unsandboxed_requested()
    sandboxed = not unsandboxed
    if sandboxed:
        reason = unavailable_reason()
        if reason:
            raise SandboxUnavailable(
                f"refusing to run a submission without a sandbox: {reason}", INSTALL_HINT
            )
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
        if os.geteuid() == 0:
            for p in rw_list:
                _chown_tree(p, SANDBOX_UID)
    else:
        msg = (
            "submission is NOT sandboxed (explicitly requested): it can read every file this user "
            "can (including held-out responses) and use the network; its record is marked so"
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
        cmd = list(argv)
    child_environ = child_env(home=cwd, limits=limits, extra=env, weights_dir=weights_dir)
    memory_cap = int(limits.memory_gb * GIB) if limits.memory_gb else None
    cgroup = make_cgroup(memory_cap, limits.max_pids)
    disk_cap = int(limits.disk_gb * GIB) if limits.disk_gb else None
    disk_base = {p: scan_tree(p)[0] for p in rw_list} if disk_cap else {}

    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=child_environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_preexec(limits, sandboxed, cgroup),
        )
    except BaseException:
        if cgroup is not None:
            cgroup.remove()
        raise
    tree = _Tree(proc.pid)
    assert proc.stdout is not None and proc.stderr is not None
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
    next_disk_check = start
    try:
        while True:
            rc, maxrss = _reap(proc, 0)
            if rc is not None:
                break
            if cgroup is not None and cgroup.memory is not None:
                used = tree.rss_bytes()  # the kernel enforces the cgroup limit (all memory kinds)
            else:
                members = tree.members()
                used = tree.rss_bytes() + _memfd_bytes(members)
                if sandboxed:
                    used += _tmpfs_bytes(members)
            peak = max(peak, used)
            if memory_cap is not None and used > memory_cap:
                killed = "memory"
                break
            if limits.timeout_s is not None and time.monotonic() - start > limits.timeout_s:
                killed = "timeout"
                break
            if disk_cap is not None and time.monotonic() >= next_disk_check:
                next_disk_check = time.monotonic() + 1.0
                grown = sum(max(scan_tree(p)[0] - base, 0) for p, base in disk_base.items())
                if grown > disk_cap:
                    killed = "disk"
                    break
            time.sleep(limits.poll_s)
    except BaseException as err:  # KeyboardInterrupt, SystemExit: clean up, then re-raise
        killed, interrupt = "interrupted", err
    finally:
        rc, maxrss = _terminate(proc, tree, limits.grace_s, rc, maxrss)
        if cgroup is not None:
            peak = max(peak, cgroup.peak_bytes())
            cgroup_oom = cgroup.oom_killed()
            cgroup.remove()
        else:
            cgroup_oom = False
        for pump in pumps:
            pump.join(timeout=2.0)
        for pipe in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()

    rc = _normalise_rc(rc, sandboxed)
    if killed is None and cgroup_oom and rc != 0:
        killed = "memory"
    if killed is None and rc and disk_cap is not None:
        # Python ignores SIGXFSZ: a write past RLIMIT_FSIZE fails with EFBIG instead, so look
        scans = {p: scan_tree(p) for p in disk_base}
        grown = sum(max(used - disk_base[p], 0) for p, (used, _) in scans.items())
        if rc == -signal.SIGXFSZ or grown > disk_cap or max(s[1] for s in scans.values()) >= disk_cap:
            killed = "disk"
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
        limiter=cgroup.describe() if cgroup is not None else "rss poll",
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
