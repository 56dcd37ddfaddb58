"""Issue 10: a hostile submission, run by root, against the sandbox and the scoring parent.

One test (or a parametrised family) per attack class; each asserts the specific
outcome: the attempt is blocked, or the run is ``failed`` with the reason, the
earlier record stays byte-identical, nothing is left behind, and the parent's
memory stays bounded. Hostile submissions are generated in tmp folders.

Runner-level cases replace the parent's input writer with a tiny one (the
hostile children never look at the data), so each costs one worker start, not
a data load.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from itbench.errors import ItbenchError, SubmissionError
from itbench.harness import fixed_split, runcore, runner, sandbox, worker
from itbench.harness.record import SCHEMA, failure_path, record_path
from itbench.harness.sandbox import Limits, run_isolated
from itbench.harness.untrusted import (
    UntrustedOutput,
    clean_text,
    is_marker,
    read_predictions,
    read_status,
)

from .conftest import REPO

PY = sys.executable


def dumps(record: dict) -> str:
    """A record file as an earlier run (or an attacker with write access to results/) left it."""
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


SECRET = "HELD-OUT-RESPONSES-2.71828"


def run_py(code: str, workdir: Path, **kw) -> sandbox.IsolatedResult:
    limits = Limits(
        timeout_s=kw.pop("timeout_s", 60),
        memory_gb=kw.pop("memory_gb", None),
        cpu_threads=1,
        grace_s=1.0,
        max_pids=kw.pop("max_pids", 1024),
        disk_gb=kw.pop("disk_gb", None),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return run_isolated(
            [PY, "-c", textwrap.dedent(code)], limits=limits, cwd=workdir, stream_output=False, **kw
        )


def last_json(res: sandbox.IsolatedResult) -> dict:
    lines = [line for line in res.stdout_tail.splitlines() if line.startswith("{")]
    assert lines, (res.stdout_tail, res.stderr_tail)
    return json.loads(lines[-1])


# --- 1. root inside the sandbox ----------------------------------------------------

PRIVILEGE_PROBE = """
    import ctypes, errno, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    def call(fn, *args):
        rc = fn(*args)
        return "OK" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    out = {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()}
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    out["cap_eff"] = status["CapEff"].strip()
    out["cap_bnd"] = status["CapBnd"].strip()
    out["no_new_privs"] = status["NoNewPrivs"].strip()
    CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
    out["unshare_mount"] = call(libc.unshare, CLONE_NEWNS)
    out["unshare_user"] = call(libc.unshare, CLONE_NEWUSER)
    out["unshare_net"] = call(libc.unshare, CLONE_NEWNET)
    MNT_DETACH, MS_REMOUNT, MS_BIND = 2, 32, 4096
    out["umount_tmp"] = call(libc.umount2, b"/tmp", MNT_DETACH)
    out["umount_root"] = call(libc.umount2, b"/", MNT_DETACH)
    out["remount_rw"] = call(libc.mount, None, b"/", None, MS_REMOUNT | MS_BIND, None)
    out["mount_tmpfs"] = call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None)
    # sysctl: write back the value it already has (harmless should it ever succeed)
    path = "/proc/sys/kernel/randomize_va_space"
    try:
        value = open(path).read()
        with open(path, "w") as handle:
            handle.write(value)
        out["sysctl"] = "OK"
    except OSError as err:
        out["sysctl"] = errno.errorcode[err.errno]
    try:
        os.setuid(0)
        out["setuid0"] = "OK"
    except OSError as err:
        out["setuid0"] = errno.errorcode[err.errno]
    try:
        fd = os.open("/proc/sysrq-trigger", os.O_WRONLY)
        out["sysrq"] = "OK"
    except OSError as err:
        out["sysrq"] = errno.errorcode[err.errno]
    try:  # the operator's terminal, to inject keystrokes (TIOCSTI) or write past the output filter
        fd = os.open("/dev/tty", os.O_RDWR)
        out["tty"] = "OK"
    except OSError as err:
        out["tty"] = errno.errorcode[err.errno]
    print(json.dumps(out))
