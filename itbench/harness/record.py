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
import json
import math
import os
import platform
import tempfile
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
# a registered protocol id (itbench.harness.protocols); records from before protocols existed read as fixed-split
Protocol = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]
Number = StrictFloat | StrictInt | None  # JSON null (or NaN on read) means undefined; "0.5" is not a number
Interval = tuple[Number, Number]


class InvalidRecord(ValueError):
    """A record file that is not a usable itbench.record/1 record (reason in the message)."""


class _Strict(BaseModel):
    """Unknown keys are an error: a typo in a record must not silently vanish."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BrainScorePlugin(_Strict):
    """The Brain-Score model plugin a submission runs: its registry identifier and the package shipping it."""

    model_id: str = Field(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]*$")
    package: str = Field(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    version: str = Field(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")


class SubmissionRef(_Strict):
    id: Name
    name: str
    table1_row: Annotated[StrictInt, Field(ge=1, le=12)] | None = None
    code_hash: str | None = None
    brainscore: BrainScorePlugin | None = Field(default=None, exclude_if=lambda v: v is None)
    """Set for a Brain-Score plugin submission (``[brainscore]`` in submission.toml); absent otherwise."""


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
    # noise-corrected r, median r / sqrt(median ceiling): the ideal model scores ~1 (since 2026-12-03)
    normalized_r: Number = None
    # median r / median ceiling, the headline until 2026-12-03 (ideal model: 1 / sqrt(ceiling))
    r_over_ceiling: Number = None
    # fraction of explainable variance explained (Sensorium), median over neuroids
    feve: Number = None
    n_neuroids: StrictInt | None = None
    n_images: StrictInt | None = None
    n_nan_r: StrictInt | None = None
    ci: dict[str, Interval | None] = Field(default_factory=dict)


class PerNeuroid(_Strict):
    neuroid_id: list[str | int] | None = None
    ev: list[Number]
    r: list[Number]
    ceiling: list[Number] | None = None
    feve: list[Number] | None = None

    def model_post_init(self, context: Any, /) -> None:
        n = len(self.r)
        lengths = [len(v) for v in (self.ev, self.ceiling, self.feve, self.neuroid_id) if v is not None]
        if any(length != n for length in lengths):
            raise ValueError("per_neuroid arrays (neuroid_id, r, ev, ceiling, feve) differ in length")


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


_PIN = r"^[A-Za-z0-9._-]{1,100}==[A-Za-z0-9.+!_-]{1,60}$"  # name==version, nothing a page could misread


class EnvironmentLock(BaseModel):
    """A submission's own environment (harness/environments.py): what it asked for and what it got.

    ``packages`` is the whole resolved lock; ``layered`` the part installed
    over the harness's base environment (what differs from it);
    ``lock_sha256`` pins the hash-pinned lock file kept with the environment.
    """

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, Field(pattern=r"^[0-9a-f]{8,64}$")]
    requirements: list[Annotated[str, Field(pattern=r"^[\x20-\x7e]{1,200}$")]]
    packages: list[Annotated[str, Field(pattern=_PIN)]]
    layered: list[Annotated[str, Field(pattern=_PIN)]]
    lock_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    hash_pinned: bool = True
    sdists_allowed: bool = False
    build_s: float | None = None
    disk_mb: float | None = None


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
    environment: EnvironmentLock | None = None
    """The submission's own packages, when it declares any (None: the harness's only)."""
    limits: RunLimits | None = None
    """The run's effective limits: the operator's maxima, or less where the submission asked."""

    def stamp(self, wall_time_s: float) -> None:
        """Add the facts every record carries: versions, platform, wall time."""
        self.packages = package_versions()
        if self.environment is not None:  # what the child imported: its own versions win
            pins = dict(pin.split("==", 1) for pin in self.environment.layered)
            self.packages = {k: pins.get(k, v) for k, v in self.packages.items()}
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


def _ceiled_scores(scores: Any) -> Any:
    """A ``scores`` block from before 2026-12-03 read exactly in today's terms (else unchanged).

    Its ``normalized_r`` was ``median r / median ceiling``: that becomes
    ``r_over_ceiling`` (with its CI) and ``normalized_r`` is recomputed as
    ``median r / sqrt(median ceiling)`` from the stored medians. Its interval
    and FEVE need the predictions, so they stay undefined.
    """
    if not isinstance(scores, dict) or "r_over_ceiling" in scores or scores.get("normalized_r") is None:
        return scores
    med_r, ceiling = scores.get("median_r"), scores.get("ceiling")
    bounded = None
    if isinstance(med_r, int | float) and isinstance(ceiling, int | float) and ceiling > 0:
        bounded = med_r / math.sqrt(ceiling)
    ci = dict(scores.get("ci") or {})
    ci["r_over_ceiling"], ci["normalized_r"] = ci.get("normalized_r"), None
    new = {"r_over_ceiling": scores["normalized_r"], "normalized_r": bounded}
    return {**scores, **new, "ci": ci}


def _pre_issue19(data: dict[str, Any]) -> dict[str, Any]:
    """Migrate a record written before the noise-corrected headline (issue 19); newer ones pass through."""
    if data.get("kind") == "sweep":
        layers = [
            {**x, "scores": _ceiled_scores(x.get("scores"))} if isinstance(x, dict) else x
            for x in data.get("layers") or []
        ]
        selection = data.get("layer_selection")
        if isinstance(selection, dict) and selection.get("chosen_scores"):
            selection = {**selection, "chosen_scores": _ceiled_scores(selection["chosen_scores"])}
        return {**data, "layers": layers, "layer_selection": selection} if "layers" in data else data
    scores = _ceiled_scores(data.get("scores"))
    if scores is data.get("scores"):
        return data
    out = {**data, "scores": scores}
    if isinstance(data.get("bootstrap"), dict):  # its per-resample values were the old ratio
        out["bootstrap"] = {**data["bootstrap"], "normalized_r": None}
    if isinstance(data.get("normalisations"), dict):
        from itbench.scoring.metrics import definitions

        out["normalisations"] = {**definitions(scores), **data["normalisations"]}
    return out


def migrate_file(path: Path) -> bool:
    """Rewrite one stored record in today's form, touching only what changed; True if it did.

    Works on the JSON (not a round trip through the model), so fields the
    migration does not concern keep their bytes; the result is validated first.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    migrated = _pre_issue19(data) if isinstance(data, dict) else data
    if migrated == data:
        return False
    parse_record(migrated)
    atomic_write_text(path, json.dumps(_clean(migrated), indent=1, sort_keys=True, allow_nan=False) + "\n")
    return True


