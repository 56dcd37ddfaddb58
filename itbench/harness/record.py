"""Result records: the one owner of their shape, their JSON and their storage.

A record is the only thing the leaderboard reads, so it is a typed object
(pydantic) with one serialiser and one parser: the runner and the sweep build
records only through these classes, the page reads them only through
:func:`read_record`. Writes go to a temporary file in the same folder and are
renamed into place (atomic on POSIX), under a lock so two concurrent runs of
one submission cannot interleave. A failed run never replaces an earlier good
record: its record goes to ``failures/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import platform
import tempfile
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from itbench.errors import ItbenchError
from itbench.scoring.benchmark import HELD_OUT_SPLIT

if TYPE_CHECKING:
    from itbench.scoring.benchmark import Benchmark

SCHEMA: Final = "itbench.record/1"
Status = Literal["ok", "failed", "skipped"]
PACKAGES = ("itbench", "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "xarray")
MAX_RECORD_BYTES = 64 * 2**20  # a 3200-image record is ~1 MB; anything far larger is not ours

# ids become file names: no dots, no slashes
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
# benchmark ids may hold inner dots (majajhong2015.V4), as the registry allows
BenchmarkId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*$")]
Protocol = Literal["fixed-split", "brainscore"]
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]
Number = StrictFloat | StrictInt | None  # JSON null (or NaN on read) means undefined; "0.5" is not a number
Interval = tuple[Number, Number]


class InvalidRecord(ValueError):
    """A record file that is not a usable itbench.record/1 record (reason in the message)."""


class _Strict(BaseModel):
    """Unknown keys are an error: a typo in a record must not silently vanish."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SubmissionRef(_Strict):
    id: Name
    name: str
    table1_row: Annotated[StrictInt, Field(ge=1, le=12)] | None = None
    code_hash: str | None = None


class BenchmarkRef(_Strict):
    id: BenchmarkId
    synthetic: bool = False
    data_checksum: str | None = None
    split_hash: str | None = None

    @classmethod
    def of(cls, bench: Benchmark) -> BenchmarkRef:
        """Which data a result was computed on: the benchmark and the hashes of its files."""
        return cls(
            id=bench.id, synthetic=bench.synthetic, data_checksum=bench.checksum, split_hash=bench.split_hash
        )


class Scores(_Strict):
    """Summary scores over neuroids (see ``itbench.scoring.metrics.summarize``)."""

    mean_ev: Number = None
    median_ev: Number = None
    mean_r: Number = None
    median_r: Number = None
    ceiling: Number = None
    normalized_r: Number = None
    n_neuroids: StrictInt | None = None
    n_images: StrictInt | None = None
    n_nan_r: StrictInt | None = None
    ci: dict[str, Interval | None] = Field(default_factory=dict)


class PerNeuroid(_Strict):
    neuroid_id: list[str | int] | None = None
    ev: list[Number]
    r: list[Number]
    ceiling: list[Number] | None = None

    def model_post_init(self, context: Any, /) -> None:
        n = len(self.r)
        lengths = [len(v) for v in (self.ev, self.ceiling, self.neuroid_id) if v is not None]
        if any(length != n for length in lengths):
            raise ValueError("per_neuroid arrays (neuroid_id, r, ev, ceiling) differ in length")


class Examples(_Strict):
    """Measured and predicted responses of a few neuroids, neuroid-major."""

    stimulus_id: list[str]
    neuroid_id: list[str]
    measured: list[list[Number]]
    predicted: list[list[Number]]

    def model_post_init(self, context: Any, /) -> None:
        for key in ("measured", "predicted"):
            rows = getattr(self, key)
            if len(rows) != len(self.neuroid_id) or any(len(r) != len(self.stimulus_id) for r in rows):
                raise ValueError(
                    f"examples.{key} should be one row of {len(self.stimulus_id)} values per example neuroid"
                )


class BootstrapSummary(_Strict):
    """A submission's statistics on its benchmark split's shared image resamples.

    Written by ``itbench.scoring.metrics.bootstrap_summary``. Two records with
    the same ``key`` were resampled identically, so the page can bootstrap the
    difference between them exactly (paired), from the records alone.
    """

    method: str
    key: str = Field(pattern=r"^[0-9a-f]{40}$")
    n_boot: StrictInt = Field(ge=1)
    mean_r: list[Number]
    normalized_r: list[Number] | None = None

    def model_post_init(self, context: Any, /) -> None:
        for name in ("mean_r", "normalized_r"):
            values = getattr(self, name)
            if values is not None and len(values) != self.n_boot:
                raise ValueError(f"bootstrap.{name} has {len(values)} values for n_boot = {self.n_boot}")