"""


def test_root_gets_nobody_without_capabilities_and_cannot_undo_the_sandbox(tmp_path, sandboxed):
    before = Path("/proc/sys/kernel/randomize_va_space").read_text()
    res = run_py(PRIVILEGE_PROBE, tmp_path)
    assert res.ok and res.sandboxed, res.stderr_tail
    seen = last_json(res)
    assert (seen["uid"], seen["gid"], seen["euid"]) == (65534, 65534, 65534)
    assert int(seen["cap_eff"], 16) == 0 and int(seen["cap_bnd"], 16) == 0
    assert seen["no_new_privs"] == "1"
    for attempt in (
        "unshare_mount",
        "unshare_user",
        "unshare_net",
        "umount_tmp",
        "umount_root",
        "remount_rw",
        "mount_tmpfs",
        "sysctl",
        "setuid0",
        "sysrq",
        "tty",
    ):
        assert seen[attempt] in ("EPERM", "EACCES", "ENOSPC", "EROFS", "EINVAL", "ENOENT", "ENXIO"), (
            attempt,
            seen,
        )
    assert Path("/proc/sys/kernel/randomize_va_space").read_text() == before


def test_control_root_unsandboxed_does_have_the_privileges(tmp_path):
    """The probe works: run directly by root it reports uid 0 and full capabilities."""
    if os.geteuid() != 0:
        pytest.skip("the control needs root (CI runs the suite as root)")
    # only the harmless first half: no unshare/umount/sysctl attempts on the host
    harmless = PRIVILEGE_PROBE.split("    CLONE_NEWNS")[0] + "    print(json.dumps(out))\n"
    res = run_py(harmless, tmp_path, unsandboxed=True)
    seen = last_json(res)
    assert seen["uid"] == 0 and int(seen["cap_eff"], 16) != 0


# --- 2. allow-list, not deny-list ----------------------------------------------------


@pytest.fixture
def two_checkouts(tmp_path):
    """A project (with .git, two submissions, a data home) and another checkout beside it."""
    project = tmp_path / "project"
    (project / ".git" / "objects").mkdir(parents=True)
    (project / ".git" / "objects" / "pack").write_text(SECRET)
    for name, text in (("mine", "MINE"), ("other", SECRET)):
        (project / "submissions" / name).mkdir(parents=True)
        (project / "submissions" / name / "model.py").write_text(f"# {text}\n")
    other = tmp_path / "other_checkout" / "benchmark"
    other.mkdir(parents=True)
    (other / "responses.npy").write_text(SECRET)
    cache = tmp_path / "home" / "cache" / "submissions"
    (cache / "mine").mkdir(parents=True)
    (cache / "other").mkdir(parents=True)
    (cache / "other" / "state.pt").write_text(SECRET)
    (tmp_path / "home" / "cache" / "predictions").mkdir()
    (tmp_path / "home" / "cache" / "predictions" / "x.npy").write_text(SECRET)
    work = tmp_path / "work"
    work.mkdir()
    return {"project": project, "other": other.parent, "cache": cache, "work": work, "tmp": tmp_path}


EXPLORE = """
    import json, os
    targets = {targets!r}
    found = {{}}
    for name, path in targets.items():
        try:
            found[name] = open(path).read() if os.path.isfile(path) else sorted(os.listdir(path))
        except OSError as err:
            found[name] = type(err).__name__
    # and a crawl of everything visible for the secret
    hits = []
    for top in {tops!r}:
        for root, dirs, files in os.walk(top):
            for f in files:
                try:
                    if {secret!r} in open(os.path.join(root, f), errors="ignore").read(4096):
                        hits.append(os.path.join(root, f))
                except OSError:
                    pass
    found["hits"] = hits
    print(json.dumps(found))
"""


def _explore(layout, **kw) -> dict:
    p = layout["project"]
    targets = {
        "git": str(p / ".git" / "objects" / "pack"),
        "other_submission": str(p / "submissions" / "other" / "model.py"),
        "submissions_dir": str(p / "submissions"),
        "other_checkout": str(layout["other"] / "benchmark" / "responses.npy"),
        "other_cache": str(layout["cache"] / "other" / "state.pt"),
        "predictions_cache": str(layout["cache"].parent / "predictions" / "x.npy"),
        "repo_git": str(REPO / ".git"),
        "repo_root": str(REPO),
    }
    # inside: crawl everything that could be visible; the control crawls only the test's folder
    tops = (
        [str(layout["tmp"])]
        if kw.get("unsandboxed")
        else ["/work", "/root", "/home", "/tmp", "/opt", "/srv", "/mnt", "/var", "/etc"]
    )
    code = EXPLORE.format(targets=targets, tops=tops, secret=SECRET)
    res = run_py(
        code,
        layout["work"],
        ro_paths=[p / "submissions" / "mine"],
        rw_paths=[layout["cache"] / "mine"],
        **kw,
    )
    assert res.ok, res.stderr_tail
    return last_json(res)


def test_only_what_the_worker_needs_is_visible(two_checkouts, sandboxed):
    seen = _explore(two_checkouts)
    assert seen["hits"] == []
    for name in ("git", "other_submission", "other_checkout", "other_cache", "predictions_cache", "repo_git"):
        assert seen[name] == "FileNotFoundError", (name, seen[name])
    assert seen["submissions_dir"] == ["mine"]  # only the mount point of its own folder
    # this checkout shows only what the worker needs: the package (and the venv when it lives here);
    # never benchmark/, leaderboard/, .git or the other submissions
    root = seen["repo_root"]
    assert root == "FileNotFoundError" or set(root) <= {"itbench", ".venv"}, root


def test_control_unsandboxed_sees_them_all(two_checkouts):
    seen = _explore(two_checkouts, unsandboxed=True)
    assert SECRET in seen["git"] and SECRET in seen["other_submission"] and SECRET in seen["other_cache"]
    assert len(seen["hits"]) >= 5


# --- 5. limits that count everything -------------------------------------------------

HOG = {
    "memfd": """
        import os, time
        fd = os.memfd_create("hog")
        for i in range(40):
            os.write(fd, b"\\x01" * (32 * 2**20))
            time.sleep(0.01)
        print("SURVIVED", flush=True)
    """,
    "dev_shm": """
        import time
        with open("/dev/shm/hog", "wb") as f:
            for i in range(40):
                f.write(b"\\x01" * (32 * 2**20)); f.flush()
                time.sleep(0.01)
        print("SURVIVED", flush=True)
    """,
}


@pytest.mark.parametrize("where", sorted(HOG))
@pytest.mark.parametrize("cgroup", ["cgroup", "no-cgroup"])
def test_memory_outside_rss_is_counted(tmp_path, sandboxed, where, cgroup, monkeypatch, marker, find_procs):
    """1.25 GiB in a memfd or /dev/shm against a 0.3 GiB limit: killed (cgroup) or refused (fallback)."""
    if cgroup == "no-cgroup":
        monkeypatch.setenv("ITBENCH_NO_CGROUP", "1")
    elif os.geteuid() != 0:
        pytest.skip("cgroups are made only when running as root")
    res = run_py(textwrap.dedent(HOG[where]) + f"# {marker}\n", tmp_path, memory_gb=0.3)
    assert "SURVIVED" not in res.stdout_tail
    assert res.killed_reason == "memory" or "No space left" in res.stderr_tail, res
    assert res.limiter.startswith("cgroup") == (cgroup == "cgroup")
    assert find_procs(marker) == []
    assert _leftover_cgroups() == []


def test_fork_bomb_is_capped(tmp_path, sandboxed, marker, find_procs):
    code = f"""
        import os, time, json  # {marker}
        made, err = 0, None
        for _ in range(400):
            try:
                pid = os.fork()
            except OSError as e:
                err = type(e).__name__
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            made += 1
        print(json.dumps({{"made": made, "err": err}}), flush=True)
    """
    res = run_py(code, tmp_path, max_pids=64)
    seen = last_json(res)
    assert seen["made"] < 64 and seen["err"] == "BlockingIOError", seen
    assert find_procs(marker) == []
    assert _leftover_cgroups() == []


def _leftover_cgroups() -> list[str]:
    """This process's per-run cgroups still on disk (each run must remove its own)."""
    from itbench.harness import limits

    found = []
    for controller in ("memory", "pids", ""):
        own = limits._own_path(controller)
        base = limits.CGROUP_ROOT / (controller or "unified")
        if own is not None and base.is_dir():
            folder = base / own.lstrip("/")
            found += [str(p) for p in folder.glob(f"itbench-{os.getpid()}-*")]
    return found


