"""The parity machinery's own pieces, offline: export layout, registry errors, exact pixel recovery.

(The parity itself, against Brain-Score's code, is tests/test_brainscore_parity.py.)
"""

from __future__ import annotations

import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from itbench.data.assembly import load_assembly, save_assembly
from itbench.data.stimuli import to_model_input
from itbench.errors import ItbenchError
from itbench.models.brainscore_pixels import NotRecoverable, recover_uint8
from itbench.scoring import brainscore_reference as ref


def test_features_export_in_brainio_layout(tmp_path):
    x = np.arange(12.0).reshape(3, 4)
    da = ref.features_assembly(x, ["b", "a", "c"], ["o1", "o1", "o2"])
    back = load_assembly(save_assembly(da, tmp_path / "f.nc"))
    assert back.dims == ("presentation", "neuroid")
    assert list(back.stimulus_id.values) == ["b", "a", "c"]
    assert list(back.neuroid_id.values) == ["features.0", "features.1", "features.2", "features.3"]
    np.testing.assert_array_equal(back.values, x)
    with pytest.raises(ItbenchError, match="one row per stimulus"):
        ref.features_assembly(x, ["a", "b"], ["o", "o"])


def _fake_uv(tmp_path: Path, message: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A uv that fails with ``message``, in a private home (an environment built earlier is not reused)."""
    monkeypatch.setenv("ITBENCH_HOME", str(tmp_path / "home"))
    script = tmp_path / "uv"
    script.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 2\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_an_unreachable_registry_is_reported_as_such(tmp_path, monkeypatch):
    uv = _fake_uv(
        tmp_path, "error: Failed to fetch: `https://pypi.org/simple/numpy/` (dns error)", monkeypatch
    )
    monkeypatch.setattr(ref, "uv_binary", lambda: uv)
    with pytest.raises(ref.ReferenceUnavailable, match="registry cannot be reached"):
        ref.ensure_env()
    assert not (ref.env_path() / ".complete").exists()  # a failed build is never taken for a built one


def test_other_build_failures_are_errors_not_skips(tmp_path, monkeypatch):
    uv = _fake_uv(tmp_path, "error: No solution found when resolving dependencies", monkeypatch)
    monkeypatch.setattr(ref, "uv_binary", lambda: uv)
    with pytest.raises(ItbenchError, match="No solution found") as info:
        ref.ensure_env()
    assert not isinstance(info.value, ref.ReferenceUnavailable)


def test_two_processes_build_the_reference_once(tmp_path, monkeypatch):
    """A second ensure_env waits for the first build instead of deleting its folder half-way."""
    monkeypatch.setenv("ITBENCH_HOME", str(tmp_path / "home"))
    calls: list[str] = []

    def slow_uv(args):
        calls.append(args[0])
        if args[0] == "venv":
            time.sleep(0.3)  # the second caller arrives while the first is building
            (Path(args[-1]) / "bin").mkdir(parents=True)
            (Path(args[-1]) / "bin" / "python").write_text("")

    monkeypatch.setattr(ref, "_uv", slow_uv)
    with ThreadPoolExecutor(2) as pool:
        pythons = list(pool.map(lambda _: ref.ensure_env(), range(2)))
    assert calls == ["venv", "pip", "pip"]  # built once; the other found it complete
    assert pythons[0] == pythons[1] and pythons[0].exists()


def test_the_cache_key_is_the_requirements(monkeypatch):
    before = ref.env_path()
    assert before.parent.name == "brainscore-reference"
    monkeypatch.setattr(ref, "REQUIREMENTS", (*ref.REQUIREMENTS, "tabulate"))
    assert ref.env_path() != before  # another requirement list, another environment


def test_original_pixels_are_recovered_exactly_from_the_model_input():
    rng = np.random.default_rng(3)
    planted = rng.integers(0, 256, size=(5, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(recover_uint8(to_model_input(planted), 128), planted)
    grey = rng.integers(0, 256, size=(2, 128, 128), dtype=np.uint8)  # repeated over channels
    np.testing.assert_array_equal(recover_uint8(to_model_input(grey), 128)[..., 1], grey)


def test_a_wrong_source_size_is_refused_by_name():
    planted = np.random.default_rng(4).integers(0, 256, size=(2, 100, 100, 3), dtype=np.uint8)
    with pytest.raises(NotRecoverable, match="not 128-pixel originals"):
        recover_uint8(to_model_input(planted), 128)
