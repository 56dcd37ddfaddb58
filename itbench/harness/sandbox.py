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
    ro, rw, hidden = _bound_paths(ro_paths, rw_paths, hidden_paths)
    cmd = [exe, "--proc", "/proc", "--dev", "/dev", *_device_args(gpu), *_system_args()]
    cmd += _MountView(exe, tmp_bytes).build(_mount_order(ro, rw, hidden))
    cmd += ["--remount-ro", "/", *_namespace_args(network)]
    chdir = ["--chdir", str(Path(cwd).resolve())] if cwd is not None else []
    cmd += _identity_args(exe, chdir, as_root)
    cmd += [*chdir, "--", *argv]
    return cmd


def _bound_paths(
    ro_paths: Iterable[str | os.PathLike[str]],
    rw_paths: Iterable[str | os.PathLike[str]],
    hidden_paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[Path], list[Path], list[Path]]:
    """Normalised (read-only, writable, hidden) paths: writable wins, and a hidden path may not be bound."""
    hidden = _norm(hidden_paths)
    ro, rw = _norm(ro_paths), _norm(rw_paths)
    rw_set = set(rw)
    ro = [p for p in ro if p not in rw_set]
    clash = set(hidden) & (set(ro) | rw_set)
    if clash:
        raise ValueError(f"paths both hidden and bound: {sorted(map(str, clash))}")
    return ro, rw, hidden


def _device_args(gpu: bool | None) -> list[str]:
    """The GPU nodes and the /sys the CUDA driver reads, else only the CPU topology torch reads."""
    devices = _gpu_devices()
    out: list[str] = []
    if gpu or gpu is None:
        for dev in devices:
            out += ["--dev-bind", str(dev), str(dev)]
        if devices:  # the CUDA driver reads PCI topology from /sys
            out += ["--ro-bind", "/sys", "/sys"]
    if Path(_CPU_INFO).is_dir() and not devices:
        out += ["--ro-bind", _CPU_INFO, _CPU_INFO]
    return out


def _system_args() -> list[str]:
    """The OS a Python process needs, read-only: usr-merged links stay links, plus harmless /etc files."""
    out: list[str] = []
    for name in _SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            out += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            out += ["--ro-bind", name, name]
    out += ["--perms", "0755", "--dir", "/etc"]  # else root's bwrap makes it 0700: nobody could read them
    for name in _ETC_FILES:
        if Path(name).exists():
            out += ["--ro-bind", name, name]
    return out


# Kinds of mount in the allow-list view; at equal depth they are emitted in this order, hides last.
_HIDE, _RO, _RW, _TMPFS = 0, 1, 2, 3


def _mount_order(ro: list[Path], rw: list[Path], hidden: list[Path]) -> list[tuple[int, int, Path]]:
    """(depth, kind, path), shallow first: bwrap applies mounts in order, so deeper ones cover their parents."""
    mounts: list[tuple[int, int, Path]] = [(2, _TMPFS, Path("/tmp")), (3, _TMPFS, Path("/dev/shm"))]
    mounts += [(len(p.parts), _RO, p) for p in ro]
    mounts += [(len(p.parts), _RW, p) for p in rw]
    mounts += [(len(p.parts), _HIDE, p) for p in hidden]
    mounts.sort(key=lambda m: (m[0], m[1] if m[1] else 9, str(m[2])))
    return mounts


def _size_args(exe: str, n_bytes: int | None) -> list[str]:
    """``--size`` for the next tmpfs, when a size is asked for and this bwrap knows the option."""
    return ["--size", str(n_bytes)] if n_bytes and _bwrap_has_option(exe, "--size") else []


