"""Per-submission environments (harness/environments.py): declared, built with uv, cached, locked, read-only.

The fixtures in ``tests/env_submissions`` pin an older scikit-learn on numpy
1.26 (the worker must run there), add a package the base lacks (``tabulate``)
and ask for one no index has. Tests that build need PyPI and skip, saying so,
when it cannot be reached.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from itbench import api
from itbench.errors import SubmissionError
from itbench.harness import environments, sandbox
from itbench.harness.environments import EnvSpec
from itbench.harness.record import SubmissionRecord
from itbench.harness.submission import load_submission

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "env_submissions"
SKLEARN = "1.3.2"


def _pypi_reachable() -> str:
    """'' when uv's index answers, else why not."""
    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"
    try:
        with urllib.request.urlopen(f"{index.rstrip('/')}/tabulate/", timeout=15) as reply:
            return "" if reply.status == 200 else f"{index} answered {reply.status}"
    except OSError as err:
        return f"{index} unreachable: {err}"


@pytest.fixture(scope="module")
def pypi() -> None:
    reason = _pypi_reachable()
    if reason:
        pytest.skip(f"needs the package index to build environments ({reason})")
    if not sandbox.available():
        pytest.skip(f"needs the sandbox: {sandbox.unavailable_reason()}")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project tree whose submissions/ holds the fixtures, with its own data home (a fresh env cache)."""
    root = tmp_path / "project"
    (root / "submissions").mkdir(parents=True)
    (root / "benchmark").symlink_to(REPO / "benchmark")
    for folder in FIXTURES.iterdir():
        shutil.copytree(folder, root / "submissions" / folder.name)
    monkeypatch.setenv("ITBENCH_ROOT", str(root))
    monkeypatch.setenv("ITBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ITBENCH_RESULTS", str(tmp_path / "results"))
    return root


def _write_sub(folder: Path, toml_extra: str = "", requirements: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "submission.toml").write_text(f'name = "t"\n{toml_extra}')
    (folder / "model.py").write_text("def build(ctx):\n    return None\n")
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


# --- declaring, without a network ---------------------------------------------------------


def test_declared_from_requirements_txt_and_env_table(tmp_path: Path) -> None:
    txt = _write_sub(tmp_path / "a", requirements="# pinned\nscikit-learn == 1.3.2  # old\n\nnumpy<2\n")
    table = _write_sub(tmp_path / "b", '[env]\nrequirements = ["tabulate>=0.9"]\n')
    assert environments.declared(load_submission(txt)) == EnvSpec(
        ("scikit-learn==1.3.2", "numpy<2"), "requirements.txt"
    )
    assert environments.declared(load_submission(table)) == EnvSpec(
        ("tabulate>=0.9",), "submission.toml [env]"
    )
    assert environments.declared(load_submission(_write_sub(tmp_path / "c"))) is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("--index-url https://evil.example/simple", "options"),
        ("-e .", "options"),
        ("evil @ https://evil.example/evil-1.0-py3-none-any.whl", "URLs and paths"),
        ("not a requirement!", "not a requirement"),
    ],
)
def test_declared_refuses_options_urls_and_garbage(tmp_path: Path, line: str, problem: str) -> None:
    sub = load_submission(_write_sub(tmp_path / "s", requirements=f"numpy\n{line}\n"))
    with pytest.raises(SubmissionError, match=problem):
        environments.declared(sub)


def test_declaring_twice_is_refused(tmp_path: Path) -> None:
    sub = load_submission(_write_sub(tmp_path / "s", '[env]\nrequirements = ["numpy"]\n', "numpy\n"))
    with pytest.raises(SubmissionError, match="declares packages twice"):
        environments.declared(sub)


def test_key_follows_requirements_and_sdist_flag_only() -> None:
    a, b = EnvSpec(("numpy<2",), "x"), EnvSpec(("numpy<2",), "y")
    assert environments.env_key(a) == environments.env_key(b)
    assert environments.env_key(a) != environments.env_key(EnvSpec(("numpy<3",), "x"))
    assert environments.env_key(a) != environments.env_key(a, allow_sdists=True)


def test_lock_parsing_keeps_only_the_layered_entries_with_their_hashes() -> None:
    lock = (
        "joblib==1.6.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via scikit-learn\n"
        "Scikit_Learn==1.3.2 \\\n    --hash=sha256:cc\n"
        "numpy==1.26.4 ; python_version >= '3.9' \\\n    --hash=sha256:dd\n"
    )
    assert environments.parse_lock(lock) == {"joblib": "1.6.0", "scikit-learn": "1.3.2", "numpy": "1.26.4"}
    kept = environments._pins_with_hashes(lock, {"scikit-learn", "numpy"})
    assert "joblib" not in kept and "sha256:aa" not in kept and "# via" not in kept
    assert "Scikit_Learn==1.3.2 \\\n    --hash=sha256:cc" in kept and "sha256:dd" in kept


def test_installed_reads_metadata_files_and_never_runs_pth(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "Foo_Bar-1.2.dist-info").mkdir(parents=True)
    (site / "Foo_Bar-1.2.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.2\n\nName: not-this\n"
    )
    planted = tmp_path / "ran"
    (site / "evil.pth").write_text(f"import pathlib; pathlib.Path({str(planted)!r}).write_text('x')\n")
    assert environments.installed(site) == {"foo-bar": "1.2"}
    assert not planted.exists()


def test_base_packages_are_the_harness_environment() -> None:
    base = environments.base_packages()
    assert base["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert base["numpy"] == importlib.metadata.version("numpy")


def test_child_path_puts_the_environment_first(tmp_path: Path) -> None:
    env = sandbox.child_env(home=tmp_path, env_dir=tmp_path / "site")
    parts = env["PYTHONPATH"].split(os.pathsep)
    assert parts[0] == str(tmp_path / "site") and len(parts) == 2
    assert env[sandbox.ENV_DIR_VARIABLE] == str(tmp_path / "site")
    assert sandbox.ENV_DIR_VARIABLE not in sandbox.child_env(home=tmp_path)


# --- building and scoring: needs PyPI --------------------------------------------------------


def _score(project: Path, name: str, lines: list[str], **kw: object) -> SubmissionRecord:
    return api.score(
        str(project / "submissions" / name), "demo", n_boot=5, device="cpu", log=lines.append, **kw
    )


def test_pinned_scikit_learn_on_numpy_126_scores_ok_and_is_locked(pypi: None, project: Path) -> None:
    assert importlib.metadata.version("scikit-learn") != SKLEARN  # else the fixture proves nothing
    lines: list[str] = []
    record = _score(project, "sklearn_pinned", lines)
    assert record.status == "ok", (record.error, record.error_traceback)
    env = record.provenance.environment
    assert env is not None
    assert f"scikit-learn=={SKLEARN}" in env.layered and "numpy==1.26.4" in env.layered
    assert set(env.layered) <= set(env.packages) and "scipy" in {p.split("==")[0] for p in env.packages}
    built = environments.envs_root() / env.key
    assert env.lock_sha256 == hashlib.sha256((built / environments.LOCK_FILE).read_bytes()).hexdigest()
    assert environments.installed(built / "site") == {"numpy": "1.26.4", "scikit-learn": SKLEARN}
    assert any("building" in line for line in lines), lines
    stored = api.read_record(record.path)
    assert stored.provenance.environment == env  # the lock is in the written record

    # a second score (refit and re-predict) builds nothing
    marker = (built / environments.META_FILE).stat()
    again: list[str] = []
    second = _score(project, "sklearn_pinned", again, use_cache=False)
    assert second.status == "ok" and second.provenance.environment == env
    assert not any("building" in line for line in again) and any("cached" in line for line in again), again
    assert (built / environments.META_FILE).stat().st_mtime_ns == marker.st_mtime_ns

    # served from the prediction cache, the record still names the environment that made them
    third = _score(project, "sklearn_pinned", [])
    assert third.provenance.model_dump()["predictions_cached"] and third.provenance.environment == env
    assert (
        third.provenance.packages["scikit-learn"] == SKLEARN
        and third.provenance.packages["numpy"] == "1.26.4"
    )


def test_score_all_records_a_failed_build_and_goes_on(pypi: None, project: Path) -> None:
    for name in ("sklearn_pinned",):  # keep this test to the two runs it is about
        shutil.rmtree(project / "submissions" / name)
    records = {r.submission.id: r for r in api.score_all("demo", n_boot=5, device="cpu", log=print)}
    bad, good = records["unresolvable"], records["extra_package"]
    assert bad.status == "failed"
    assert "environment build failed" in (bad.error or "") and "scikit-learn==0.0.1" in (bad.error or "")
    # the package the base lacks is there, from the environment, which is read-only inside the sandbox
    assert good.status == "ok", (good.error, good.error_traceback)
    assert good.provenance.environment is not None
    assert good.provenance.environment.layered == ["tabulate==0.9.0"]
    assert not (environments.envs_root() / good.provenance.environment.key / "site" / "planted.py").exists()

    # the detail page lists the packages that differ from the harness's environment
    out = project / "page"
    api.render(out_dir=out, benchmarks=["demo"])
    (detail,) = [p for p in out.rglob("*.html") if "extra_package" in p.name]
    html = detail.read_text()
    section = html[html.index("<h2>Environment</h2>") : html.index("<h2>Provenance</h2>")]
    assert "<code>tabulate==0.9.0</code>" in section and "scikit-learn" not in section


def test_new_submission_shows_how_to_declare_packages(tmp_path: Path) -> None:
    from itbench.harness.scaffold import scaffold

    folder = scaffold("with_env", tmp_path)
    toml = folder / "submission.toml"
    assert environments.declared(load_submission(folder)) is None  # commented out
    toml.write_text(toml.read_text().replace("# [env]", "[env]").replace("# requirements", "requirements"))
    spec = environments.declared(load_submission(folder))
    assert spec is not None and "scikit-learn==1.5.2" in spec.requirements


def test_sandboxed_child_reads_the_bound_etc_files(tmp_path: Path) -> None:
    if not sandbox.available():
        pytest.skip(f"needs the sandbox: {sandbox.unavailable_reason()}")
    result = sandbox.run_isolated(
        ["/bin/sh", "-c", "head -c 5 /etc/passwd"],
        limits=sandbox.Limits(timeout_s=30),
        cwd=tmp_path,
        stream_output=False,
    )
    assert result.ok and result.stdout_tail == "root:", result.stderr_tail


def test_sdists_need_the_flag_and_then_build_in_the_sandbox(
    pypi: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITBENCH_HOME", str(tmp_path / "home"))
    sub = load_submission(_write_sub(tmp_path / "sdist_only", requirements="docopt==0.6.2\n"))  # no wheel
    with pytest.raises(SubmissionError, match="no usable wheels"):
        environments.prepare(sub, print)
    calls: list[dict[str, object]] = []
    real = sandbox.run_isolated

    def spy(argv: list[str], **kw: object) -> sandbox.IsolatedResult:
        calls.append({"argv": argv, **kw})
        return real(argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sandbox, "run_isolated", spy)
    prepared = environments.prepare(sub, print, allow_sdists=True)
    assert (
        prepared is not None and prepared.lock.layered == ["docopt==0.6.2"] and prepared.lock.sdists_allowed
    )
    assert [c["argv"][1:3] for c in calls] == [["pip", "compile"], ["pip", "install"]]  # type: ignore[index]
    assert all(c["network"] is True for c in calls)
    assert (prepared.site / "docopt.py").stat().st_uid == os.getuid()  # taken back from the sandbox's nobody
    assert environments.installed(prepared.site) == {"docopt": "0.6.2"}


def test_a_build_past_its_time_limit_fails_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITBENCH_HOME", str(tmp_path / "home"))
    sub = load_submission(_write_sub(tmp_path / "slow", requirements="tabulate==0.9.0\n"))
    with pytest.raises(SubmissionError, match="timed out"):
        environments.prepare(sub, print, timeout_s=0.001)
    assert [p.name for p in environments.envs_root().iterdir() if not p.name.endswith(".lock")] == []


# --- the CLI ----------------------------------------------------------------------------------


def _itbench(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ITBENCH_HOME": str(home), "ITBENCH_PROGRESS": "0"}
    exe = Path(sys.executable).with_name("itbench")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=600)


def test_cli_env_errors_are_one_line(tmp_path: Path) -> None:
    bad = _write_sub(tmp_path / "bad_req", requirements="--extra-index-url https://evil.example\n")
    out = _itbench("env", "build", str(bad), home=tmp_path / "home")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "options (--index-url, -e, -r ...) are not allowed" in out.stderr
    plain = _write_sub(tmp_path / "plain")
    out = _itbench("env", "info", str(plain), home=tmp_path / "home")
    assert out.returncode == 0 and "declares no packages" in out.stdout
    out = _itbench("env", "info", str(tmp_path / "missing"), home=tmp_path / "home")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "no submission folder" in out.stderr


def test_cli_env_build_info_clear(pypi: None, tmp_path: Path) -> None:
    home, sub = tmp_path / "home", str(FIXTURES / "extra_package")
    assert "not built here yet" in _itbench("env", "info", sub, home=home).stdout
    built = _itbench("env", "build", sub, home=home)
    assert built.returncode == 0 and "building" in built.stderr and "1 packages over the base" in built.stdout
    again = _itbench("env", "build", sub, home=home)
    assert again.returncode == 0 and "cached" in again.stderr and "building" not in again.stderr
    (lock,) = json.loads(_itbench("env", "info", sub, "--json", home=home).stdout)
    assert lock["layered"] == ["tabulate==0.9.0"] and lock["requirements"] == ["tabulate==0.9.0"]
    assert (home / "envs" / lock["key"] / "site" / "tabulate").is_dir()
    cleared = _itbench("env", "clear", sub, home=home)
    assert cleared.returncode == 0 and not (home / "envs" / lock["key"]).exists()
    assert "not built here yet" in _itbench("env", "info", sub, home=home).stdout


def test_worker_runs_the_environments_pth_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from itbench.harness import worker

    (tmp_path / "extra").mkdir()
    (tmp_path / "pkg.pth").write_text("extra\n")  # a path line; import lines run the same way
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.setenv(sandbox.ENV_DIR_VARIABLE, str(tmp_path))
    worker._add_env_pth()
    assert sys.path[0] == str(tmp_path) and str(tmp_path / "extra") in sys.path
