"""Per-submission environments: a submission brings its own packages, built with uv, cached, locked.

A submission declares packages in ``requirements.txt`` (Brain-Score's
convention) or in ``[env] requirements`` of ``submission.toml``. Before the
sandboxed run, outside the sandbox and with network, :func:`prepare` builds
them once per content hash and returns the folder the child gets read-only.

Layered, not separate (README, "Submission environments", has the numbers):
the lock is resolved against the harness's own packages as preferences
(``uv pip compile`` reads an existing output file as preferred pins), so a
package the base already has at a compatible version is taken from the base;
only what differs (a pinned scikit-learn, numpy 1.26, open_clip) is installed
into ``<env>/site`` with ``uv pip install --target --no-deps --require-hashes``.
The child runs the base interpreter inside the sandbox with ``site`` first on
its path, so the submission's packages win and torch is the base's.

Trust: no interpreter of a submission's environment runs outside the sandbox.
uv resolves for the base (trusted) interpreter; environments are inspected by
reading ``*.dist-info/METADATA`` files. Wheels only by default
(``--only-binary :all:``): unpacking a wheel runs none of its code. With
``allow_sdists`` (an operator's flag, never the submission's) both uv steps
run inside the sandbox with network on, since building an sdist runs its
``setup.py``. Requirement lines are names and version specifiers only: no
options (``--index-url``), URLs or paths.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import pty
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from itbench import paths
from itbench.console import show_progress
from itbench.errors import SubmissionError
from itbench.harness.record import EnvironmentLock
from itbench.harness.submission import Submission
from itbench.harness.untrusted import UntrustedOutput, clean_text, read_bytes
from itbench.locks import locked
from itbench.version import __version__

REQUIREMENTS_FILE = "requirements.txt"
REQUIREMENTS_MAX_BYTES = 64 * 1024
META_FILE = "itbench-env.json"
LOCK_FILE = "lock.txt"
SITE = "site"
DEFAULT_BUILD_TIMEOUT_S = 1800.0
RESOLVER_LINES = 8
"""How many of uv's first error lines a failed record quotes."""

Log = Callable[[str], None]


class EnvBuildError(SubmissionError):
    """The submission's environment could not be declared, resolved or installed: a failed record."""


@dataclass(frozen=True)
class EnvSpec:
    """What a submission declared: requirement lines (validated, normalised) and where they came from."""

    requirements: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class PreparedEnv:
    """A built environment in the cache: ``site`` goes first on the child's path, read-only."""

    root: Path
    lock: EnvironmentLock
    built: bool
    """True when this call built it (False: served from the cache)."""

    @property
    def site(self) -> Path:
        return self.root / SITE


# ---------------------------------------------------------------------------
# declaring


def declared(sub: Submission) -> EnvSpec | None:
    """The submission's declared packages, or None when it needs only the harness's."""
    file = sub.path / REQUIREMENTS_FILE
    has_file = file.is_file() or file.is_symlink()
    if has_file and sub.env_requirements:
        raise EnvBuildError(
            f"submission '{sub.id}': declares packages twice ({REQUIREMENTS_FILE} and [env] in submission.toml)",
            "keep one of them",
        )
    if has_file:
        try:
            text = read_bytes(file, REQUIREMENTS_MAX_BYTES).decode("utf-8")
        except (UntrustedOutput, UnicodeDecodeError, OSError) as err:
            raise EnvBuildError(
                f"submission '{sub.id}': {REQUIREMENTS_FILE}: {clean_text(str(err), 200)}"
            ) from None
        lines, source = _lines(text), REQUIREMENTS_FILE
    else:
        lines, source = list(sub.env_requirements), "submission.toml [env]"
    if not lines:
        return None
    return EnvSpec(tuple(_requirement(line, sub.id, source) for line in lines), source)


def _lines(text: str) -> list[str]:
    """requirements.txt lines without comments and blanks."""
    out = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _requirement(line: str, sub_id: str, source: str) -> str:
    """One PEP 508 requirement by name and version; options, URLs and paths are refused."""
    problem = None
    if line.startswith("-"):
        problem = "options (--index-url, -e, -r ...) are not allowed"
    else:
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            problem = f"not a requirement: {clean_text(str(err), 150)}"
        else:
            if req.url:
                problem = "URLs and paths are not allowed (name and version specifiers only)"
            elif not re.fullmatch(r"[\x20-\x7e]{1,200}", str(req)):
                problem = "at most 200 printable ASCII characters"
    if problem:
        raise EnvBuildError(
            f"submission '{sub_id}': {source}: {clean_text(line, 100)!r}: {problem}",
            "write one package per line, e.g. scikit-learn==1.5.2 or open_clip_torch>=2.24",
        )
    return str(req)