class _MountView:
    """The allow-list mounts in order, remembering what earlier mounts made for the later ones."""

    def __init__(self, exe: str, tmp_bytes: int | None):
        self.exe, self.tmp_bytes = exe, tmp_bytes
        self.args: list[str] = []
        self.made: set[Path] = {Path("/")}
        self.emitted: list[tuple[Path, int]] = []
        self.read_only_tmpfs: list[Path] = []

    def build(self, mounts: list[tuple[int, int, Path]]) -> list[str]:
        """All mount arguments; hiding tmpfs go read-only after the binds inside them made their mount points."""
        for _, kind, path in mounts:
            self._add(kind, path)
        for path in self.read_only_tmpfs:
            self.args += ["--remount-ro", str(path)]
        return self.args

    def _add(self, kind: int, path: Path) -> None:
        """One mount, after the folders above it; a tmpfs covers whatever folders were made below it."""
        if kind in (_HIDE, _TMPFS):
            self.made -= {m for m in self.made if m != path and m.is_relative_to(path)}
        elif path.exists():
            self.args += self._traversable_parents(path)
        args = self._mount(kind, path)
        if args is not None:
            self.args += args
            self.emitted.append((path, kind))

    def _traversable_parents(self, path: Path) -> list[str]:
        """``--dir`` for the folders above a mount point: traversable by nobody, whatever the umask."""
        out: list[str] = []
        for parent in reversed(path.parents):
            if parent not in self.made and str(parent) not in _SYSTEM_DIRS:
                self.made.add(parent)
                out += ["--perms", "0755", "--dir", str(parent)]
        return out

    def _mount(self, kind: int, path: Path) -> list[str] | None:
        """The arguments for one mount, or None when there is nothing to mount."""
        if kind == _HIDE:
            return self._hide(path)
        if kind == _TMPFS:  # world-writable with the sticky bit, like the real /tmp
            return ["--perms", "1777", *_size_args(self.exe, self.tmp_bytes), "--tmpfs", str(path)]
        if kind == _RO:
            return ["--ro-bind", str(path), str(path)] if path.exists() else None
        return ["--bind", str(path), str(path)]

    def _hide(self, path: Path) -> list[str] | None:
        """Cover what a bound folder would show (empty tmpfs, or /dev/null); None when it is not visible anyway."""
        parent_kind = next((k for p, k in reversed(self.emitted) if path.is_relative_to(p)), None)
        if parent_kind in (None, _HIDE, _TMPFS):
            return None
        if path.is_dir():
            self.read_only_tmpfs.append(path)
            return [*_size_args(self.exe, _HIDDEN_TMPFS_BYTES), "--tmpfs", str(path)]
        if path.exists():
            return ["--ro-bind", "/dev/null", str(path)]
        return None


def _namespace_args(network: bool) -> list[str]:
    """Own PID, IPC, UTS and cgroup namespaces (and network, unless allowed); gone when we are."""
    return [
        *([] if network else ["--unshare-net"]),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
    ]


def _identity_args(exe: str, chdir: list[str], as_root: bool) -> list[str]:
    """Become nobody without capabilities; root first drops to nobody on the host, then nests a bwrap."""
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
        return [*chdir, "--", *privilege_drop(), exe, "--dev-bind", "/", "/", *user, "--die-with-parent"]
    return user


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


ENV_DIR_VARIABLE = "ITBENCH_ENV_DIR"
"""Tells the worker where the submission's packages are (their ``.pth`` files run there, sandboxed)."""