@pytest.mark.parametrize("shape", ["one_big_file", "many_files"])
def test_writable_folders_have_a_quota(tmp_path, sandboxed, shape):
    cache = tmp_path / "cache"
    code = {
        "one_big_file": f"""
            with open({str(cache / "big")!r}, "wb") as f:
                for _ in range(100):
                    f.write(b"\\x01" * 2**20)
            print("SURVIVED")
        """,
        "many_files": f"""
            import time
            for i in range(100):
                with open({str(cache)!r} + f"/f{{i}}", "wb") as f:
                    f.write(b"\\x01" * (2**20 - 4096))
                time.sleep(0.03)
            time.sleep(5)
            print("SURVIVED")
        """,
    }[shape]
    res = run_py(code, tmp_path / "work", rw_paths=[cache], disk_gb=0.03)
    assert res.killed_reason == "disk", res
    assert "SURVIVED" not in res.stdout_tail
    assert "disk quota" in res.describe()


# --- 3. the parent reads child outputs as hostile input -----------------------------

N, K = 58, 168


def _npy(path: Path, array: np.ndarray) -> None:
    np.save(path, array, allow_pickle=True)


def _make_output(kind: str, folder: Path, secret: Path) -> Path:
    """Craft one malformed predictions.npy in ``folder``; returns its path."""
    path = folder / "predictions.npy"
    if kind == "symlink_to_secret":
        _npy(secret, np.ones((N, K)))
        path.symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        if os.geteuid() == 0:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
        else:
            path.symlink_to("/dev/zero")
    elif kind == "huge_sparse":
        with open(path, "wb") as f:
            f.truncate(64 * 2**30)
    elif kind == "header_claims_huge":  # a well-formed header promising 10**9 rows
        header = np.lib.format.header_data_from_array_1_0(np.zeros((N, K)))
        header["shape"] = (10**9, K)
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(b"\0" * 4096)
    elif kind == "header_big_shape":
        np.save(path, np.zeros((2, 2)))
        raw = path.read_bytes().replace(b"(2, 2)", b"(99999999, 99999)"[:6])
        path.write_bytes(raw)
    elif kind == "pickle":
        _npy(path, np.array([{"a": 1}] * 3, dtype=object))
    elif kind == "truncated":
        np.save(path, np.zeros((N, K)))
        path.write_bytes(path.read_bytes()[:-100])
    elif kind == "wrong_shape":
        np.save(path, np.zeros((N, K + 1)))
    elif kind == "structured":
        np.save(path, np.zeros((N, K), dtype=[("a", "<f8")]))
    elif kind == "not_npy":
        path.write_bytes(b"\x93NUMPY\x01\x00" + b"\xff" * 200)
    elif kind == "header_eval":
        path.write_bytes(b"\x93NUMPY\x01\x00\x30\x00" + b"{'descr': __import__('os').system('id')}     \n")
    elif kind == "big_endian":
        np.save(path, np.zeros((N, K), dtype=">f8"))
    else:
        raise AssertionError(kind)
    return path


CRAFTED = [
    "symlink_to_secret",
    "fifo",
    "folder",
    "device",
    "huge_sparse",
    "header_claims_huge",
    "header_big_shape",
    "pickle",
    "truncated",
    "wrong_shape",
    "structured",
    "not_npy",
    "header_eval",
    "big_endian",
]


@pytest.mark.parametrize("kind", CRAFTED)
def test_crafted_predictions_are_refused_fast_and_small(tmp_path, kind):
    folder = tmp_path / "work"
    folder.mkdir()
    path = _make_output(kind, folder, tmp_path / "other_submission_predictions.npy")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    with pytest.raises(UntrustedOutput) as info:
        read_predictions(path, (N, K))
    assert time.monotonic() - t0 < 2.0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 50, f"parent memory grew {grown_mb:.0f} MB"
    assert str(info.value)