class Normalisation(_Strict):
    """One ceiled-score convention, labelled (see ``itbench.scoring.brainscore.NORMALISATIONS``)."""

    name: str
    formula: str
    dates: str
    definition: str
    value: Number = None


class BrainScoreResult(_Strict):
    """The ``brainscore`` protocol's numbers: raw r with its error, ceiling, both conventions, settings."""

    raw_r: Number = None
    raw_r_error: Number = None
    split_median_r: list[Number] = Field(default_factory=list)
    ceiling: Number = None
    ceiling_error: Number = None
    split_ceiling: list[Number] | None = None
    normalisations: dict[str, Normalisation] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


class RunLimits(BaseModel):
    """Limits of one run, or an operator's maxima (``itbench.harness.quotas``); threads None: not capped."""

    model_config = ConfigDict(extra="forbid", strict=True)

    timeout_s: Annotated[float, Field(gt=0)] | None = None
    memory_gb: Annotated[float, Field(gt=0)] | None = None
    disk_gb: Annotated[float, Field(gt=0)] | None = None
    processes: Annotated[int, Field(ge=1)] | None = None
    threads: Annotated[int, Field(ge=1)] | None = None


class Provenance(BaseModel):
    """How a result was made. Open-ended: new facts can be added without a schema bump."""

    model_config = ConfigDict(extra="allow")

    device: str | None = None
    seed: int | None = None
    wall_time_s: float | None = None
    packages: dict[str, str | None] = Field(default_factory=dict)
    platform: str | None = None
    sandboxed: bool | None = None
    limits: RunLimits | None = None
    """The run's effective limits: the operator's maxima, or less where the submission asked."""

    def stamp(self, wall_time_s: float) -> None:
        """Add the facts every record carries: versions, platform, wall time."""
        self.packages = package_versions()
        self.platform = platform_info()
        self.wall_time_s = round(wall_time_s, 2)


class _Record(_Strict):
    schema_: Literal["itbench.record/1"] = Field(SCHEMA, alias="schema")
    benchmark: BenchmarkRef
    split: Name = "val"
    created: str = Field(default_factory=lambda: now())
    provenance: Provenance = Field(default_factory=Provenance)

    def to_json(self) -> str:
        """Canonical text: sorted keys, NaN as null, so identical records are identical bytes."""
        data = self.model_dump(mode="json", by_alias=True)
        data["provenance"] = self.provenance.model_dump(mode="json", exclude_unset=True)
        return json.dumps(_clean(data), indent=1, sort_keys=True, allow_nan=False) + "\n"


class SubmissionRecord(_Record):
    """One submission scored on one benchmark split."""

    kind: Literal["submission"] = "submission"
    submission: SubmissionRef
    status: Status = "ok"
    error: str | None = None
    scores: Scores | None = None
    per_neuroid: PerNeuroid | None = None
    examples: Examples | None = None
    bootstrap: BootstrapSummary | None = None  # optional: records before it still load
    # how the score was made: Table I's fixed split, or Brain-Score's cross-validation (records
    # from before protocols existed have none and read as fixed-split); Brain-Score's two ceiled
    # conventions of the median r, each labelled with its name and date
    protocol: Protocol = "fixed-split"
    normalisations: dict[str, Normalisation] | None = None
    brainscore: BrainScoreResult | None = None
    test_evaluations: Annotated[StrictInt, Field(ge=0)] | None = None
    """Test-split records: how many scored test evaluations this submission has had (issue 10)."""
    error_traceback: str | None = None
    """Failed runs: the child's full traceback, sanitised and capped (the terminal gets one line)."""
    path: Path | None = Field(default=None, exclude=True)  # where write_record put it; not stored

    @model_validator(mode="after")
    def _no_held_out_examples(self) -> SubmissionRecord:
        """A test-split record never carries examples (measured test responses), even one
        written before the rule (``scoring.benchmark.example_neuroids``): they are dropped here."""
        if self.split == HELD_OUT_SPLIT and self.examples is not None:
            self.examples = None
        return self

    @property
    def stem(self) -> str:
        """File stem shared by the record, its detail page and its figure."""
        return self.submission.id if self.split == "val" else f"{self.submission.id}.{self.split}"

    def mark(self, status: Status, error: str) -> None:
        """A run that did not end ``ok``: keep the reason, drop any partial scores."""
        self.status, self.error = status, error
        self.scores = self.per_neuroid = self.examples = self.bootstrap = None
        self.normalisations = self.brainscore = None