def child_env(
    *,
    home: str | os.PathLike[str],
    limits: Limits | None = None,
    extra: Mapping[str, str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    env_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The child's whole environment, built here only: no secrets, no ``ITBENCH_HOME``.

    ``env_dir`` (a submission's own packages, harness/environments.py) goes
    first on ``PYTHONPATH``, so its packages win over the base's.

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
        "PYTHONPATH": os.pathsep.join([*([str(env_dir)] if env_dir else []), str(_itbench_import_root())]),
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
    if env_dir is not None:
        env[ENV_DIR_VARIABLE] = str(env_dir)
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
    env_dir: str | os.PathLike[str] | None = None,
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
    cwd, rw_list = _workdirs(cwd, rw_paths)
    sandboxed = not (unsandboxed or unsandboxed_requested())
    if sandboxed:
        cmd = _sandboxed_command(
            argv,
            limits=limits,
            cwd=cwd,
            ro_paths=[*ro_paths, *([env_dir] if env_dir is not None else [])],
            rw_list=rw_list,
            hidden_paths=hidden_paths,
            network=network,
            gpu=gpu,
            weights_dir=weights_dir,
        )
    else:
        cmd = _unsandboxed_command(argv)
    child_environ = child_env(home=cwd, limits=limits, extra=env, weights_dir=weights_dir, env_dir=env_dir)
    memory_cap = int(limits.memory_gb * GIB) if limits.memory_gb else None
    cgroup = make_cgroup(memory_cap, limits.max_pids)
    budget = _Budget.of(limits, memory_cap, rw_list)
    run = _launch(cmd, cwd, child_environ, limits, sandboxed, cgroup, stream_output)
    try:
        _watch(run, limits, budget, sandboxed)
    except BaseException as err:  # KeyboardInterrupt, SystemExit: clean up, then re-raise
        run.killed, run.interrupt = "interrupted", err
    finally:
        _clean_up(run, limits.grace_s)
    result = _result(run, cmd, limits, budget, sandboxed)
    if run.interrupt is not None:
        run.interrupt.isolated_result = result  # type: ignore[attr-defined]
        raise run.interrupt
    return result


def _workdirs(
    cwd: str | os.PathLike[str] | None, rw_paths: Iterable[str | os.PathLike[str]]
) -> tuple[Path, list[Path]]:
    """The workdir (default: the first writable path) and all writable folders, created: bwrap binds only what exists."""
    rw_list = _norm(rw_paths)
    if cwd is None:
        if not rw_list:
            raise ValueError("run_isolated needs a workdir: pass cwd= or at least one rw path")
        cwd = rw_list[0]
    cwd = Path(cwd).resolve()
    rw_list = _norm([cwd, *rw_list])
    for p in rw_list:
        p.mkdir(parents=True, exist_ok=True)
    return cwd, rw_list


def _sandboxed_command(
    argv: Sequence[str],
    *,
    limits: Limits,
    cwd: Path,
    ro_paths: Iterable[str | os.PathLike[str]],
    rw_list: list[Path],
    hidden_paths: Iterable[str | os.PathLike[str]],
    network: bool,
    gpu: bool | None,
    weights_dir: str | os.PathLike[str] | None,
) -> list[str]:
    """The bwrap command, failing closed without a working bwrap; root hands the writable folders to nobody."""
    reason = unavailable_reason()
    if reason:
        raise SandboxUnavailable(f"refusing to run a submission without a sandbox: {reason}", INSTALL_HINT)
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
    return cmd


def _unsandboxed_command(argv: Sequence[str]) -> list[str]:
    """The bare command, with a loud warning: the caller explicitly opted out of the sandbox."""
    msg = (
        "submission is NOT sandboxed (explicitly requested): it can read every file this user "
        "can (including held-out responses) and use the network; its record is marked so"
    )
    warnings.warn(msg, RuntimeWarning, stacklevel=3)  # points at run_isolated's caller
    log.warning(msg)
    return list(argv)


@dataclass(frozen=True)
class _Budget:
    """A run's memory and disk caps in bytes, with the writable folders' sizes before it started."""

    memory_cap: int | None
    disk_cap: int | None
    disk_base: dict[Path, int]

    @classmethod
    def of(cls, limits: Limits, memory_cap: int | None, rw_list: list[Path]) -> _Budget:
        """Measure the writable folders now (only under a disk quota): the quota is on what the run adds."""
        disk_cap = int(limits.disk_gb * GIB) if limits.disk_gb else None
        disk_base = {p: scan_tree(p)[0] for p in rw_list} if disk_cap else {}
        return cls(memory_cap, disk_cap, disk_base)

    def disk_grown(self) -> int:
        """Bytes the writable folders gained since the start (a folder that shrank counts as zero)."""
        return sum(max(scan_tree(p)[0] - base, 0) for p, base in self.disk_base.items())

    def disk_explains(self, rc: int) -> bool:
        """Whether the quota made a run fail: Python ignores SIGXFSZ, a write past RLIMIT_FSIZE fails with EFBIG."""
        if self.disk_cap is None:
            return False
        scans = {p: scan_tree(p) for p in self.disk_base}
        grown = sum(max(used - self.disk_base[p], 0) for p, (used, _) in scans.items())
        return (
            rc == -signal.SIGXFSZ
            or grown > self.disk_cap
            or max(s[1] for s in scans.values()) >= self.disk_cap
        )


@dataclass
class _Run:
    """One launched child and what watching it found, shared by the watch, the clean-up and the result."""

    proc: subprocess.Popen
    tree: _Tree
    pumps: list[_Pump]
    cgroup: RunCgroup | None
    start: float
    killed: KilledReason | None = None
    peak: int = 0
    rc: int | None = None
    maxrss: float = 0.0
    interrupt: BaseException | None = None
    cgroup_oom: bool = False


def _launch(
    cmd: list[str],
    cwd: Path,
    environ: dict[str, str],
    limits: Limits,
    sandboxed: bool,
    cgroup: RunCgroup | None,
    stream_output: bool,
) -> _Run:
    """Start the child as a session leader with both pipes pumped live; no cgroup outlives a failed start."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=environ,
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
    return _Run(proc, tree, pumps, cgroup, start)


def _watch(run: _Run, limits: Limits, budget: _Budget, sandboxed: bool) -> None:
    """Poll until the child exits or breaks a limit, noting which one in ``run.killed``."""
    next_disk_check = run.start
    while True:
        run.rc, run.maxrss = _reap(run.proc, 0)
        if run.rc is not None:
            return
        used = _memory_used(run, sandboxed)
        run.peak = max(run.peak, used)
        if budget.memory_cap is not None and used > budget.memory_cap:
            run.killed = "memory"
            return
        if limits.timeout_s is not None and time.monotonic() - run.start > limits.timeout_s:
            run.killed = "timeout"
            return
        if budget.disk_cap is not None and time.monotonic() >= next_disk_check:
            next_disk_check = time.monotonic() + 1.0  # scanning the folders is not free
            if budget.disk_grown() > budget.disk_cap:
                run.killed = "disk"
                return
        time.sleep(limits.poll_s)


def _memory_used(run: _Run, sandboxed: bool) -> int:
    """The tree's memory now: RSS, plus memfd and sandbox tmpfs bytes where no cgroup counts them."""
    if run.cgroup is not None and run.cgroup.memory is not None:
        return run.tree.rss_bytes()  # the kernel enforces the cgroup limit (all memory kinds)
    members = run.tree.members()
    used = run.tree.rss_bytes() + _memfd_bytes(members)
    if sandboxed:
        used += _tmpfs_bytes(members)
    return used


def _clean_up(run: _Run, grace_s: float) -> None:
    """Kill what is left, read the cgroup's peak and OOM verdict before removing it, and drain the pipes."""
    run.rc, run.maxrss = _terminate(run.proc, run.tree, grace_s, run.rc, run.maxrss)
    if run.cgroup is not None:
        run.peak = max(run.peak, run.cgroup.peak_bytes())
        run.cgroup_oom = run.cgroup.oom_killed()
        run.cgroup.remove()
    for pump in run.pumps:
        pump.join(timeout=2.0)
    for pump in run.pumps:
        with contextlib.suppress(OSError):
            pump.pipe.close()


def _result(run: _Run, cmd: list[str], limits: Limits, budget: _Budget, sandboxed: bool) -> IsolatedResult:
    """The record of the finished run, with why it ended worked out from its status and what was seen."""
    rc = _normalise_rc(run.rc, sandboxed)
    stderr_tail = run.pumps[1].text()
    killed = _why_ended(run, rc, limits, budget, stderr_tail)
    return IsolatedResult(
        returncode=rc,
        timed_out=killed == "timeout",
        killed_reason=killed,
        peak_rss_gb=max(run.peak, run.maxrss) / GIB,
        stdout_tail=run.pumps[0].text(),
        stderr_tail=stderr_tail,
        sandboxed=sandboxed,
        wall_s=time.monotonic() - run.start,
        argv=cmd,
        limiter=run.cgroup.describe() if run.cgroup is not None else "rss poll",
    )


def _why_ended(
    run: _Run, rc: int | None, limits: Limits, budget: _Budget, stderr_tail: str
) -> KilledReason | None:
    """Our own kill reason first; else the limit a failed exit points to (OOM, quota), a signal, or None."""
    if run.killed is not None:
        return run.killed
    if run.cgroup_oom and rc != 0:
        return "memory"
    if rc and budget.disk_explains(rc):
        return "disk"
    if rc is not None and rc < 0:
        return "signal"
    if rc and limits.rlimit_as and "MemoryError" in stderr_tail:
        return "memory"
    return None


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