def test_good_predictions_are_read(tmp_path):
    array = np.random.default_rng(0).normal(size=(N, K)).astype(np.float32)
    np.save(tmp_path / "p.npy", array)
    out = read_predictions(tmp_path / "p.npy", (N, K))
    assert out.dtype == np.float64 and np.allclose(out, array)
    np.save(tmp_path / "f.npy", np.asfortranarray(array))
    assert np.allclose(read_predictions(tmp_path / "f.npy", (N, K)), array)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"{not json", "not valid JSON"),
        (b'{"ok": "yes"}', "ok"),
        (b'{"ok": true, "extra": 1}', "an unknown field"),
        (b'{"ok": false, "phase": "exfiltrate"}', "phase"),
        (b'{"ok": false, "error": "' + b"x" * 5000 + b'"}', "error"),
        (b"[" * 100000 + b"]" * 100000, "status.json is"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"ok": false}', "the submission process wrote an invalid status.json: phase missing"),
        (b'{"ok": false, "phase": "fit", "error": "x"}', "invalid status.json: error_type missing"),
        (b'{"ok": false, "phase": "fit", "error_type": "E", "where": "\\u001b[2J:1"}', "where"),
    ],
)
def test_malformed_status_is_refused(tmp_path, content, reason):
    (tmp_path / "status.json").write_bytes(content)
    with pytest.raises(UntrustedOutput, match="status.json") as info:
        read_status(tmp_path / "status.json")
    assert reason in str(info.value)


def test_status_symlink_fifo_and_huge_are_refused_without_blocking(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"ok": true}')
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "status.json").symlink_to(secret)
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / "status.json")
    (tmp_path / "c").mkdir()
    with open(tmp_path / "c" / "status.json", "wb") as f:
        f.truncate(2**30)
    for sub in ("a", "b", "c"):
        t0 = time.monotonic()
        with pytest.raises(UntrustedOutput):
            read_status(tmp_path / sub / "status.json")
        assert time.monotonic() - t0 < 1.0
    os.mkfifo(tmp_path / "COMPLETE")
    assert not is_marker(tmp_path / "COMPLETE")  # a FIFO marker neither hangs nor counts


def test_clean_text_strips_escapes_controls_and_bidi():
    hostile = "ok\x1b]0;title\x07\x1b[2J\x1b[1;31mred\x1b[0m\x00\x08\u202egnp.exe\r\nnext"
    out = clean_text(hostile)
    assert out == "okredgnp.exe\n\nnext"
    assert len(clean_text("y" * 100000, 1000)) < 1100


# --- 3 (through the runner): a failure, never a crash, a hang or a lost record -------