def parse_record(data: Any) -> Record:
    """Validate parsed JSON as a record; raises :class:`InvalidRecord` saying why."""
    if not isinstance(data, dict):
        raise InvalidRecord("not a JSON object")
    if data.get("schema") != SCHEMA:
        raise InvalidRecord(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    data = _pre_issue19({"kind": "submission", **data})  # the first records had no kind
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


def _is_ok(path: Path) -> bool:
    try:
        return read_record(path).status == "ok"
    except InvalidRecord:
        return False


def write_record(record: Record, path: Path) -> Path:
    """Store a record; a non-ok record never replaces an ok one. Returns where it went.

    A record that says what the stored one says (:func:`same_result`) leaves the
    file as it is, so rescoring an unchanged submission leaves a checkout clean.
    """
    text = record.to_json()
    target = path
    if record.status != "ok" and path.exists() and _is_ok(path):
        target = failure_path(path)
    if not _reproduces(target, record):
        atomic_write_text(target, text)
    if target == path and record.status == "ok":
        with contextlib.suppress(FileNotFoundError):
            failure_path(path).unlink()
    return target


#: Facts of one run that say how it went, not what it found: a rescore may differ in them.
#: ``limits`` and ``limiter`` are absent when cached predictions meant no child ran.
RUN_FACTS = frozenset(
    {
        "wall_time_s",
        "peak_rss_gb",
        "limits",
        "limiter",
        "fit_cached",
        "predictions_cached",
        "attempts",
        "node",
        "ray_node",
    }
)


#: How close two numbers must be for a rescore to count as reproducing a record.
#: Features and predictions are float32, and BLAS and convolution kernels may
#: take other code paths on another CPU: the committed effnet_lite0_ridge
#: record, rescored on another VM of the same kind (and identically twice
#: there), differed by up to 1.5e-6 relative per neuroid and 2.4e-7 in its scores.
#: Bootstrap values are stored to 6 decimals, so one of them can flip by 1e-6.
#: Any real change of a model moves its numbers far more than this.
REPRODUCED_REL_TOL: Final = 1e-5
REPRODUCED_ABS_TOL: Final = 2e-6


def same_result(old: Record, new: Record) -> bool:
    """Whether ``new`` reports what ``old`` does: every field equal, numbers to float32 precision.

    Only when it was made (``created``) and the run facts in :data:`RUN_FACTS`
    may differ; a different score, status, package version or platform is a
    different record.
    """
    return _close(_comparable(old), _comparable(new))


def _reproduces(path: Path, record: Record) -> bool:
    """The stored record at ``path`` already says what ``record`` says."""
    if not path.exists():
        return False
    try:
        return same_result(read_record(path), record)
    except (OSError, InvalidRecord):
        return False


def _comparable(record: Record) -> Any:
    data = json.loads(record.to_json())
    data.pop("created", None)
    for key in RUN_FACTS:
        data.get("provenance", {}).pop(key, None)
    return data


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return math.isclose(a, b, rel_tol=REPRODUCED_REL_TOL, abs_tol=REPRODUCED_ABS_TOL)
    return bool(a == b)
