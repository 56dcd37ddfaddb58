"""Shared fixtures of the fault-injection suite: sandbox switches and stray-process checks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from itbench.harness import sandbox

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def procs_with_marker(marker: str) -> list[psutil.Process]:
    """Live processes whose command line mentions ``marker`` (our test children)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in part for part in (p.info["cmdline"] or [])):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def find_procs():
    """``find_procs(marker)``: live processes whose command line mentions it."""
    return procs_with_marker


@pytest.fixture
def marker() -> str:
    """A unique string to put in a child's command line so we can find it later."""
    return f"itbench-fault-{uuid.uuid4().hex}"


@pytest.fixture(params=["sandboxed", "unsandboxed"])
def mode(request, monkeypatch) -> str:
    """Run a test both inside bubblewrap and on the unsandboxed fallback path."""
    if request.param == "sandboxed":
        if not sandbox.available():
            pytest.skip("bubblewrap unavailable: " + sandbox.unavailable_reason())
        monkeypatch.delenv(sandbox.NO_SANDBOX_ENV, raising=False)
    else:
        monkeypatch.setenv(sandbox.NO_SANDBOX_ENV, "1")
    return request.param


@pytest.fixture
def sandboxed(monkeypatch) -> None:
    """Require the real sandbox (skip with the reason when it cannot run here)."""
    if not sandbox.available():
        pytest.skip("bubblewrap unavailable: " + sandbox.unavailable_reason())
    monkeypatch.delenv(sandbox.NO_SANDBOX_ENV, raising=False)


@pytest.fixture(autouse=True)
def no_stray_children() -> Iterator[None]:
    """Every test must leave no live descendant of the pytest process behind."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 5.0
    while True:
        new = [p for p in me.children(recursive=True) if p.pid not in before and _alive(p)]
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not new, f"stray processes left behind: {[p.cmdline() for p in new]}"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