def _submission(root: Path, name: str, model: str, toml: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(textwrap.dedent(model))
    (folder / "submission.toml").write_text(f'name = "{name}"\n' + textwrap.dedent(toml))
    return folder


HONEST = """
    import numpy as np
    class M:
        def predict(self, images):
            return np.random.default_rng(0).normal(size=(images.shape[0], 168)).astype("float32")
    def build(ctx):
        return M()
"""


def _craft_model(body: str) -> str:
    """A model whose build() crafts files in the workdir, then exits so the worker writes nothing."""
    return (
        "import os, json, numpy as np\n"
        "def build(ctx):\n"
        "    w = os.getcwd()\n" + textwrap.indent(textwrap.dedent(body), "    ") + "    os._exit(0)\n"
    )


CHILD_ATTACKS = {
    "status_lies_ok_without_predictions": (
        "json.dump({'ok': True}, open('status.json', 'w'))\n",
        "wrote no predictions",
    ),
    "predictions_symlink_to_cache": (
        "json.dump({'ok': True}, open('status.json', 'w'))\n"
        "os.symlink('/root/.cache/itbench/cache/predictions/x.npy', 'predictions.npy')\n",
        "symbolic link",
    ),
    "status_fifo": ("os.mkfifo('status.json')\n", "not a regular file"),
    "predictions_fifo": (
        "json.dump({'ok': True}, open('status.json', 'w'))\nos.mkfifo('predictions.npy')\n",
        "not a regular file",
    ),
    "status_symlink": ("os.symlink('/etc/passwd', 'status.json')\n", "symbolic link"),
    "huge_header": (
        "json.dump({'ok': True}, open('status.json', 'w'))\n"
        "np.save('predictions.npy', np.zeros((2, 2)))\n"
        "d = open('predictions.npy','rb').read().replace(b'(2, 2)', b'(9**9,)')\n"
        "open('predictions.npy','wb').write(d)\n",
        "predictions",
    ),
    "sparse_10g": (
        "json.dump({'ok': True}, open('status.json', 'w'))\n"
        "f = open('predictions.npy', 'wb'); f.truncate(10 * 2**30); f.close()\n",
        "bytes, more than",
    ),
    "pickle": (
        "json.dump({'ok': True}, open('status.json', 'w'))\n"
        "np.save('predictions.npy', np.array([{'a': 1}] * 58), allow_pickle=True)\n",
        "not plain numbers",
    ),
    "status_wrong_types": (
        "open('status.json','w').write('{\"ok\": 1, \"fit_cached\": \"no\"}')\n",
        "malformed",
    ),
    "claims_weights_unavailable": (
        "json.dump({'ok': False, 'phase': 'build', 'error_type': 'WeightsUnavailable',"
        " 'error': 'no weights', 'hint': None}, open('status.json', 'w'))\n",
        "WeightsUnavailable in build",
    ),
    "escape_sequences_in_error": (
        "json.dump({'ok': False, 'phase': 'fit', 'error_type': 'E\\x1b[2J',"
        " 'error': '\\x1b]0;pwn\\x07' + 'A' * 1900}, open('status.json', 'w'))\n",
        "status.json is malformed: error_type",
    ),
}


@pytest.fixture
def tiny_runner(monkeypatch, tmp_path):
    """score_submission with a 1-pixel input writer, temp folders redirected and checked empty."""
    import tempfile

    from itbench.scoring.benchmark import load_benchmark

    try:
        bench = load_benchmark("demo")
        bench.responses("val")
    except (ItbenchError, FileNotFoundError) as err:
        pytest.skip(f"demo benchmark not available: {err}")

    def tiny_inputs(workdir, inputs, split, need_train, log):
        n = len(inputs.stimulus_ids(split))
        np.save(workdir / worker.EVAL_IMAGES, np.zeros((n, 3, 1, 1), np.float32))

    monkeypatch.setattr(fixed_split, "_write_inputs", tiny_inputs)
    scratch = tmp_path / "runner-tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    results = tmp_path / "results"
    subs = tmp_path / "submissions"

    def run(folder: Path, **kw):
        opts = {"split": "val", "device": "cpu", "results_root": results, "n_boot": 10, "use_cache": False}
        opts["submissions_root"] = subs
        opts.update(kw)
        record = runner.score_submission(folder, "demo", log=lambda msg: None, **opts)
        assert list(scratch.iterdir()) == []
        return record

    run.results = results  # type: ignore[attr-defined]
    run.subs = subs  # type: ignore[attr-defined]
    return run


def _own_cache(sub_id: str) -> Path:
    """The own cache of a sandboxed fixed-split run of ``sub_id`` on the demo (its exposure's namespace)."""
    from itbench.scoring.benchmark import load_benchmark

    return fixed_split.exposure_of(load_benchmark("demo")).namespace(sub_id, "sandboxed")


def _plant(results: Path, sub_id: str, split: str = "val") -> tuple[Path, bytes]:
    path = record_path(results, "demo", sub_id, split)
    record = {
        "schema": SCHEMA,
        "kind": "submission",
        "status": "ok",
        "error": None,
        "submission": {"id": sub_id, "name": sub_id, "table1_row": None, "code_hash": "0" * 40},
        "benchmark": {"id": "demo"},
        "split": split,
        "scores": {"mean_r": 0.42},
        "created": "2026-01-01T00:00:00+00:00",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(record))
    return path, path.read_bytes()


@pytest.mark.parametrize("attack", sorted(CHILD_ATTACKS))
def test_crafted_child_outputs_fail_the_run_with_the_reason(tiny_runner, sandboxed, attack, capfd):
    body, reason = CHILD_ATTACKS[attack]
    sub = _submission(tiny_runner.subs, attack.replace("_", "-"), _craft_model(body))
    good, good_bytes = _plant(tiny_runner.results, sub.name)
    t0 = time.monotonic()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record = tiny_runner(sub)
    assert time.monotonic() - t0 < 120
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024 < 200
    assert record.status == "failed", record  # never skipped, never ok
    assert reason in record.error, record.error
    assert "\x1b" not in record.error and len(record.error) <= 2100
    assert good.read_bytes() == good_bytes and Path(record.path) == failure_path(good)
    assert "\x1b" not in capfd.readouterr().err


def test_skipped_comes_only_from_the_parent(tiny_runner, sandboxed, monkeypatch):
    """Weights the parent cannot get before launch: skipped, and the child never ran."""
    from itbench.errors import WeightsUnavailable

    ran = tiny_runner.subs.parent / "child-ran"
    sub = _submission(
        tiny_runner.subs,
        "needs-weights",
        f"open({str(ran)!r}, 'w')\n" + textwrap.dedent(HONEST),
        '[needs]\nweights = ["resnet50"]\n',
    )

    def no_weights(sub):
        raise WeightsUnavailable("resnet50 weights are not cached and the network is off")

    monkeypatch.setattr(runcore, "ensure_weights", no_weights)
    record = tiny_runner(sub)
    assert record.status == "skipped" and "not cached" in record.error
    assert not ran.exists()


def test_planted_symlink_in_own_cache_cannot_redirect_the_parent(tiny_runner, sandboxed, tmp_path):
    """A previous run left its own cache's fitted -> elsewhere; --no-cache must not delete there."""

    sub = _submission(tiny_runner.subs, "planter", HONEST)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    own = _own_cache("planter")
    own.mkdir(parents=True, exist_ok=True)
    (own / "fitted").symlink_to(victim, target_is_directory=True)
    try:
        record = tiny_runner(sub)
    finally:
        (own / "fitted").unlink()
    assert record.status == "failed" and "is not a folder" in record.error
    assert (victim / "keep.txt").read_text() == "precious"


def test_chown_of_the_cache_never_follows_a_planted_link(tiny_runner, sandboxed, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the cache is handed to nobody only when the parent runs as root")

    target = tmp_path / "root-owned.txt"
    target.write_text("x")
    sub = _submission(tiny_runner.subs, "linker", HONEST)
    own = _own_cache("linker")
    own.mkdir(parents=True, exist_ok=True)
    (own / "link").symlink_to(target)
    try:
        record = tiny_runner(sub)
    finally:
        (own / "link").unlink()
    assert record.status == "ok", record.error
    assert os.stat(target).st_uid == 0 and os.lstat(own).st_uid == sandbox.SANDBOX_UID


# --- 4. metadata and identity -----------------------------------------------------------


def test_outside_folder_cannot_overwrite_an_inside_record(tiny_runner, sandboxed, tmp_path):
    inside = _submission(tiny_runner.subs, "pixels_ridge", HONEST)
    good, good_bytes = _plant(tiny_runner.results, "pixels_ridge")
    outside = _submission(tmp_path / "elsewhere", "pixels_ridge", HONEST)
    record = tiny_runner(outside)
    assert record.status == "ok"
    assert record.submission.id.startswith("external-pixels_ridge-")
    assert Path(record.path).name.startswith("external-pixels_ridge-")
    assert good.read_bytes() == good_bytes
    assert tiny_runner(inside).submission.id == "pixels_ridge"


def test_score_all_reports_a_bad_folder_and_scores_the_rest(tiny_runner, sandboxed, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from itbench.cli import cli

    project = tmp_path / "project"
    (project / "submissions").mkdir(parents=True)
    (project / "benchmark").symlink_to(REPO / "benchmark", target_is_directory=True)
    monkeypatch.setenv("ITBENCH_ROOT", str(project))
    monkeypatch.setenv("ITBENCH_RESULTS", str(tmp_path / "all-results"))
    _submission(project / "submissions", "a_good", HONEST)
    _submission(project / "submissions", "b_bad", HONEST, '[limits]\nmemory_gb = "4"\n')
    _submission(project / "submissions", "c_bad", HONEST, 'needs = "gpu"\n')
    _submission(project / "submissions", "d_good", HONEST)
    result = CliRunner().invoke(cli, ["score", "--all", "-b", "demo", "--n-boot", "10", "--device", "cpu"])
    assert "b_bad" in result.output and "limits.memory_gb" in result.output
    assert "c_bad" in result.output and "`needs`" in result.output
    assert result.output.count(": OK") == 2, result.output
    assert (tmp_path / "all-results" / "demo" / "a_good.json").exists()
    assert (tmp_path / "all-results" / "demo" / "d_good.json").exists()
    assert result.exit_code == 1  # something was wrong, and it says so


# --- 2. fail closed, and unsandboxed runs kept apart ------------------------------------


def test_no_bwrap_refuses_before_anything_runs(tiny_runner, monkeypatch):
    monkeypatch.delenv(sandbox.NO_SANDBOX_ENV, raising=False)
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    sub = _submission(tiny_runner.subs, "refused", HONEST)
    with pytest.raises(sandbox.SandboxUnavailable, match="refusing") as info:
        tiny_runner(sub)
    assert "apt-get install bubblewrap" in str(info.value)
    assert not record_path(tiny_runner.results, "demo", "refused", "val").exists()


def test_unsandboxed_run_is_marked_and_never_feeds_a_sandboxed_one(tiny_runner, sandboxed):
    sub = _submission(tiny_runner.subs, "own-code", HONEST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = tiny_runner(sub, unsandboxed=True, use_cache=True)
        assert first.provenance.sandboxed is False
        again = tiny_runner(sub, unsandboxed=True, use_cache=True)
    assert again.provenance.predictions_cached is True  # the cache works ...
    second = tiny_runner(sub, use_cache=True)
    assert second.provenance.predictions_cached is False  # ... but not across trust levels
    assert second.provenance.sandboxed is True


def test_unsandboxed_records_rank_below_sandboxed_ones():
    from itbench.page.leaderboard import _rank, parse_submission

    def rec(sub_id: str, r: float, sandboxed: bool) -> dict:
        return {
            "schema": SCHEMA,
            "kind": "submission",
            "status": "ok",
            "split": "val",
            "benchmark": {"id": "demo", "synthetic": True},
            "submission": {"id": sub_id, "name": sub_id},
            "scores": {"mean_r": r, "mean_ev": r, "median_r": r, "median_ev": r},
            "provenance": {"sandboxed": sandboxed},
        }

    subs = [
        parse_submission(rec("cheater", 1.0, False), "a.json"),
        parse_submission(rec("honest", 0.1, True), "b.json"),
        parse_submission(rec("honest2", 0.3, True), "c.json"),
    ]
    order = [(rank, s.sub_id) for rank, s in _rank(subs)]
    assert order == [(1, "honest2"), (2, "honest"), (3, "cheater")]


# --- 6. a broken submission fails fast, before data --------------------------------------


@pytest.mark.parametrize(
    "model, fragment",
    [
        ("import numpy\ndef build(ctx)\n    return 1\n", "model.py line 2: SyntaxError"),
        ("def make(ctx):\n    return 1\n", "does not define build"),
        ("import numpy\n\nraise RuntimeError('broken at import')\ndef build(ctx):\n    pass\n", "model.py:3"),
    ],
)
def test_broken_submission_fails_in_seconds_naming_file_and_line(
    tiny_runner, sandboxed, monkeypatch, model, fragment
):
    loaded = []
    from itbench.harness import fixed_split

    real = fixed_split._write_inputs
    monkeypatch.setattr(fixed_split, "_write_inputs", lambda *a, **k: (loaded.append(1), real(*a, **k)))
    sub = _submission(tiny_runner.subs, "broken", model)
    t0 = time.monotonic()
    record = tiny_runner(sub)
    assert record.status == "failed" and fragment in record.error, record.error
    if "raise" not in model:  # found in the parent: no data written, no child started
        assert loaded == [] and time.monotonic() - t0 < 10
    else:  # found by the worker: the full traceback is in the record
        assert "Traceback" in (record.error_traceback or "")
        assert "Traceback" not in record.error


# --- 7. the test split is guarded and counted --------------------------------------------


def test_test_split_needs_confirmation_and_is_counted(tiny_runner, sandboxed, tmp_path):
    from itbench.page.leaderboard import render

    sub = _submission(tiny_runner.subs, "finalist", HONEST)
    with pytest.raises(ItbenchError, match="--confirm-test"):
        tiny_runner(sub, split="test")
    assert not record_path(tiny_runner.results, "demo", "finalist", "test").exists()
    counts = [tiny_runner(sub, split="test", confirm_test=True).test_evaluations for _ in range(2)]
    assert counts == [1, 2]
    out = tmp_path / "page"
    render(tiny_runner.results, out, ["demo"], REPO / "benchmark" / "table1.csv")
    assert "test evaluations: 2" in (out / "index.html").read_text()
    assert "test evaluations: 2" in (out / "README.md").read_text()
    rows = [r for r in json.loads((out / "results.json").read_text()) if r["split"] == "test"]
    assert rows[0]["test_evaluations"] == 2


# --- 5. published formats are safe against hostile text ---------------------------------


def test_published_formats_escape_hostile_metadata_and_errors(tmp_path):
    import csv
    import io

    from itbench.page.leaderboard import render

    hostile_name = "<script>alert(1)</script> | =cmd|' /C calc'!A0 [x](javascript:alert(1))"
    hostile_error = '=HYPERLINK("http://evil")\n| injected | row |\n<img src=x onerror=alert(1)>'
    results = tmp_path / "results"
    for i, (status, error) in enumerate((("ok", None), ("failed", hostile_error))):
        record = {
            "schema": SCHEMA,
            "kind": "submission",
            "status": status,
            "error": error,
            "split": "val",
            "created": "2026-01-01T00:00:00+00:00",
            "benchmark": {"id": "demo", "synthetic": True},
            "submission": {"id": f"evil{i}", "name": hostile_name, "table1_row": None},
            "scores": {"mean_r": 0.5, "mean_ev": 0.1, "median_r": 0.5, "median_ev": 0.1}
            if status == "ok"
            else None,
            "provenance": {"sandboxed": True},
        }
        path = results / "demo" / f"evil{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(record))
    out = tmp_path / "page"
    render(results, out, ["demo"], REPO / "benchmark" / "table1.csv")
    html = (out / "index.html").read_text()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    for page in (out / "submissions" / "demo").glob("*.html"):
        text = page.read_text()
        assert "<script>alert(1)" not in text and "<img src=x" not in text
    md = (out / "README.md").read_text()
    rows = [line for line in md.splitlines() if "evil" in line and line.startswith("|")]
    header = next(line for line in md.splitlines() if line.startswith("| Rank"))
    cells = lambda line: len(line.replace("\\|", "").split("|"))  # noqa: E731
    assert rows and all(cells(line) == cells(header) for line in rows)
    assert "<script>" not in md.split("\n## ")[1] and "<img" not in md  # the tables' section
    assert md.count("](javascript:") == md.count("\\](javascript:")  # brackets escaped: no link
    for row in csv.DictReader(io.StringIO((out / "results.csv").read_text())):
        for value in row.values():
            assert not value.startswith(("=", "+", "@", "-")) or (value[0] == "-" and value[1:2].isdigit())
    json.loads((out / "results.json").read_text())
    assert stat.S_ISREG(os.stat(out / "results.json").st_mode)


def test_record_error_from_a_child_is_capped_and_clean(tiny_runner, sandboxed):
    model = """
        def build(ctx):
            raise RuntimeError("\\x1b[2J\\x1b]0;pwn\\x07" + "B" * 100000)
    """
    sub = _submission(tiny_runner.subs, "loud", model)
    record = tiny_runner(sub)
    assert record.status == "failed"
    assert "\x1b" not in record.error and "\x07" not in record.error
    assert len(record.error) <= 2100 and len(record.error_traceback or "") <= 8200


def test_submission_error_is_an_itbench_error():
    assert issubclass(UntrustedOutput, SubmissionError)


# --- what the parent reads from the submission's own folder ---------------------------


def test_submission_folder_contents_cannot_hang_or_bloat_the_parent(tmp_path):
    from itbench.harness.submission import load_submission

    sub = _submission(tmp_path / "submissions", "tricky", HONEST)
    os.mkfifo(sub / "pipe")
    (sub / "kcore").symlink_to("/proc/kcore")
    (sub / "zero").symlink_to("/dev/zero")
    (sub / "loop").symlink_to(sub / "loop")
    (sub / "up").symlink_to(tmp_path, target_is_directory=True)
    t0 = time.monotonic()
    first = load_submission(sub).code_hash()
    assert time.monotonic() - t0 < 5
    assert first == load_submission(sub).code_hash()
    (sub / "kcore").unlink()
    (sub / "kcore").symlink_to("/etc/hostname")
    assert load_submission(sub).code_hash() != first  # links count by their target text
    (sub / "submission.toml").rename(sub / "real.toml")
    (sub / "submission.toml").symlink_to(sub / "real.toml")
    with pytest.raises(SubmissionError, match="symbolic link"):
        load_submission(sub)


def test_a_submission_folder_that_links_to_held_out_data_is_refused(tiny_runner, sandboxed):
    """submissions/linked -> a folder inside the data home: binding it would show held-out data."""
    from itbench.paths import data_home

    planted = data_home() / "planted-sub"
    planted.mkdir()
    (planted / "submission.toml").write_text('name = "sneaky"\n')
    (planted / "model.py").write_text(textwrap.dedent(HONEST))
    tiny_runner.subs.mkdir(parents=True, exist_ok=True)
    (tiny_runner.subs / "linked").symlink_to(planted, target_is_directory=True)
    try:
        record = tiny_runner(tiny_runner.subs / "linked")
    finally:
        shutil.rmtree(planted)
    assert record.status == "failed" and "may not see" in record.error, record.error


def test_abstract_unix_sockets_of_the_host_are_unreachable(tmp_path, sandboxed):
    import socket
    import uuid

    name = f"\0itbench-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(1)
    try:
        code = f"""
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect({name!r}); print("CONNECTED")
            except OSError as err:
                print("BLOCKED", type(err).__name__)
        """
        res = run_py(code, tmp_path)
    finally:
        server.close()
    assert "BLOCKED" in res.stdout_tail, res.stdout_tail + res.stderr_tail


def test_links_left_in_the_workdir_do_not_steer_the_cleanup(tiny_runner, sandboxed, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    body = (
        f"os.symlink({str(victim)!r}, 'dirlink')\n"
        f"os.symlink({str(victim / 'keep.txt')!r}, 'filelink')\n"
        "os.makedirs('deep/er'); os.symlink('/', 'deep/er/root')\n"
    )
    sub = _submission(tiny_runner.subs, "linker2", _craft_model(body))
    record = tiny_runner(sub)
    assert record.status == "failed"
    assert (victim / "keep.txt").read_text() == "precious"


def test_the_non_root_form_works_for_a_normal_user(tmp_path, sandboxed):
    """A user who is not root gets the one-bwrap form: same allow-list, uid 65534, no capabilities."""
    import shutil as _shutil
    import subprocess

    if os.geteuid() != 0 or not _shutil.which("setpriv") or not Path("/usr/bin/python3").exists():
        pytest.skip("impersonating a normal user needs root, setpriv and a system python3")
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="itbench-user-", dir="/tmp"))  # pytest's tmp is root-only
    work = top / "w"
    work.mkdir()
    os.chown(top, 65534, 65534)
    os.chown(work, 65534, 65534)
    code = (
        "import os; s = open('/proc/self/status').read();"
        "print(os.getuid(), s.split('CapEff:')[1].split()[0], sorted(os.listdir('/')))"
    )
    argv = sandbox.sandbox_argv(["/usr/bin/python3", "-c", code], rw_paths=[work], cwd=work, as_root=False)
    assert "setpriv" not in " ".join(argv) and argv.count(argv[0]) == 1
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    try:
        proc = subprocess.run(user + argv, capture_output=True, text=True, timeout=60)
    finally:
        _shutil.rmtree(top)
    assert proc.returncode == 0, proc.stderr
    uid, caps, listing = proc.stdout.split(" ", 2)
    assert uid == "65534" and int(caps, 16) == 0
    assert "work" not in listing and "root" not in listing


def test_a_flooded_own_cache_is_emptied_before_the_next_run(tiny_runner, sandboxed):
    """An earlier run left its cache over the quota: the next one starts from an empty namespace."""

    sub = _submission(tiny_runner.subs, "flooder", HONEST, "[limits]\ndisk_gb = 0.01\n")
    own = _own_cache("flooder")
    own.mkdir(parents=True, exist_ok=True)
    (own / "junk.bin").write_bytes(b"\x01" * (20 * 2**20))
    record = tiny_runner(sub)
    assert record.status == "ok", record.error
    assert not (own / "junk.bin").exists()


def test_a_claimed_cached_fit_is_checked_by_the_parent(tiny_runner, sandboxed):
    body = (
        "np.save('predictions.npy', np.random.default_rng(0).normal(size=(58, 168)))\n"
        "json.dump({'ok': True, 'fit_cached': True}, open('status.json', 'w'))\n"
    )
    sub = _submission(tiny_runner.subs, "liar", _craft_model(body))
    record = tiny_runner(sub)
    assert record.status == "ok", record.error
    assert record.provenance.fit_cached is False  # no fitted state existed before the run


def test_every_protocol_keys_its_caches_by_trust_level(monkeypatch) -> None:
    """Fixed-split and brainscore runs share one rule: unsandboxed caches are never a sandboxed run's."""
    import inspect

    from itbench.harness import brainscore_protocol, fixed_split, runcore

    monkeypatch.delenv("ITBENCH_NO_SANDBOX", raising=False)
    assert runcore.trust_level(runcore.RunOptions()) == "sandboxed"
    assert runcore.trust_level(runcore.RunOptions(unsandboxed=True)) == "unsandboxed"
    assert (
        runcore.run_provenance(runcore.RunOptions(unsandboxed=True), "cpu", "full", {})["sandboxed"] is False
    )
    import ast

    for module in (
        fixed_split,
        brainscore_protocol,
    ):  # each place that derives a fit key passes the trust level
        keys = [
            node.value
            for node in ast.walk(ast.parse(inspect.getsource(module)))
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "fit_key" for t in node.targets)
            and isinstance(node.value, ast.Call)
        ]
        assert keys, module.__name__
        for call in keys:
            assert "trust_level(opts)" in [ast.unparse(a) for a in call.args], module.__name__
    # and the own cache's namespace is per trust level too
    shown = runcore.Exposure.nothing()
    assert shown.namespace("x", "sandboxed") != shown.namespace("x", "unsandboxed")
