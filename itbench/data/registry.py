"""The benchmark registry: one typed :class:`BenchmarkSpec` per ``benchmark/<id>/manifest.json``.

Why: a benchmark used to be defined in five places (a source module, a tuple
of known ids, the page's titles, a manifest and a split file). Now the
manifest is the one owner: the CLI (``data list|info|fetch``, ``--benchmark``),
the runner, the page and the README table all ask this module. Adding a
benchmark is adding a manifest; a loader module (``itbench.data.sources.<loader>``)
is needed only for a new file format.

A manifest is JSON; unknown keys are kept (a loader may read its own settings,
e.g. the demo generator's), the keys below are checked:

- ``benchmark_id`` (the folder name), ``title``, ``description``, ``citation``;
- ``loader``: module under ``itbench.data.sources`` that reads the files;
- ``synthetic``: true for generated data (labelled so everywhere);
- ``files``: ``{role or name: {filename, sha1, size, url}}``;
- ``region``, ``time_bin_ms``: which neuroids and response window;
- ``split``: ``{path, sha1, n_train, n_val, n_test, stratify_by, seed}``: the
  committed split file and the rule it was made by;
- ``protocols``, ``default_protocol``: ``fixed-split`` (Table I) and/or ``brainscore``;
- ``aliases``: other ids that name this benchmark (old record folders);
- ``group``, ``order``: benchmarks shown side by side (IT and V4 of one
  dataset) and the listing order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from itbench import paths
from itbench.errors import BenchmarkError, DataError

MANIFEST = "manifest.json"
PROTOCOLS = ("fixed-split", "brainscore")
#: Benchmark ids become folder and file names: letters, digits, ``_ - .`` (no leading dot, no ``..``).
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*")


class DataFile(BaseModel):
    """One data file of a benchmark: where to get it and how to recognise it."""

    model_config = ConfigDict(extra="allow")

    filename: str | None = None
    sha1: str | None = None
    size: int | None = None
    url: str | None = None


class SplitSpec(BaseModel):
    """The committed split file and the rule that made it."""

    model_config = ConfigDict(extra="allow")

    path: str | None = None  # relative to the project root; default benchmark/splits/<id>.csv
    sha1: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    stratify_by: str | None = None
    seed: int | None = None


class BenchmarkSpec(BaseModel):
    """Everything the harness knows about a benchmark, from its manifest."""

    model_config = ConfigDict(extra="allow")

    benchmark_id: str
    title: str
    description: str
    citation: str = ""
    loader: str
    synthetic: bool = False
    files: dict[str, DataFile] = Field(default_factory=dict)
    region: str | None = None
    time_bin_ms: tuple[int, int] | None = None
    split: SplitSpec = Field(default_factory=SplitSpec)
    protocols: tuple[str, ...] = ("fixed-split",)
    default_protocol: str = "fixed-split"
    aliases: tuple[str, ...] = ()
    group: str | None = None
    order: int = 100

    @field_validator("benchmark_id")
    @classmethod
    def _id_ok(cls, value: str) -> str:
        if not ID_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not a benchmark id (letters, digits, _ - and inner dots)")
        return value

    @field_validator("loader")
    @classmethod
    def _loader_ok(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError(f"{value!r} is not a loader module name")
        return value

    @field_validator("protocols")
    @classmethod
    def _protocols_ok(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if p not in PROTOCOLS]
        if bad:
            raise ValueError(f"unknown protocol(s) {bad}; known: {', '.join(PROTOCOLS)}")
        return value

    @property
    def id(self) -> str:
        return self.benchmark_id

    def split_path(self) -> Path:
        """The committed split file (absolute)."""
        rel = self.split.path or f"benchmark/splits/{self.benchmark_id}.csv"
        return paths.project_root() / rel

    def filename(self, role: str) -> str:
        """File name of a role (``assembly``, ``stimulus_csv`` ...); the key itself for name-keyed files."""
        entry = self.files[role]
        return entry.filename or role


def manifest_path(benchmark_id: str) -> Path:
    """Where a benchmark's manifest lives: ``benchmark/<id>/manifest.json``."""
    return paths.benchmark_dir() / benchmark_id / MANIFEST


