"""Progress bars only where a person watches: a terminal, or a parent that says so."""

from __future__ import annotations

import io
import sys

import pytest

from itbench.console import show_progress
from itbench.models.features import extract


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [(None, False, False), (None, True, True), ("1", False, True), ("0", True, False), ("yes", True, True)],
)
def test_show_progress_policy(monkeypatch, env, tty, expected) -> None:
    if env is None:
        monkeypatch.delenv("ITBENCH_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("ITBENCH_PROGRESS", env)
    monkeypatch.setattr(sys, "stderr", _Tty() if tty else io.StringIO())
    assert show_progress() is expected


@pytest.mark.parametrize(("env", "bar"), [(None, False), ("1", True)])
def test_extraction_bar_only_when_asked(monkeypatch, env, bar) -> None:
    """Piped stderr (CI, a log file) gets no bar updates unless the parent says a person watches."""
    import torch

    if env is None:
        monkeypatch.delenv("ITBENCH_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("ITBENCH_PROGRESS", env)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU())
    extract(model, torch.zeros(4, 3, 16, 16), ["0"], "flatten", batch_size=2, device="cpu")
    assert ("img" in log.getvalue()) is bar