# ---------------------------------------------------------------------------
# the base environment and the cache key


def base_packages() -> dict[str, str]:
    """The harness's own packages (canonical name -> version): the trusted base a layer sits on."""
    return dict(_base_packages())


@functools.lru_cache(maxsize=1)
def _base_packages() -> tuple[tuple[str, str], ...]:
    """Read once per process (a second of metadata files): the base does not change under a run."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return tuple(sorted(found.items()))


def env_key(spec: EnvSpec, allow_sdists: bool = False) -> str:
    """The content hash an environment is cached under: requirements, Python, platform, itbench, base."""
    base = sorted(f"{k}=={v}" for k, v in base_packages().items())
    facts = {
        "requirements": sorted(spec.requirements),
        "python": [sys.implementation.name, *map(str, sys.version_info[:3])],
        "platform": [sysconfig.get_platform(), platform.machine()],
        "itbench": __version__,
        "base": hashlib.sha256("\n".join(base).encode()).hexdigest(),
        "sdists": allow_sdists,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def envs_root() -> Path:
    """Where this machine (node) keeps built environments: ``<data home>/envs``."""
    root = paths.data_home() / "envs"
    root.mkdir(parents=True, exist_ok=True)
    return root


# ---------------------------------------------------------------------------
# building


def prepare(
    sub: Submission, log: Log, *, allow_sdists: bool = False, timeout_s: float | None = None
) -> PreparedEnv | None:
    """The submission's environment, built now if not cached; None when it declares no packages.

    Raises :class:`EnvBuildError` (a SubmissionError: a failed record) with
    the resolver's first lines when the build fails or times out.
    """
    spec = declared(sub)
    if spec is None:
        return None
    return build(spec, log, allow_sdists=allow_sdists, timeout_s=timeout_s, label=sub.id)


def cached(spec: EnvSpec, allow_sdists: bool = False) -> PreparedEnv | None:
    """The built environment of ``spec`` if this machine has it (read from files, nothing runs)."""
    root = envs_root() / env_key(spec, allow_sdists)
    try:
        lock = EnvironmentLock.model_validate_json((root / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return PreparedEnv(root, lock, built=False)


def build(
    spec: EnvSpec,
    log: Log,
    *,
    allow_sdists: bool = False,
    timeout_s: float | None = None,
    label: str = "submission",
) -> PreparedEnv:
    """Resolve and install ``spec`` into a fresh folder, renamed into the cache when complete."""
    key = env_key(spec, allow_sdists)
    final = envs_root() / key
    with locked(final):  # a second run of the same environment waits, then finds it built
        found = cached(spec, allow_sdists)
        if found is not None:
            log(f"environment of {label}: cached ({len(found.lock.layered)} packages over the base)")
            return found
        log(f"environment of {label}: building {key} ({', '.join(spec.requirements)}) ...")
        started = time.monotonic()
        with _scratch(envs_root(), key) as work:
            lock = _resolve_and_install(
                spec, key, work, log, allow_sdists, timeout_s or DEFAULT_BUILD_TIMEOUT_S
            )
            lock.build_s = round(time.monotonic() - started, 2)
            lock.disk_mb = round(folder_bytes(work / SITE) / 2**20, 1)
            (work / META_FILE).write_text(lock.model_dump_json(indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        log(f"environment of {label}: built in {lock.build_s:.1f} s, {lock.disk_mb:.0f} MiB")
        return PreparedEnv(final, lock, built=True)


@contextlib.contextmanager
def _scratch(root: Path, key: str) -> Iterator[Path]:
    """A fresh build folder beside the cache entry (same filesystem: the rename is atomic); removed on failure."""
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _resolve_and_install(
    spec: EnvSpec, key: str, work: Path, log: Log, allow_sdists: bool, timeout_s: float
) -> EnvironmentLock:
    """uv pip compile (base versions preferred, hashes) then install what differs from the base."""
    base = base_packages()
    deadline = time.monotonic() + timeout_s
    (work / "requirements.in").write_text("\n".join(spec.requirements) + "\n")
    # an existing output file is read as preferred pins: the base's versions win where they fit
    (work / LOCK_FILE).write_text("".join(f"{n}=={v}\n" for n, v in sorted(base.items())))
    binary = [] if allow_sdists else ["--only-binary", ":all:"]
    compile_args = ["pip", "compile", "requirements.in", "-o", LOCK_FILE, "--generate-hashes"]
    _uv([*compile_args, "--no-header", "--no-annotate", *binary], work, log, deadline, allow_sdists)
    lock_text = _read_lock(work)
    locked_pins = parse_lock(lock_text)
    layered = {n: v for n, v in locked_pins.items() if not _same_version(base.get(n), v)}
    (work / SITE).mkdir()
    if layered:
        (work / "install.txt").write_text(_pins_with_hashes(lock_text, set(layered)))
        install_args = [
            "pip",
            "install",
            "--target",
            SITE,
            "--no-deps",
            "--require-hashes",
            "-r",
            "install.txt",
        ]
        _uv([*install_args, *binary], work, log, deadline, allow_sdists)
        (work / SITE / ".lock").unlink(missing_ok=True)  # uv's own install lock, not a package
    return EnvironmentLock(
        key=key,
        requirements=list(spec.requirements),
        packages=[f"{n}=={v}" for n, v in sorted(locked_pins.items())],
        layered=[f"{n}=={v}" for n, v in sorted(layered.items())],
        lock_sha256=hashlib.sha256((work / LOCK_FILE).read_bytes()).hexdigest(),
        sdists_allowed=allow_sdists,
    )


LOCK_MAX_BYTES = 16 * 2**20


def _read_lock(work: Path) -> str:
    """uv's lock, read as untrusted (a sandboxed sdist build wrote it): capped, text."""
    try:
        return read_bytes(work / LOCK_FILE, LOCK_MAX_BYTES).decode("utf-8")
    except (UntrustedOutput, UnicodeDecodeError, OSError) as err:
        raise EnvBuildError(
            f"environment build failed: unreadable lock: {clean_text(str(err), 200)}"
        ) from None


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,99})==([A-Za-z0-9.+!_-]{1,60})(?=[\s;\\]|$)")


