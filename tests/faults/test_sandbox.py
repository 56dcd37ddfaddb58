"""Fault injection against ``itbench.harness.sandbox.run_isolated`` with small hostile children.

Each hostile child is a ``python -c`` program. Where the sandbox is supposed to
block something, the same program is also run unsandboxed as a control, so a
test that "passes" because the probe itself is broken would fail the control.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from itbench.harness import sandbox
from itbench.harness.sandbox import IsolatedResult, Limits, child_env, run_isolated, sandbox_argv

PY = sys.executable
SECRET = "HELD-OUT-RESPONSES-3.14159"


def run_py(
    code: str,
    workdir: Path,
    *,
    timeout_s: float = 30,
    memory_gb: float | None = None,
    grace_s: float = 1.0,
    rlimit_as: bool = False,
    **kw,
) -> IsolatedResult:
    """Run a python snippet isolated, quietly (no streaming into pytest's output)."""
    limits = Limits(
        timeout_s=timeout_s, memory_gb=memory_gb, cpu_threads=1, grace_s=grace_s, rlimit_as=rlimit_as
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unsandboxed-mode warning
        return run_isolated(
            [PY, "-c", textwrap.dedent(code)],
            limits=limits,
            cwd=workdir,
            stream_output=kw.pop("stream_output", False),
            **kw,
        )


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """A data home with a secret, a cache dir inside it, a read-only folder, a workdir."""
    home = tmp_path / "itbench_home"
    (home / "demo").mkdir(parents=True)
    (home / "demo" / "assembly.nc").write_text(SECRET)
    cache = home / "cache" / "fitted"
    cache.mkdir(parents=True)
    (cache / "other_submission.pt").write_text(SECRET)
    ro = tmp_path / "submission"
    ro.mkdir()
    (ro / "model.py").write_text("VALUE = 1\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("ITBENCH_HOME", str(home))
    return {
        "home": home,
        "cache": cache / "mine",
        "ro": ro,
        "work": work,
        "secret": home / "demo" / "assembly.nc",
    }


# --- what the child may see ------------------------------------------------


def test_hidden_file_cannot_be_read(layout, sandboxed):
    code = f"""
        try:
            print(open({str(layout["secret"])!r}).read())
        except (FileNotFoundError, PermissionError) as err:
            print('BLOCKED', type(err).__name__)
    """
    res = run_py(code, layout["work"], hidden_paths=[layout["home"]])
    assert res.sandboxed and res.ok
    assert "BLOCKED FileNotFoundError" in res.stdout_tail
    assert SECRET not in res.stdout_tail + res.stderr_tail


def test_control_unsandboxed_child_does_read_it(layout, monkeypatch):
    """The control: without the sandbox the same probe leaks (so the probe works)."""
    monkeypatch.setenv(sandbox.NO_SANDBOX_ENV, "1")
    code = f"print(open({str(layout['secret'])!r}).read())"
    with pytest.warns(RuntimeWarning, match="NOT sandboxed"):
        res = run_isolated(
            [PY, "-c", code],
            limits=Limits(30),
            cwd=layout["work"],
            hidden_paths=[layout["home"]],
            stream_output=False,
        )
    assert not res.sandboxed
    assert SECRET in res.stdout_tail


def test_data_home_listing_is_empty_and_env_has_no_itbench_home(layout, sandboxed):
    code = f"""
        import os, json
        home = {str(layout["home"])!r}
        seen = []
        for root, dirs, files in os.walk(home):
            seen += [os.path.join(root, f) for f in files]
        print(json.dumps({{'files': seen, 'env': os.environ.get('ITBENCH_HOME')}}))
    """
    res = run_py(
        code,
        layout["work"],
        hidden_paths=[layout["home"]],
        rw_paths=[layout["cache"]],
        env={"ITBENCH_HOME": str(layout["home"])},
    )
    assert res.ok, res.stderr_tail
    import json

    out = json.loads(res.stdout_tail.strip().splitlines()[-1])
    assert out == {"files": [], "env": None}


def test_cache_under_hidden_home_is_writable_but_siblings_stay_hidden(layout, sandboxed):
    code = f"""
        import os
        open(os.path.join({str(layout["cache"])!r}, 'state.txt'), 'w').write('fitted')
        print(sorted(os.listdir(os.path.dirname({str(layout["cache"])!r}))))
    """
    res = run_py(code, layout["work"], hidden_paths=[layout["home"]], rw_paths=[layout["cache"]])
    assert res.ok, res.stderr_tail
    assert (layout["cache"] / "state.txt").read_text() == "fitted"
    assert "other_submission.pt" not in res.stdout_tail
    assert res.stdout_tail.strip() == "['mine']"


def test_read_only_path_is_readable_not_writable(layout, sandboxed):
    code = f"""
        import os
        ro = {str(layout["ro"])!r}
        print('READ', open(os.path.join(ro, 'model.py')).read().strip())
        for target in (os.path.join(ro, 'model.py'), os.path.join(ro, 'new.txt'),
                       {str(sandbox.__file__)!r}, {PY!r}):
            try:
                open(target, 'a').write('x')
                print('WROTE', target)
            except OSError as err:
                print('DENIED', err.errno)
    """
    res = run_py(code, layout["work"], ro_paths=[layout["ro"]])
    assert res.ok, res.stderr_tail
    assert "READ VALUE = 1" in res.stdout_tail
    assert "WROTE" not in res.stdout_tail
    # EROFS (read-only mount) or EACCES (nobody may not write root's files): both refusals
    assert res.stdout_tail.count("DENIED 30") + res.stdout_tail.count("DENIED 13") == 4
    assert (layout["ro"] / "model.py").read_text() == "VALUE = 1\n"
    assert not (layout["ro"] / "new.txt").exists()


def test_workdir_is_writable_home_and_cwd(layout, sandboxed):
    code = """
        import os, pathlib
        pathlib.Path('out.txt').write_text('ok')
        print(os.getcwd() == os.environ['HOME'], os.getcwd())
    """
    res = run_py(code, layout["work"])
    assert res.ok, res.stderr_tail
    assert (layout["work"] / "out.txt").read_text() == "ok"
    assert res.stdout_tail.split()[0] == "True"


def test_tmp_is_private_and_users_home_hidden(layout, sandboxed, tmp_path):
    outside = Path("/tmp") / f"itbench-visible-{os.getpid()}.txt"
    outside.write_text(SECRET)
    # something in the user's home that is not on the way to the Python installation
    in_home = next(
        (
            p
            for p in sorted(Path.home().iterdir())
            if not any(q.is_relative_to(p) for q in sandbox.python_paths())
        ),
        Path.home() / ".bashrc",
    )
    try:
        code = f"""
            import os
            print(os.path.exists({str(outside)!r}), os.path.exists({str(in_home)!r}))
            open('/tmp/scratch', 'w').write('x')
            try:
                open({str(Path.home())!r} + '/planted', 'w').write('x')
            except OSError as err:
                print('DENIED', err.errno)
        """
        res = run_py(code, layout["work"])
    finally:
        outside.unlink()
    assert res.ok, res.stderr_tail
    assert res.stdout_tail.split() in (["False", "False", "DENIED", "30"], ["False", "False", "DENIED", "13"])
    assert not Path("/tmp/scratch").exists()


def test_parent_environment_and_processes_are_invisible(layout, sandboxed, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    code = f"""
        import os
        pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
        me = {os.getpid()}
        print('PARENT_VISIBLE', os.path.exists(f'/proc/{{me}}/environ') and me in pids)
        print('NPROC', len(pids))
        print('ENV', sorted(os.environ))
    """
    res = run_py(code, layout["work"])
    assert res.ok, res.stderr_tail
    assert SECRET not in res.stdout_tail
    assert "AWS_SECRET_ACCESS_KEY" not in res.stdout_tail
    assert "PARENT_VISIBLE False" in res.stdout_tail
    nproc = int(res.stdout_tail.split("NPROC")[1].split()[0])
    assert nproc <= 3  # bwrap's init, python (own PID namespace)


def test_network_is_blocked_but_not_in_control(layout, mode):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = f"""
        import socket
        try:
            socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'leak')
            print('CONNECTED')
        except OSError as err:
            print('BLOCKED', type(err).__name__)
    """
    try:
        res = run_py(code, layout["work"])
        try:
            conn, _ = server.accept()
            conn.close()
            accepted = True
        except TimeoutError:
            accepted = False
    finally:
        server.close()
    assert res.ok, res.stderr_tail
    if mode == "sandboxed":
        assert "BLOCKED" in res.stdout_tail and not accepted
    else:
        assert "CONNECTED" in res.stdout_tail and accepted


# --- resource limits and crashes -------------------------------------------


def test_hang_is_killed_at_timeout(layout, mode, marker, find_procs):
    code = f"""
        import signal, time  # {marker}
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ignore the polite kill
        print('READY', flush=True)
        time.sleep(300)
    """
    t0 = time.monotonic()
    res = run_py(code, layout["work"], timeout_s=1.5, grace_s=0.5)
    elapsed = time.monotonic() - t0
    assert res.killed_reason == "timeout" and res.timed_out
    assert res.returncode is not None and res.returncode != 0
    assert "READY" in res.stdout_tail
    # killed no earlier than the 1.5 s limit, and well before the 300 s sleep would end
    assert 1.5 <= res.wall_s < 10 and elapsed < 12
    assert "timed out" in res.describe()
    assert find_procs(marker) == []


def test_memory_limit_kills_a_growing_child(layout, mode, marker, find_procs):
    code = f"""
        import time  # {marker}
        hog = []
        for _ in range(60):                     # up to 3 GiB, 50 MiB at a time
            hog.append(b'\\x01' * (50 * 2**20))
            time.sleep(0.02)
        print('SURVIVED')
    """
    res = run_py(code, layout["work"], memory_gb=0.25)
    assert res.killed_reason == "memory", res
    assert "SURVIVED" not in res.stdout_tail
    assert 0.25 <= res.peak_rss_gb < 3.0
    assert "memory limit" in res.describe()
    assert find_procs(marker) == []


@pytest.mark.parametrize("cgroup", ["cgroup", "no-cgroup"])
def test_private_tmp_is_capped_at_the_memory_limit(layout, sandboxed, cgroup, monkeypatch):
    """tmpfs pages are RAM the RSS poll cannot see: the cgroup charges them (the run is
    killed for memory); without a cgroup /tmp's size is the memory limit (ENOSPC)."""
    if cgroup == "no-cgroup":
        monkeypatch.setenv("ITBENCH_NO_CGROUP", "1")
    elif os.geteuid() != 0:
        pytest.skip("cgroups are made only when running as root")
    code = """
        import errno
        chunk = b'\\x01' * (50 * 2**20)
        written = 0
        try:
            with open('/tmp/fill', 'wb') as handle:
                for _ in range(40):
                    handle.write(chunk)
                    handle.flush()
                    written += len(chunk)
        except OSError as err:
            print('FULL', errno.errorcode[err.errno], written // 2**20)
    """
    res = run_py(code, layout["work"], memory_gb=0.25)
    if cgroup == "cgroup":
        assert res.limiter.startswith("cgroup"), res.limiter
        assert res.killed_reason == "memory", res
        assert "FULL" not in res.stdout_tail
    else:
        assert res.limiter == "rss poll"
        full = res.stdout_tail.split()
        assert res.killed_reason == "memory" or (full[:2] == ["FULL", "ENOSPC"] and int(full[2]) <= 256), res


def test_rlimit_as_option_turns_allocation_into_memory_error(layout):
    code = "x = b'\\x01' * (2 * 2**30)\nprint('SURVIVED')"
    res = run_py(code, layout["work"], memory_gb=0.5, rlimit_as=True)
    assert res.killed_reason == "memory"
    assert "MemoryError" in res.stderr_tail and "SURVIVED" not in res.stdout_tail


def test_exit_status_is_reported(layout, mode):
    res = run_py("import sys; print('bye'); sys.exit(3)", layout["work"])
    assert res.returncode == 3 and res.killed_reason is None and not res.ok
    assert res.stdout_tail == "bye\n"
    assert res.describe() == "exited with status 3"


def test_segfault_is_reported_as_signal(layout, mode):
    res = run_py("import os; os.kill(os.getpid(), 11)", layout["work"])
    assert res.returncode == -signal.SIGSEGV
    assert res.killed_reason == "signal"
    assert "SIGSEGV" in res.describe()


def test_grandchildren_do_not_survive(layout, mode, marker, find_procs):
    """A child that daemonises workers (own session, detached) and exits at once."""
    code = f"""
        import subprocess, sys
        for _ in range(3):
            subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', {marker!r}],
                             start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        import time; time.sleep(0.5)
        print('SPAWNED')
    """
    res = run_py(code, layout["work"])
    assert res.ok and "SPAWNED" in res.stdout_tail, res.stderr_tail
    deadline = time.monotonic() + 5
    while find_procs(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert find_procs(marker) == []


def test_ctrl_c_in_parent_kills_child_and_reraises(
    layout, mode, marker, tmp_path, find_procs, sigint_handled
):
    """SIGINT to a process running run_isolated: child tree gone, interrupt re-raised."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(f"""
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
        from itbench.harness.sandbox import Limits, run_isolated
        code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \\
               "'import time; time.sleep(300)', {marker!r}]); time.sleep(300)"
        try:
            run_isolated([sys.executable, '-c', code, {marker!r}], limits=Limits(120),
                         cwd={str(layout["work"])!r}, stream_output=False)
        except KeyboardInterrupt as err:
            print('INTERRUPTED', err.isolated_result.killed_reason, flush=True)
            raise
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(Path(sandbox.__file__).parents[1])}
    proc = subprocess.Popen(
        [PY, "-W", "ignore", str(driver)], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while len(find_procs(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(find_procs(marker)) >= 2, "child and grandchild never started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "INTERRUPTED interrupted" in out
    assert "KeyboardInterrupt" in err and proc.returncode != 0
    assert find_procs(marker) == []


# --- output, warnings, the command line --------------------------------------


def test_output_is_streamed_capped_and_sanitised(layout, capfd, monkeypatch):
    """The terminal and the kept text get no escape sequences or control characters; a flood
    of output is cut to head + tail with a note, on the terminal and in the kept text."""
    monkeypatch.setattr(sandbox, "TERMINAL_CHARS", 30000)
    monkeypatch.setenv(sandbox.NO_SANDBOX_ENV, "1")
    code = """
        import sys
        for i in range(5):
            sys.stderr.write(f'\\rprogress {i}/5')
        sys.stderr.write('\\n')
        print('\\x1b]0;pwned-title\\x07\\x1b[2J\\x1b[31mRED\\x1b[0m\\x07\\x08BEL')
        print('HEAD-MARK')
        print('x' * 200000)
        print('END')
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = run_py(code, layout["work"], stream_output=True)
    captured = capfd.readouterr()
    assert "\rprogress 4/5" in captured.err  # tqdm-style bars still work
    for text in (captured.out, res.stdout_tail):
        assert "\x1b" not in text and "\x07" not in text and "\x08" not in text
        assert "pwned-title" not in text and "REDBEL" in text
        assert "HEAD-MARK" in text and text.rstrip().endswith("END")
        assert len(text) < 60000
    assert "characters of submission output not shown" in captured.out
    assert "characters omitted" in res.stdout_tail
    assert len(res.stdout_tail) <= 16200


def test_unsandboxed_path_warns_loudly(layout, monkeypatch, caplog):
    monkeypatch.setenv(sandbox.NO_SANDBOX_ENV, "1")
    with pytest.warns(RuntimeWarning, match="submission is NOT sandboxed"):
        res = run_isolated([PY, "-c", "pass"], limits=Limits(30), cwd=layout["work"], stream_output=False)
    assert res.ok and not res.sandboxed
    assert any("NOT sandboxed" in r.getMessage() for r in caplog.records)


def test_no_bubblewrap_refuses_with_the_install_command(layout, monkeypatch, marker, find_procs):
    """Fail closed: without bwrap nothing runs unless --unsandboxed was asked for."""
    monkeypatch.delenv(sandbox.NO_SANDBOX_ENV, raising=False)
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    ran = layout["work"] / "ran"
    with pytest.raises(
        sandbox.SandboxUnavailable, match="refusing to run a submission without a sandbox"
    ) as info:
        run_isolated(
            [PY, "-c", f"open({str(ran)!r}, 'w')  # {marker}"], limits=Limits(30), cwd=layout["work"]
        )
    assert "apt-get install bubblewrap" in str(info.value.hint) and "--unsandboxed" in str(info.value.hint)
    assert not ran.exists() and find_procs(marker) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = run_isolated(
            [PY, "-c", f"open({str(ran)!r}, 'w')"], limits=Limits(30), cwd=layout["work"], unsandboxed=True
        )
    assert res.ok and not res.sandboxed and ran.exists()


def test_available_is_cached_and_true_here(sandboxed):
    assert sandbox.available() is True
    assert sandbox.available() is True
    assert sandbox._probe_bwrap.cache_info().hits >= 1


def test_command_is_an_allow_list_without_privileges(tmp_path, sandboxed):
    repo, home = tmp_path / "repo", tmp_path / "home"
    for d in (repo / "benchmark", repo / "itbench", home / "cache" / "fitted", tmp_path / "w"):
        d.mkdir(parents=True)
    (repo / "secret.txt").write_text(SECRET)
    argv = sandbox_argv(
        ["true"],
        ro_paths=[repo],
        hidden_paths=[home, repo / "benchmark", repo / "secret.txt", tmp_path / "elsewhere"],
        rw_paths=[home / "cache" / "fitted"],
        cwd=tmp_path / "w",
    )
    joined = " ".join(argv)

    def index(flag: str, path: Path) -> int:
        offset = 1 if flag in ("--tmpfs", "--remount-ro") else 2  # FLAG DEST / FLAG SRC DEST
        for i in range(len(argv) - offset):
            if argv[i] == flag and argv[i + offset] == str(path.resolve()):
                return i
        raise AssertionError(f"{flag} {path} not in {argv}")

    assert "--ro-bind / /" not in joined and "--bind / /" not in joined  # no deny-list base
    assert index("--tmpfs", Path("/tmp")) < index("--ro-bind", repo)
    assert index("--ro-bind", repo) < index("--tmpfs", repo / "benchmark")
    assert index("--tmpfs", Path("/tmp")) < index("--bind", home / "cache" / "fitted")
    with pytest.raises(AssertionError):  # not bound, so nothing to hide
        index("--tmpfs", home)
    with pytest.raises(AssertionError):
        index("--tmpfs", tmp_path / "elsewhere")
    assert index("--tmpfs", repo / "benchmark") < index("--remount-ro", repo / "benchmark")
    assert argv[index("--ro-bind", repo / "secret.txt") + 1] == "/dev/null"
    assert "--remount-ro /" in joined and "--unshare-net" in argv and "--die-with-parent" in argv
    for flag in ("--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc"):
        assert flag in argv
    assert f"--uid {sandbox.SANDBOX_UID} --gid {sandbox.SANDBOX_UID}" in joined
    assert "--cap-drop ALL" in joined
    if os.geteuid() == 0:  # root drops to nobody on the host before the user namespace
        drop = argv.index("--reuid=65534") if "--reuid=65534" in argv else joined.index("setresuid")
        assert drop and argv.count(argv[0]) == 2  # outer and inner bwrap
    assert argv[-2:] == ["--", "true"]
    assert "--unshare-net" not in sandbox_argv(["true"], network=True)
    with pytest.raises(ValueError, match="both hidden and bound"):
        sandbox_argv(["true"], ro_paths=[repo], hidden_paths=[repo])


def test_child_env_is_minimal(tmp_path, monkeypatch):
    monkeypatch.setenv("ITBENCH_HOME", "/somewhere")
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    env = child_env(
        home=tmp_path,
        limits=Limits(10, cpu_threads=2),
        extra={"ITBENCH_HOME": "/x", "FOO": "bar"},
        weights_dir=tmp_path / "w",
    )
    assert "ITBENCH_HOME" not in env and "GITHUB_TOKEN" not in env
    assert env["HOME"] == str(tmp_path) and env["FOO"] == "bar"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["TORCH_HOME"] == env["HF_HOME"] == str(tmp_path / "w") and env["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("ITBENCH_RANDOM_WEIGHTS", "1")
    monkeypatch.setenv("ITBENCH_PROGRESS", "0")
    env = child_env(home=tmp_path)  # no weights_dir: the machine's own weight folders, offline
    assert env["TORCH_HOME"] == str(tmp_path / "th") and env["HF_HUB_OFFLINE"] == "1"
    assert env["ITBENCH_RANDOM_WEIGHTS"] == "1" and env["ITBENCH_PROGRESS"] == "0"