def read_spec(path: Path) -> BenchmarkSpec:
    """Parse and validate one manifest; DataError naming the file and the field on failure."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"no manifest at {path}", hint="restore it from git") from err
    except json.JSONDecodeError as err:
        raise DataError(f"manifest {path} is not valid JSON: {err}", hint="restore it from git") from err
    return parse_spec(data, str(path))


def parse_spec(data: Any, where: str) -> BenchmarkSpec:
    """Validate a manifest dict (``where`` names it in errors)."""
    try:
        spec = BenchmarkSpec.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in err.errors())
        raise DataError(
            f"manifest {where} is not a valid benchmark manifest: {problems}",
            hint="see itbench/data/registry.py for the fields a manifest has",
        ) from err
    if spec.default_protocol not in spec.protocols:
        raise DataError(
            f"manifest {where}: default_protocol {spec.default_protocol!r} is not among its protocols",
            hint=f"list it in protocols ({', '.join(spec.protocols)})",
        )
    return spec


def _read_folder(base: Path) -> list[BenchmarkSpec]:
    """The manifests of one ``benchmark/`` folder (hidden folders skipped)."""
    specs = []
    for path in sorted(base.glob(f"*/{MANIFEST}")):
        if path.parent.name.startswith("."):
            continue
        spec = read_spec(path)
        if spec.benchmark_id != path.parent.name:
            raise DataError(
                f"manifest {path} says benchmark_id {spec.benchmark_id!r}, but its folder is {path.parent.name!r}",
                hint="the folder name is the benchmark id: rename one of them",
            )
        specs.append(spec)
    return specs


def builtin_dir() -> Path:
    """The ``benchmark/`` folder of the checkout this package was imported from."""
    return Path(__file__).resolve().parents[2] / "benchmark"


def all_specs(root: Path | None = None) -> list[BenchmarkSpec]:
    """Every manifest under ``benchmark/``, in listing order (``order``, then id).

    The project's manifests come first; the built-in ones shipped with this
    checkout fill in ids the project lacks, so a project tree made elsewhere
    (or a test's private one) still knows demo, nx414 and MajajHong2015.
    """
    base = root or paths.benchmark_dir()
    specs = _read_folder(base) if base.is_dir() else []
    builtin = builtin_dir()
    if root is None and builtin.is_dir() and builtin.resolve() != base.resolve():
        have = {s.benchmark_id for s in specs}
        specs += [s for s in _read_folder(builtin) if s.benchmark_id not in have]
    specs.sort(key=lambda s: (s.order, s.benchmark_id))
    return specs


def benchmark_ids() -> tuple[str, ...]:
    """Registered ids (canonical, no aliases), in listing order."""
    return tuple(s.benchmark_id for s in all_specs())


def aliases() -> dict[str, str]:
    """alias -> canonical id."""
    return {alias: s.benchmark_id for s in all_specs() for alias in s.aliases}


def resolve(benchmark_id: str) -> str:
    """The canonical id of an id or alias; BenchmarkError listing the known ids otherwise."""
    return get(benchmark_id).benchmark_id


def get(benchmark_id: str) -> BenchmarkSpec:
    """The spec of a benchmark id or alias."""
    specs = all_specs()
    for spec in specs:
        if benchmark_id == spec.benchmark_id or benchmark_id in spec.aliases:
            return spec
    known = ", ".join(s.benchmark_id for s in specs)
    raise BenchmarkError(
        f"unknown benchmark '{benchmark_id}'",
        hint=f"known benchmarks: {known} (add one with `itbench data add`)",
    )


def markdown_table() -> str:
    """The README's table of benchmarks (id, title, how to install, protocols), from the manifests."""
    rows = ["| benchmark | title | synthetic | protocols |", "| --- | --- | --- | --- |"]
    for spec in all_specs():
        ids = ", ".join(f"`{i}`" for i in (spec.benchmark_id, *spec.aliases))
        rows.append(
            f"| {ids} | {spec.title} | {'yes' if spec.synthetic else 'no'} | {', '.join(spec.protocols)} |"
        )
    return "\n".join(rows)