def parse_lock(text: str) -> dict[str, str]:
    """``name==version`` of every package in a uv/pip-tools lock (canonical names)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            out[canonicalize_name(match.group(1))] = match.group(2)
    return out


def _pins_with_hashes(text: str, keep: set[str]) -> str:
    """The lock's entries (with their ``--hash`` lines) for the packages in ``keep`` only."""
    out, keeping = [], False
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            keeping = canonicalize_name(match.group(1)) in keep
        elif not line.startswith(" "):
            keeping = False
        if keeping and not line.lstrip().startswith("#"):
            out.append(line)
    return "\n".join(out) + "\n"


def _same_version(base: str | None, locked_version: str) -> bool:
    """Whether the base already has this version (``2.1`` equals ``2.1.0``)."""
    if base is None:
        return False
    try:
        return Version(base) == Version(locked_version)
    except InvalidVersion:
        return base == locked_version


# ---------------------------------------------------------------------------
# running uv


def uv_binary() -> str:
    """The uv executable of the harness's environment (the ``uv`` PyPI package)."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise SubmissionError("uv is not installed", "pip install uv (an itbench dependency)") from None
        return found


def _uv(args: Sequence[str], work: Path, log: Log, deadline: float, sandboxed: bool) -> None:
    """Run one uv command for the base interpreter in ``work``; a failure quotes uv's first lines."""
    argv = [uv_binary(), *args, "--python", sys.executable, "--no-config"]
    remaining = max(deadline - time.monotonic(), 0.01)
    if sandboxed:
        rc, text = _uv_sandboxed(argv, work, remaining)
    else:
        rc, text = _uv_here(argv, work, remaining)
    if rc != 0:
        raise EnvBuildError(f"environment build failed: {resolver_lines(text, rc)}", _BUILD_HINT)
    if not show_progress():  # else the terminal saw uv's own output as it came
        for line in text.strip().splitlines()[-3:]:
            log(f"  uv: {clean_text(line, 200)}")


_BUILD_HINT = (
    "check the requirement names and versions (wheels only unless the operator passes --allow-sdists); "
    "`itbench env build SUBMISSION` shows uv's full output"
)


