"""Shared test setup: a private data home so tests never touch ~/.cache/itbench."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _private_data_home(tmp_path_factory: pytest.TempPathFactory):
    """Point ITBENCH_HOME (and the results root) at a temporary folder for the session."""
    home = tmp_path_factory.mktemp("itbench-home")
    old = {k: os.environ.get(k) for k in ("ITBENCH_HOME", "ITBENCH_ROOT", "ITBENCH_CACHE", "ITBENCH_RESULTS")}
    os.environ["ITBENCH_HOME"] = str(home)
    os.environ["ITBENCH_RESULTS"] = str(home / "results")  # never write into leaderboard/
    os.environ["ITBENCH_ROOT"] = str(REPO)
    os.environ.pop("ITBENCH_CACHE", None)
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def shared_fixtures() -> Path:
    """The real BrainIO fixtures in ../shared, or a clean skip on a user's clone."""
    path = SHARED / "fixtures" / "brainio"
    if not path.is_dir():
        pytest.skip(f"real BrainIO fixtures not present at {path} (only in the dev/CI checkout)")
    return path


@pytest.fixture
def sigint_handled():
    """Python's Ctrl-C handler for the test's length.

    A shell that starts the tests in the background sets SIGINT to ignored,
    and every child inherits that; a Ctrl-C test would then wait forever.
    """
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
