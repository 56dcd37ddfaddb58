"""Submission plugins: discovery, metadata, and the objects handed to them.

A submission is a folder ``submissions/<id>/`` with ``submission.toml`` and
``model.py``; ``model.py`` defines ``build(ctx) -> model``. Keeping the
contract this small lets a student add a model without touching itbench.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import os
import re
import stat
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from itbench.contract import Context, contract_problems
from itbench.errors import SubmissionError
from itbench.harness.untrusted import SOURCE_MAX_BYTES, UntrustedOutput, clean_text, read_bytes, summarize
from itbench.paths import project_root

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
#: A Brain-Score model registry name (e.g. ``pixels``, ``resnet-50-robust``, ``cornet_s``).
BRAINSCORE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,199}$")
METADATA_FILE = "submission.toml"
MODULE_FILE = "model.py"
METADATA_MAX_BYTES = 64 * 1024
CODE_MAX_BYTES = 4 * 2**30
EXTERNAL_PREFIX = "external-"

# Printable text on one line (names, authors) or several (description): no
# control characters, escapes or bidi overrides, which would reach terminals
# and published pages.
_LINE = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]*$"
_TEXT = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]*$"
Line = Annotated[str, StringConstraints(pattern=_LINE, max_length=200)]
Name = Annotated[str, StringConstraints(pattern=_LINE, min_length=1, max_length=120, strip_whitespace=True)]
Text = Annotated[str, StringConstraints(pattern=_TEXT, max_length=4000)]
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
Scalar = bool | int | float | str
ParamValue = Scalar | list[Scalar] | dict[str, Scalar]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NeedsMeta(_Strict):
    """``[needs]``: what the submission needs from the machine."""

    gpu: bool = False
    weights: Annotated[list[Token], Field(max_length=20)] = []


class LimitsMeta(_Strict):
    """``[limits]``: per-run limits the submission asks for: a request, granted only up to the
    operator's maxima (``itbench.harness.quotas``); a request above one is refused."""

    timeout_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None
    memory_gb: Annotated[float, Field(gt=0, le=4096)] | None = None
    disk_gb: Annotated[float, Field(gt=0, le=4096)] | None = None
    processes: Annotated[int, Field(ge=1, le=65536)] | None = None
    threads: Annotated[int, Field(ge=1, le=4096)] | None = None


class EnvMeta(_Strict):
    """``[env]``: the packages the submission needs beyond the harness's (or ``requirements.txt``)."""

    requirements: Annotated[list[Line], Field(max_length=200)] = []


class BrainScoreMeta(_Strict):
    """``[brainscore]``: the Brain-Score model plugin this submission runs, and the package shipping it."""

    model_id: Annotated[str, StringConstraints(pattern=BRAINSCORE_ID_PATTERN.pattern)]
    package: Token = "brainscore-vision"
    version: Token


class Metadata(_Strict):
    """The schema of ``submission.toml``: types, ranges, no unknown keys."""

    name: Name
    description: Text = ""
    table1_row: Annotated[int, Field(ge=1, le=12)] | None = None
    authors: Annotated[list[Line], Field(max_length=50)] = []
    reference: Line | None = None
    needs: NeedsMeta = NeedsMeta()
    limits: LimitsMeta = LimitsMeta()
    env: EnvMeta = EnvMeta()
    brainscore: BrainScoreMeta | None = None
    params: Annotated[dict[Token, ParamValue], Field(max_length=200)] = {}
    sizes: Annotated[dict[Token, dict[Token, ParamValue]], Field(max_length=20)] = {}


KNOWN_KEYS = set(Metadata.model_fields)