def resolver_lines(text: str, rc: int | None) -> str:
    """uv's first meaningful lines (escapes removed), or why it stopped."""
    if rc is None:
        return "timed out (raise the limit with `itbench env build --timeout`; a built environment is reused)"
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "\n")
    lines = [ln.strip() for ln in plain.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Resolved ", "Using ", "Prepared ", "Downloading"))]
    return clean_text(" / ".join(lines[:RESOLVER_LINES]) or f"uv exited with status {rc}", 1500)


def _uv_here(argv: list[str], work: Path, timeout_s: float) -> tuple[int | None, str]:
    """uv outside the sandbox (wheels only: nothing of the packages runs); a terminal sees its bars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "ITBENCH"))}
    if show_progress():
        return _with_pty(argv, work, env, timeout_s)
    try:
        proc = subprocess.run(
            argv,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, ""
    return proc.returncode, proc.stderr  # stdout is the lock (also written to its file)


def _with_pty(argv: list[str], work: Path, env: dict[str, str], timeout_s: float) -> tuple[int | None, str]:
    """Run uv on a pseudo-terminal so its own progress bars show, while keeping its text for errors."""
    master, slave = pty.openpty()
    devnull = subprocess.DEVNULL  # stdout is the lock (also written to its file)
    proc = subprocess.Popen(argv, cwd=work, env=env, stdin=devnull, stdout=devnull, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # the other side closed: uv is done
            break
        if not data:
            break
        chunks.append(data)
        sys.stderr.write(data.decode(errors="replace"))
        sys.stderr.flush()
    os.close(master)
    if proc.poll() is None and time.monotonic() >= deadline:
        proc.kill()
        proc.wait()
        return None, ""
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def _uv_sandboxed(argv: list[str], work: Path, timeout_s: float) -> tuple[int | None, str]:
    """uv inside the sandbox with network on: for sdists, whose build runs the package's own code."""
    from itbench.harness import sandbox

    # the operator's CA bundle (a TLS-inspecting proxy) but no index credentials: the build is hostile code
    certs = {k: os.environ[k] for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(k)}
    seen = ["/etc/resolv.conf", "/etc/hosts", "/etc/ssl", *certs.values()]
    result = sandbox.run_isolated(
        argv,
        limits=sandbox.Limits(timeout_s=timeout_s, memory_gb=None, max_pids=4096),
        cwd=work,
        rw_paths=[work],
        ro_paths=[p for p in seen if Path(p).exists()],
        network=True,
        env={"UV_CACHE_DIR": str(work / ".uv-cache"), **certs},  # private cache: no poisoning other builds
        stream_output=show_progress(),
    )
    shutil.rmtree(work / ".uv-cache", ignore_errors=True)
    _reclaim(work)
    if result.killed_reason == "timeout":
        return None, ""
    return result.returncode, result.stderr_tail  # stdout is the lock


def _reclaim(work: Path) -> None:
    """Take back what the sandboxed build wrote (it ran as nobody): ours, and writable by us only."""
    uid, gid = os.getuid(), os.getgid()
    for root, dirs, files in os.walk(work):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                    continue  # a hard link to someone else's file must not change hands
                os.lchown(path, uid, gid)
                if not stat.S_ISLNK(info.st_mode):
                    os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o022)
    with contextlib.suppress(OSError):
        os.chown(work, uid, gid)


# ---------------------------------------------------------------------------
# inspecting and clearing (files only: no interpreter of an environment runs here)


def installed(site: Path) -> dict[str, str]:
    """Packages in an environment folder, read from ``*.dist-info/METADATA`` (never by running it)."""
    out: dict[str, str] = {}
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        fields = dict(_header(meta.read_text(errors="replace")))
        if "Name" in fields and "Version" in fields:
            out[canonicalize_name(fields["Name"])] = fields["Version"]
    return out


def _header(text: str) -> Iterator[tuple[str, str]]:
    """The ``Key: value`` lines of a METADATA header (up to the first blank line)."""
    for line in text.splitlines():
        if not line.strip():
            return
        key, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "\t")):
            yield key.strip(), value.strip()


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(root, name))
                total += info.st_size
    return total


def all_cached() -> list[PreparedEnv]:
    """Every complete environment in this machine's cache."""
    out = []
    for meta in sorted(envs_root().glob(f"*/{META_FILE}")):
        with contextlib.suppress(OSError, ValueError):
            out.append(PreparedEnv(meta.parent, EnvironmentLock.model_validate_json(meta.read_text()), False))
    return out


def clear(keys: Sequence[str] | None = None) -> int:
    """Remove the given environments (all when None), and leftovers of interrupted builds; bytes freed."""
    root = envs_root()
    victims = [root / k for k in keys] if keys is not None else [p for p in root.iterdir() if p.is_dir()]
    freed = 0
    for folder in victims:
        if folder.is_dir() and folder.parent == root:
            freed += folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return freed
