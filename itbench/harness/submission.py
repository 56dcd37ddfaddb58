"""Submission plugins: discovery, metadata, and the objects handed to them.

A submission is a folder ``submissions/<id>/`` with ``submission.toml`` and
``model.py``; ``model.py`` defines ``build(ctx) -> model``. Keeping the
contract this small lets a student add a model without touching itbench.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from itbench.contract import Context, contract_problems
from itbench.errors import SubmissionError
from itbench.paths import project_root

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
METADATA_FILE = "submission.toml"
MODULE_FILE = "model.py"
KNOWN_KEYS = {
    "name",
    "description",
    "table1_row",
    "authors",
    "needs",
    "limits",
    "params",
    "sizes",
    "reference",
}


@dataclass
class Submission:
    """A discovered submission folder and its parsed metadata."""

    id: str
    path: Path
    name: str
    table1_row: int | None = None
    authors: list[str] = field(default_factory=list)
    description: str = ""
    needs_gpu: bool = False
    weights: list[str] = field(default_factory=list)
    timeout_s: float | None = None
    memory_gb: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def params_for(self, size: str) -> dict[str, Any]:
        """Base params overlaid with the named size preset (e.g. ``small`` on CPU)."""
        merged = dict(self.params)
        merged.update(self.sizes.get(size, {}))
        return merged

    def code_hash(self) -> str:
        """sha1 over every file in the folder (names and bytes), so any edit refits."""
        digest = hashlib.sha1()
        for file in sorted(self.path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                digest.update(file.relative_to(self.path).as_posix().encode())
                digest.update(file.read_bytes())
        return digest.hexdigest()


def _fail(path: Path, problem: str, hint: str | None = None) -> SubmissionError:
    return SubmissionError(f"submission '{path.name}': {problem}", hint)


def load_submission(path: str | Path) -> Submission:
    """Parse and validate a submission folder's metadata (does not import it)."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise SubmissionError(
            f"no submission folder at {path}", "pass a folder such as submissions/pixels_ridge"
        )
    if not ID_PATTERN.match(path.name):
        raise _fail(path, "folder name must be lower-case letters, digits, '_' or '-'")
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise _fail(path, f"missing {METADATA_FILE}", "run `itbench new <id>` for a template")
    if not (path / MODULE_FILE).is_file():
        raise _fail(path, f"missing {MODULE_FILE}", "it must define build(ctx)")
    try:
        meta = tomllib.loads(meta_file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, f"{METADATA_FILE} is not valid TOML: {err}") from None
    return _from_metadata(path, meta)


def _from_metadata(path: Path, meta: dict[str, Any]) -> Submission:
    unknown = set(meta) - KNOWN_KEYS
    if unknown:
        raise _fail(
            path, f"unknown keys in {METADATA_FILE}: {sorted(unknown)}", f"known keys: {sorted(KNOWN_KEYS)}"
        )
    if not isinstance(meta.get("name"), str) or not meta["name"].strip():
        raise _fail(path, f"{METADATA_FILE} needs a non-empty `name`")
    row = meta.get("table1_row")
    if row is not None and (not isinstance(row, int) or not 1 <= row <= 12):
        raise _fail(path, f"table1_row must be an integer 1-12, got {row!r}")
    needs = meta.get("needs", {})
    limits = meta.get("limits", {})
    sizes = meta.get("sizes", {})
    if not all(isinstance(v, dict) for v in sizes.values()):
        raise _fail(path, "[sizes.<name>] entries must be tables of params")
    return Submission(
        id=path.name,
        path=path,
        name=meta["name"].strip(),
        table1_row=row,
        authors=list(meta.get("authors", [])),
        description=meta.get("description", ""),
        needs_gpu=bool(needs.get("gpu", False)),
        weights=list(needs.get("weights", [])),
        timeout_s=limits.get("timeout_s"),
        memory_gb=limits.get("memory_gb"),
        params=dict(meta.get("params", {})),
        sizes={k: dict(v) for k, v in sizes.items()},
    )


def find_submission(arg: str | Path, root: Path | None = None) -> Path:
    """A submission folder from a path or a bare id; an unknown one names the closest ids."""
    path = Path(arg)
    if path.is_dir():
        return path.resolve()
    folder = (root or project_root()) / "submissions"
    if (folder / str(arg)).is_dir():
        return (folder / str(arg)).resolve()
    known = (
        sorted(p.name for p in folder.iterdir() if (p / METADATA_FILE).is_file()) if folder.is_dir() else []
    )
    close = difflib.get_close_matches(path.name, known, n=3, cutoff=0.5)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else "pass a folder such as submissions/pixels_ridge (`itbench new ID` makes one)"
    )
    raise SubmissionError(f"no submission folder at {arg}", hint)


def discover(root: Path | None = None) -> list[Submission]:
    """Every valid submission under ``submissions/``; invalid ones raise."""
    folder = (root or project_root()) / "submissions"
    if not folder.is_dir():
        return []
    return [
        load_submission(p) for p in sorted(folder.iterdir()) if p.is_dir() and (p / METADATA_FILE).exists()
    ]


def import_module(sub: Submission) -> ModuleType:
    """Import ``model.py`` under a unique name so two submissions never clash."""
    name = f"itbench_submission_{sub.id.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, sub.path / MODULE_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(sub.path))  # allow helper modules beside model.py
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise _fail(sub.path, f"model.py failed to import: {type(err).__name__}: {err}") from err
    finally:
        sys.path.remove(str(sub.path))
    if not callable(getattr(module, "build", None)):
        raise _fail(sub.path, "model.py does not define build(ctx)")
    return module


def build_model(sub: Submission, ctx: Context) -> Any:
    """Instantiate the submission's model and check it has ``predict``."""
    model = import_module(sub).build(ctx)
    problems = contract_problems(model)
    if problems:
        raise _fail(
            sub.path,
            f"build(ctx) returned a {type(model).__name__}: " + "; ".join(problems),
            "see itbench/contract.py for the methods a model offers",
        )
    return model