def _schema_problem(err: ValidationError) -> str:
    """The schema violations (unknown keys first, at most three), each naming its field."""
    problems = []
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    for item in errors[:3]:
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-")) or "(top level)"
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {clean_text(repr(got), 60)})"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key `{loc}`")
        elif item["type"] == "missing":
            problems.append(f"missing `{loc}`")
        else:
            problems.append(f"`{loc}`: {item['msg']}{shown}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{METADATA_FILE}: " + "; ".join(problems) + more


def submission_identity(path: Path, submissions_root: Path | None = None) -> str:
    """The id records and caches are filed under: the folder name inside ``submissions/``.

    A folder anywhere else gets ``external-<name>-<sha1 of its path>``, so a
    folder that merely shares a name with a project submission can never
    overwrite that submission's record or read its cache.
    """
    path = Path(path).resolve()
    root = Path(submissions_root or project_root() / "submissions").resolve()
    if path.parent == root and not path.name.startswith(EXTERNAL_PREFIX):
        return path.name
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return f"{EXTERNAL_PREFIX}{path.name[:40]}-{digest}"


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
    disk_gb: float | None = None
    processes: int | None = None
    threads: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    env_requirements: list[str] = field(default_factory=list)
    """``[env] requirements`` of submission.toml (``requirements.txt`` is read by harness/environments.py)."""
    brainscore: dict[str, str] | None = None
    """``[brainscore]``: model_id, package, version of the Brain-Score plugin it runs (None: not a plugin)."""

    def params_for(self, size: str) -> dict[str, Any]:
        """Base params overlaid with the named size preset (e.g. ``small`` on CPU)."""
        merged = dict(self.params)
        merged.update(self.sizes.get(size, {}))
        return merged

    def code_hash(self) -> str:
        """sha1 over every file in the folder (names and bytes), so any edit refits.

        The folder is the submitter's: links are hashed as their target text,
        never followed; FIFOs and devices are never opened; reading stops at
        ``CODE_MAX_BYTES`` in all (a SubmissionError), so a planted link to
        ``/proc/kcore`` or a FIFO cannot exhaust or hang the parent.
        """
        digest = hashlib.sha1()
        budget = CODE_MAX_BYTES
        entries: list[tuple[str, Path]] = []
        for root, dirs, files in os.walk(self.path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            entries += [(Path(root, f).relative_to(self.path).as_posix(), Path(root, f)) for f in files]
            entries += [
                (Path(root, d).relative_to(self.path).as_posix(), Path(root, d))
                for d in dirs
                if Path(root, d).is_symlink()
            ]
        for rel, file in sorted(entries):
            if file.suffix == ".pyc":
                continue
            info = os.lstat(file)
            digest.update(rel.encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(b"link:" + os.readlink(file).encode(errors="surrogateescape"))
            elif stat.S_ISREG(info.st_mode):
                budget -= info.st_size
                if budget < 0:
                    raise _fail(self.path, f"the folder holds more than {CODE_MAX_BYTES // 2**20} MiB")
                digest.update(read_bytes(file, info.st_size))
            else:
                digest.update(b"special")
        return digest.hexdigest()


def _fail(path: Path, problem: str, hint: str | None = None) -> SubmissionError:
    return SubmissionError(f"submission '{path.name}': {problem}", hint)


def load_submission(path: str | Path, submissions_root: Path | None = None) -> Submission:
    """Parse and validate a submission folder's metadata (does not import it).

    The id is :func:`submission_identity`: the folder name for a folder in
    the project's ``submissions/`` (or ``submissions_root``), an
    ``external-...`` id otherwise.
    """
    path = Path(path).resolve()
    if not path.is_dir():
        raise SubmissionError(
            f"no submission folder at {path}", "pass a folder such as submissions/pixels_ridge"
        )
    if not ID_PATTERN.match(path.name):
        raise _fail(path, "folder name must be lower-case letters, digits, '_' or '-' (at most 64)")
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise _fail(path, f"missing {METADATA_FILE}", "run `itbench new <id>` for a template")
    if not (path / MODULE_FILE).is_file():
        raise _fail(path, f"missing {MODULE_FILE}", "it must define build(ctx)")
    try:
        raw = read_bytes(meta_file, METADATA_MAX_BYTES)
        meta = tomllib.loads(raw.decode("utf-8"))
    except UntrustedOutput as err:
        raise _fail(path, f"{METADATA_FILE}: {err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, f"{METADATA_FILE} is not valid TOML: {summarize(err)}") from None
    except (RecursionError, MemoryError):  # "a = [[[[...": the parser gives up, we must not crash
        raise _fail(path, f"{METADATA_FILE} is nested too deeply to parse") from None
    return _from_metadata(path, meta, submission_identity(path, submissions_root))


def _from_metadata(path: Path, meta: dict[str, Any], sub_id: str) -> Submission:
    try:
        parsed = Metadata.model_validate(meta)
    except ValidationError as err:
        raise _fail(
            path,
            _schema_problem(err),
            f"known keys: {', '.join(sorted(KNOWN_KEYS))}; the schema is Metadata in itbench/harness/submission.py",
        ) from None
    return Submission(
        id=sub_id,
        path=path,
        name=parsed.name,
        table1_row=parsed.table1_row,
        authors=list(parsed.authors),
        description=parsed.description,
        needs_gpu=parsed.needs.gpu,
        weights=list(parsed.needs.weights),
        timeout_s=parsed.limits.timeout_s,
        memory_gb=parsed.limits.memory_gb,
        disk_gb=parsed.limits.disk_gb,
        processes=parsed.limits.processes,
        threads=parsed.limits.threads,
        params=dict(parsed.params),
        sizes={k: dict(v) for k, v in parsed.sizes.items()},
        env_requirements=list(parsed.env.requirements),
        brainscore=parsed.brainscore.model_dump() if parsed.brainscore else None,
    )


def check_module(sub: Submission) -> None:
    """Compile ``model.py`` (without running it) and look for a top-level ``build``.

    Catches the commonest broken submissions in the parent within a second,
    before any data is loaded: a syntax error (reported with file and line)
    or no ``build`` defined. Compiling runs none of the submission's code.
    """
    file = sub.path / MODULE_FILE
    try:
        source = read_bytes(file, SOURCE_MAX_BYTES)
    except (UntrustedOutput, FileNotFoundError) as err:
        raise _fail(sub.path, f"{MODULE_FILE}: {summarize(err)}") from None
    try:
        tree = ast.parse(source, filename=MODULE_FILE)
    except SyntaxError as err:
        line = f" line {err.lineno}" if err.lineno else ""
        raise _fail(
            sub.path, f"{MODULE_FILE}{line}: {type(err).__name__}: {summarize(err.msg, 200)}"
        ) from None
    except ValueError as err:  # null bytes
        raise _fail(sub.path, f"{MODULE_FILE}: {summarize(err)}") from None
    except (RecursionError, MemoryError):  # pathological nesting: the parser gives up
        raise _fail(sub.path, f"{MODULE_FILE} is nested too deeply to compile") from None
    if not _binds_build(tree):
        raise _fail(sub.path, f"{MODULE_FILE} does not define build(ctx)", "add: def build(ctx): ...")


def _binds_build(tree: ast.Module) -> bool:
    """Whether the module's top level can bind the name ``build`` (def, assignment, import)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == "build":
            return True
        if isinstance(node, ast.Name) and node.id == "build" and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (a.asname or a.name).split(".")[0] in ("build", "*") for a in node.names
        ):
            return True
        if isinstance(node, ast.Global) and "build" in node.names:
            return True
    # globals()["build"] = ... and the like: let the worker decide
    return any(isinstance(n, ast.Constant) and n.value == "build" for n in ast.walk(tree))


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
    """Every valid submission under ``submissions/``; the first invalid one raises."""
    found = []
    for _path, sub in discover_all(root):
        if isinstance(sub, SubmissionError):
            raise sub
        found.append(sub)
    return found


def discover_all(root: Path | None = None) -> list[tuple[Path, Submission | SubmissionError]]:
    """Every folder under ``submissions/`` with metadata: its submission, or why it is invalid.

    ``itbench score --all`` reports the invalid ones and scores the rest.
    """
    folder = (root or project_root()) / "submissions"
    if not folder.is_dir():
        return []
    out: list[tuple[Path, Submission | SubmissionError]] = []
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or not (path / METADATA_FILE).exists():
            continue
        try:
            out.append((path, load_submission(path, folder)))
        except SubmissionError as err:
            out.append((path, err))
    return out


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