class SweepLayer(_Strict):
    layer: str = Field(min_length=1)
    depth: StrictInt
    dim: StrictInt | None = None
    reducer: str | None = None
    scores: Scores


class LayerSelection(_Strict):
    """Which layer a sweep would commit to, and on what data it was chosen.

    ``method``: ``scored-split`` (the best layer by mean r on the split the sweep
    also reports: optimistic, as Brain-Score's layer commitment on the public
    set is) or ``train-cv`` (k-fold CV on the train split only: the chosen
    layer's score on the scored split is an honest estimate).
    """

    method: Literal["scored-split", "train-cv"]
    chosen: str
    metric: str = "mean r"
    folds: StrictInt | None = None
    cv_scores: dict[str, Number] | None = None
    chosen_scores: Scores | None = None
    leaks: bool
    note: str = ""


class SweepRecord(_Record):
    """One model x weights scored layer by layer (Fig. 1)."""

    kind: Literal["sweep"] = "sweep"
    status: Literal["ok"] = "ok"
    model: ModelName
    weights: ModelName
    readout: str = ""
    layers: list[SweepLayer] = Field(min_length=1)
    layer_selection: LayerSelection | None = None
    path: Path | None = Field(default=None, exclude=True)  # where write_record put it; not stored


Record = SubmissionRecord | SweepRecord
_RECORD: TypeAdapter[Record] = TypeAdapter(
    Annotated[SubmissionRecord | SweepRecord, Field(discriminator="kind")]
)


def _clean(value: Any) -> Any:
    """NaN/inf become null: JSON has no NaN and the leaderboard shows a dash."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _reason(err: ValidationError) -> str:
    """The first problem of a validation error as one line: ``where: what``."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith(("function-", "tagged-union"))]
    if len(loc) > 1 and loc[0] in ("submission", "sweep"):  # the kind that chose the model
        loc = loc[1:]
    where = ".".join(loc)
    return f"{where or 'record'}: {first['msg']}"


def parse_record(data: Any) -> Record:
    """Validate parsed JSON as a record; raises :class:`InvalidRecord` saying why."""
    if not isinstance(data, dict):
        raise InvalidRecord("not a JSON object")
    if data.get("schema") != SCHEMA:
        raise InvalidRecord(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    data = {"kind": "submission", **data}  # the first records had no kind
    try:
        return _RECORD.validate_python(data)
    except ValidationError as err:
        raise InvalidRecord(_reason(err)) from None


def read_record(path: Path) -> Record:
    """Read and validate one record file; raises :class:`InvalidRecord` saying why."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_RECORD_BYTES + 1)
    except OSError as err:
        raise InvalidRecord(f"cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidRecord(f"larger than {MAX_RECORD_BYTES // 2**20} MiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRecord("not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise InvalidRecord(f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    return parse_record(data)


def now() -> str:
    """UTC timestamp, second precision (records are diffed and committed)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a score."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def platform_info() -> str:
    return f"{platform.system()} {platform.machine()} python {platform.python_version()}"


def record_path(results_root: Path, benchmark_id: str, submission_id: str, split: str) -> Path:
    """``<root>/<benchmark>/<id>.json`` for val, ``<id>.<split>.json`` otherwise."""
    suffix = "" if split == "val" else f".{split}"
    return results_root / benchmark_id / f"{submission_id}{suffix}.json"


def sweep_path(results_root: Path, benchmark_id: str, model: str, weights: str) -> Path:
    """``<root>/<benchmark>/sweeps/<model>-<weights>.json``."""
    return results_root / benchmark_id / "sweeps" / f"{model}-{weights}.json"


def failure_path(path: Path) -> Path:
    """Where a failed run's record goes when an ok record must be kept."""
    return path.parent / "failures" / path.name


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + fsync + rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` for one submission x benchmark."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.parent / f".{path.name}.lock"
    with open(lock_file, "w") as handle:
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            raise ItbenchError(
                f"another itbench run is writing {path.name}", "wait for it to finish, then run again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_ok(path: Path) -> bool:
    try:
        return read_record(path).status == "ok"
    except InvalidRecord:
        return False


def write_record(record: Record, path: Path) -> Path:
    """Store a record; a non-ok record never replaces an ok one. Returns where it went."""
    text = record.to_json()
    target = path
    if record.status != "ok" and path.exists() and _is_ok(path):
        target = failure_path(path)
    atomic_write_text(target, text)
    if target == path and record.status == "ok":
        with contextlib.suppress(FileNotFoundError):
            failure_path(path).unlink()
    return target
