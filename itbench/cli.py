"""The ``itbench`` command: a thin click layer over the library.

Imports of heavy modules (torch, xarray) happen inside commands so that
``itbench --help`` and ``itbench leaderboard`` stay fast.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from itbench.errors import ItbenchError
from itbench.harness.device import DEVICES
from itbench.harness.protocols import PROTOCOLS
from itbench.models.cache import KINDS as CACHE_KINDS

if TYPE_CHECKING:
    from itbench.harness.options import RunOptions
    from itbench.harness.record import SubmissionRecord


SPLIT = click.Choice(["train", "val", "test"])


class BenchmarkId(click.ParamType):
    """A registered benchmark id or alias (the registry's manifests are the choices)."""

    name = "benchmark"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from itbench.data import registry

        try:
            return registry.resolve(str(value))
        except ItbenchError:
            known = ", ".join(registry.benchmark_ids())
            self.fail(f"unknown benchmark {value!r}; known: {known} (add one with `itbench data add`)")

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "ID"


BENCHMARK = BenchmarkId()


SIZES = ("auto", "full", "small", "ci")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def executor_options(fn: Any) -> Any:
    """``--executor local|ray`` and ``--address``: where the runs of a command happen."""
    fn = click.option(
        "--address",
        default=None,
        help="With --executor ray: the cluster (auto = the one `ray start` made; HOST:PORT; "
        "default $RAY_ADDRESS, else a private local Ray).",
    )(fn)
    return click.option(
        "--executor",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="local: one run after the other in this process; ray: one Ray task per run "
        "(pip install -e '.[ray]'; held-out responses stay here).",
    )(fn)


def _fmt(value: float | None, ci: Sequence[float | None] | None = None) -> str:
    if value is None:
        return "—"
    text = f"{value:.3f}"
    if ci and None not in ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def format_scores(record: SubmissionRecord) -> str:
    """The score table printed after ``itbench score``."""
    bench = record.benchmark
    head = (
        f"{record.submission.name} ({record.submission.id}) on "
        f"{bench.id}{' [SYNTHETIC demo data]' if bench.synthetic else ''}, "
        f"split {record.split}: {record.status.upper()}"
    )
    if record.status != "ok" or record.scores is None:
        return f"{head}\n  {record.error}"
    scores = record.scores
    rows = [
        ("mean EV", "mean_ev"),
        ("median EV", "median_ev"),
        ("mean r", "mean_r"),
        ("median r", "median_r"),
        ("ceiling (median)", "ceiling"),
        ("noise-corr. r", "normalized_r"),  # median r / sqrt(median ceiling): ideal model ~1
        ("FEVE (median)", "feve"),
        ("r / ceiling (old)", "r_over_ceiling"),
    ]
    lines = [head, f"  {'metric':<18} {'value [95% CI]'}"]
    lines += [f"  {label:<18} {_fmt(getattr(scores, key), scores.ci.get(key))}" for label, key in rows]
    lines.append(
        f"  {scores.n_images} images x {scores.n_neuroids} neuroids"
        + (f"; {scores.n_nan_r} neuroids with undefined r (constant)" if scores.n_nan_r else "")
    )
    block = record.brainscore
    if block:
        lines.append(
            f"  Brain-Score protocol: raw r {_fmt(block.raw_r)} ± {_fmt(block.raw_r_error)} "
            f"(mean over {block.settings.get('n_splits')} splits of median r; {block.settings.get('readout')})"
        )
    for norm in (record.normalisations or {}).values():
        lines.append(f"  {norm.name:<36} {norm.formula:<16} {_fmt(norm.value)}  [{norm.dates}]")
    prov = record.provenance.model_dump()
    if prov.get("sandboxed") is False:
        lines.append("  UNSANDBOXED run (--unsandboxed): ranked below every sandboxed record")
    if record.test_evaluations:
        lines.append(f"  test-split evaluations of this submission so far: {record.test_evaluations}")
    lines.append(
        f"  device {prov.get('device')}, size {prov.get('size')}, "
        f"{prov.get('wall_time_s')} s" + (", cached fit" if prov.get("fit_cached") else "")
    )
    return "\n".join(lines)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="itbench")
def cli() -> None:
    """Score models of macaque IT cortex responses and build the leaderboard.

    \b
    Typical use:
      itbench data list                       what benchmarks are installed
      itbench score submissions/pixels_ridge  fit, predict, score, record one model
      itbench leaderboard                     regenerate leaderboard/ from records

    From Python: `import itbench; itbench.score("submissions/pixels_ridge")`.
    """


# --- score -------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  itbench score submissions/pixels_ridge --benchmark demo
  itbench score pixels_ridge effnet_lite0_ridge --json > records.json
  itbench score --all --benchmark nx414 --device cuda
  itbench score --all --executor ray --address auto   on a Ray cluster
  itbench score effnet_lite0_ridge -b demo --protocol brainscore"""
)
@click.argument("submissions", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Score every submission without a current record.")
@click.option(
    "--benchmark",
    "-b",
    type=BENCHMARK,
    default=None,
    help="Benchmark id or alias (see `itbench data list`; default: majajhong2015 or nx414 when "
    "installed, else demo).",
)
@click.option("--split", type=SPLIT, default="val", show_default=True, help="Split to score on.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Where to run.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Images per batch.")
@click.option(
    "--size",
    type=click.Choice(SIZES),
    default="auto",
    show_default=True,
    help="Size preset: full, small (CPU-sized), ci (tests) or auto (small on CPU when defined).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for fitting and bootstrap.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Maximum wall-clock time per run, seconds (operator limits: a submission's [limits] may ask "
    "for less, never more; default from $ITBENCH_MAX_TIMEOUT_S, itbench.toml, else 4 h).",
)
@click.option(
    "--memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Maximum memory per run, GiB (default: $ITBENCH_MAX_MEMORY_GB, itbench.toml, else 85% of RAM).",
)
@click.option(
    "--disk-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Maximum disk a run may add to its writable folders, GiB (default: 20).",
)
@click.option(
    "--max-processes",
    type=click.IntRange(1),
    default=None,
    help="Maximum processes (and threads) per run (default: 1024).",
)
@click.option(
    "--max-threads",
    type=click.IntRange(1),
    default=None,
    help="Maximum compute threads per run (OMP/MKL/torch; default: not capped).",
)
@click.option(
    "--n-boot", type=click.IntRange(0), default=1000, show_default=True, help="Bootstrap resamples."
)
@click.option(
    "--protocol",
    type=click.Choice(list(PROTOCOLS)),
    default=None,
    help="fixed-split (Table I: fit on train, score --split) or brainscore (Brain-Score's 10x 90/10 "
    "cross-validation over every stimulus, PLS(25) on a model's features); default: the benchmark's.",
)
@click.option("--no-cache", is_flag=True, help="Refit and re-predict even when cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the result record(s) as JSON.")
@click.option(
    "--unsandboxed",
    is_flag=True,
    help="Run without the bubblewrap sandbox: for your own trusted code only. The record is marked "
    "`sandboxed: false`, never ranks above sandboxed ones, and its caches are kept apart.",
)
@click.option(
    "--confirm-test",
    is_flag=True,
    help="Required with --split test: you are done tuning. Every test evaluation is counted in the "
    "record and shown on the leaderboard.",
)
@click.option(
    "--allow-sdists",
    is_flag=True,
    help="Let submissions' environments build source distributions (inside the sandbox, network on); "
    "default: wheels only.",
)
@executor_options
@click.option(
    "--max-retries",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="With --executor ray: retries of a run whose node or Ray worker died.",
)
def score(
    submissions: tuple[str, ...],
    run_all: bool,
    benchmark: str | None,
    split: str,
    device: str,
    batch_size: int,
    size: str,
    seed: int,
    timeout_s: float | None,
    memory_gb: float | None,
    disk_gb: float | None,
    max_processes: int | None,
    max_threads: int | None,
    n_boot: int,
    protocol: str | None,
    no_cache: bool,
    as_json: bool,
    unsandboxed: bool,
    confirm_test: bool,
    allow_sdists: bool,
    executor: str,
    address: str | None,
    max_retries: int,
) -> None:
    """Fit, predict and score SUBMISSIONS (folders or ids under submissions/), writing records."""
    from itbench.harness.executors import make_executor

    bid = _benchmark_to_score(benchmark)
    if split == "test" and not confirm_test:
        raise click.UsageError(
            "--split test needs --confirm-test: tune on val, score test once you are done "
            "(every test evaluation is counted and shown on the leaderboard)"
        )
    folders, invalid = _folders_to_score(submissions, run_all, bid, split)
    opts = _run_options(
        bid,
        executor,
        split=split,
        device=device,
        batch_size=batch_size,
        seed=seed,
        size=size,
        timeout_s=timeout_s,
        memory_gb=memory_gb,
        disk_gb=disk_gb,
        max_processes=max_processes,
        max_threads=max_threads,
        use_cache=not no_cache,
        n_boot=n_boot,
        protocol=protocol,
        unsandboxed=unsandboxed,
        confirm_test=confirm_test,
        allow_sdists=allow_sdists,
    )
    show = functools.partial(_show_record, as_json=as_json)
    records = make_executor(executor, address, max_retries).score(folders, bid, opts, on_record=show)
    if invalid or all(r.status == "failed" for r in records):
        sys.exit(1)


def _benchmark_to_score(benchmark: str | None) -> str:
    """The benchmark asked for, or the default one (said on stderr, with a word when it is the demo)."""
    from itbench.scoring.benchmark import default_benchmark

    if benchmark is not None:
        return benchmark
    bid = default_benchmark()
    demo = " (synthetic demo; fetch or import real data to score on it)" if bid == "demo" else ""
    click.echo(f"benchmark: {bid}{demo}", err=True)
    return bid


def _folders_to_score(
    submissions: tuple[str, ...], run_all: bool, bid: str, split: str
) -> tuple[list[str | Path], list[str]]:
    """The folders named, or with --all those without a current record; invalid folders reported, skipped."""
    from itbench.harness.runner import stale_submissions

    invalid: list[str] = []
    folders: list[str | Path] = list(submissions) or (
        list(stale_submissions(bid, split, invalid=invalid)) if run_all else []
    )
    for problem in invalid:
        click.echo(f"skipping an invalid submission: {problem}", err=True)
    if not folders:
        if run_all:
            click.echo("every valid submission has a current record; nothing to score", err=True)
            sys.exit(1 if invalid else 0)
        raise click.UsageError("name at least one submission folder, or use --all")
    return folders, invalid


def _run_options(bid: str, executor: str, protocol: str | None, **fields: Any) -> RunOptions:
    """The flags as RunOptions, refused here when the benchmark, executor or a maximum cannot take them."""
    from itbench.data import registry
    from itbench.harness import quotas
    from itbench.harness.options import RunOptions

    opts = RunOptions(protocol=protocol or registry.get(bid).default_protocol, **fields)
    quotas.operator_maxima(opts)  # a bad maximum in the environment or itbench.toml: said before any run
    offered = registry.get(bid).protocols
    if opts.protocol not in offered:
        raise click.UsageError(f"benchmark {bid} offers protocols {', '.join(offered)}, not {opts.protocol}")
    if executor == "ray" and opts.protocol != "fixed-split":
        raise click.UsageError("the brainscore protocol runs with the local executor only (for now)")
    return opts


def _show_record(record: SubmissionRecord, as_json: bool) -> None:
    click.echo(record.to_json() if as_json else format_scores(record))
    if not as_json:
        click.echo(f"  record: {record.path}", err=True)


# --- data --------------------------------------------------------------------------


@cli.group()
def data() -> None:
    """Fetch, import and inspect benchmark data."""


@data.command("list", epilog="Examples:\n\n  itbench data list\n\n  itbench data list --markdown")
@click.option("--markdown", is_flag=True, help="Print the README's benchmark table instead.")
def data_list(markdown: bool) -> None:
    """Every registered benchmark (one manifest each under benchmark/), installed or not."""
    from itbench.data import registry
    from itbench.data.sources import describe

    if markdown:
        click.echo(registry.markdown_table())
        return
    for spec in registry.all_specs():
        info = describe(spec.benchmark_id, splits=False)
        state = "installed" if info.get("installed") else "not installed"
        tag = " [synthetic]" if spec.synthetic else ""
        click.echo(f"{spec.benchmark_id:<18} {state:<14} {spec.title}{tag}  ({info.get('location', '')})")


def _summary(info: dict[str, Any]) -> str:
    """``data info`` for a person: what it is, its files, and the split sizes."""
    lines = [f"{info['benchmark_id']}: {'installed' if info.get('installed') else 'not installed'}"]
    if info.get("title"):
        lines.append(
            f"  {info['title']}"
            + (f" (aliases: {', '.join(info['aliases'])})" if info.get("aliases") else "")
        )
    if info.get("protocols"):
        lines.append(f"  protocols: {', '.join(info['protocols'])}; manifest {info.get('manifest')}")
    if info.get("description"):
        lines.append(f"  {info['description']}")
    if info.get("n_stimuli") is not None:
        trials = "trial-level (ceilings available)" if info.get("trial_level") else "trial-averaged only"
        lines.append(f"  {info['n_stimuli']} stimuli x {info['n_neuroids']} neuroids, {trials}")
    lines.append(f"  location: {info.get('location')}")
    for f in info.get("files", []):
        lines.append(f"    {f['name']:<28} {f['size'] / 2**20:8.1f} MiB  sha1 {str(f.get('sha1'))[:12]}")
    if info.get("split_hash"):
        lines.append(f"  split file: {info['split_file']} (sha1 {info['split_hash'][:12]})")
    for name, s in (info.get("splits") or {}).items():
        reps = s.get("repetitions")
        rep = f", {reps['min']}-{reps['max']} repetitions" if reps else ""
        lines.append(f"    {name:<6} {s['images']:5d} images, {s['with_responses']:5d} with responses{rep}")
    if info.get("error"):
        lines.append(f"  problem: {info['error']}")
    return "\n".join(lines)


@data.command("info", epilog="Examples:\n\n  itbench data info demo\n\n  itbench data info nx414 --json")
@click.argument("benchmark_id", type=BENCHMARK)
@click.option("--json", "as_json", is_flag=True, help="Print the raw description as JSON.")
def data_info(benchmark_id: str, as_json: bool) -> None:
    """Files, sizes, checksums and split sizes of one benchmark."""
    from itbench.data.sources import describe

    info = describe(benchmark_id)
    click.echo(json.dumps(info, indent=2, default=str) if as_json else _summary(info))


@data.command(
    "fetch",
    epilog="Example:\n\n  itbench data fetch majajhong2015   (also installs majajhong2015.V4: one download)",
)
@click.argument("benchmark_id", type=BENCHMARK)
@click.option(
    "--mirror",
    envvar="ITBENCH_MIRROR",
    default=None,
    help="Base URL to download from instead of the manifest's (env ITBENCH_MIRROR).",
)
def data_fetch(benchmark_id: str, mirror: str | None) -> None:
    """Download a benchmark's files (sha1-verified) as its manifest lists them."""
    import importlib

    from itbench.data import registry
    from itbench.errors import BenchmarkError

    spec = registry.get(benchmark_id)
    module = importlib.import_module(f"itbench.data.sources.{spec.loader}")
    fetch = getattr(module, "fetch", None)
    if not callable(fetch):
        hint = "it is embedded (nothing to fetch)" if spec.synthetic else "see `itbench data info` for how"
        raise BenchmarkError(f"benchmark {benchmark_id} is not downloaded by `data fetch`", hint=hint)
    fetch(mirror=mirror)
    click.echo(f"{benchmark_id} installed; score with --benchmark {benchmark_id}")


@data.command(
    "add",
    epilog="""\b
Example:
  itbench data add mydata --assembly assy_my_data.nc --stimuli stimulus_my.csv \\
      --images stimulus_my.zip --region IT --time-bin 70,170""",
)
@click.argument("benchmark_id")
@click.option("--assembly", required=True, help="BrainIO NetCDF assembly: a path or an https URL.")
@click.option("--assembly-sha1", default=None, help="sha1 of the assembly (required for a URL).")
@click.option(
    "--stimuli", "stimuli_csv", required=True, help="Stimulus-set CSV (stimulus_id, filename, ...)."
)
@click.option("--stimuli-sha1", default=None, help="sha1 of the CSV (required for a URL).")
@click.option("--images", required=True, help="Stimulus images: a zip or a folder (or a zip URL).")
@click.option("--images-sha1", default=None, help="sha1 of the zip (required for a URL).")
@click.option("--region", default=None, help="Keep the neuroids of this region (e.g. IT, V4).")
@click.option("--time-bin", default=None, help="START,END in ms when the assembly has several time bins.")
@click.option(
    "--split", "fractions", default="0.8,0.1,0.1", show_default=True, help="train,val,test fractions."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--title", default=None, help="Title on the page (default: the id).")
@click.option("--description", default=None, help="One paragraph on the data (default: generated).")
@click.option("--citation", default="", help="How to cite the data.")
@click.option("--synthetic", is_flag=True, help="Label the data synthetic everywhere it appears.")
def data_add(
    benchmark_id: str,
    assembly: str,
    assembly_sha1: str | None,
    stimuli_csv: str,
    stimuli_sha1: str | None,
    images: str,
    images_sha1: str | None,
    region: str | None,
    time_bin: str | None,
    fractions: str,
    seed: int,
    title: str | None,
    description: str | None,
    citation: str,
    synthetic: bool,
) -> None:
    """Register a BrainIO assembly + stimulus set as benchmark BENCHMARK_ID (writes its manifest and split)."""
    from itbench.data.add import AddRequest, add_benchmark

    def numbers(text: str, n: int, what: str, kind: type) -> tuple[Any, ...]:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != n:
            raise click.BadParameter(f"{what} takes {n} comma-separated numbers, got {text!r}")
        return values

    spec = add_benchmark(
        AddRequest(
            benchmark_id=benchmark_id,
            assembly=assembly,
            assembly_sha1=assembly_sha1,
            stimuli_csv=stimuli_csv,
            stimuli_csv_sha1=stimuli_sha1,
            images=images,
            images_sha1=images_sha1,
            region=region,
            time_bin=numbers(time_bin, 2, "--time-bin", int) if time_bin else None,
            fractions=numbers(fractions, 3, "--split", float),
            seed=seed,
            title=title,
            description=description,
            citation=citation,
            synthetic=synthetic,
        )
    )
    click.echo(
        f"{spec.benchmark_id} registered: {spec.description}\n  manifest: benchmark/{spec.benchmark_id}/"
        f"manifest.json, split: {spec.split.path} ({spec.split.n_train}/{spec.split.n_val}/{spec.split.n_test}); "
        f"score with --benchmark {spec.benchmark_id}"
    )


@data.command("import", epilog="Example:\n\n  itbench data import ~/Downloads/IT_data.h5")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def data_import(path: Path) -> None:
    """Import the NX-414 course file IT_data.h5 as benchmark nx414."""
    from itbench.data.sources import nx414

    nx414.import_file(path)
    click.echo("nx414 installed; score with --benchmark nx414")


# --- new ---------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  itbench new my_model && itbench score submissions/my_model
  itbench new --from-brainscore pixels && itbench score submissions/bs_pixels --protocol brainscore"""
)
@click.argument("submission_id", required=False)
@click.option(
    "--from-brainscore",
    "brainscore_id",
    metavar="MODEL_ID",
    default=None,
    help="Make submissions/bs_MODEL_ID running Brain-Score's model plugin MODEL_ID (brainscore-vision).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Project root (default: the current itbench checkout).",
)
def new(submission_id: str | None, brainscore_id: str | None, root: Path | None) -> None:
    """Create submissions/SUBMISSION_ID from a template that scores as generated."""
    from itbench.harness.scaffold import scaffold, scaffold_brainscore

    if (submission_id is None) == (brainscore_id is None):
        raise click.UsageError("give a SUBMISSION_ID or --from-brainscore MODEL_ID (one of them)")
    if brainscore_id is not None:
        path = scaffold_brainscore(brainscore_id, root)
        click.echo(f"created {path}\n  build its environment: itbench env build {path.name}")
        click.echo(f"  score it: itbench score {path} --protocol brainscore")
        return
    assert submission_id is not None
    path = scaffold(submission_id, root)
    click.echo(f"created {path}\n  edit {path / 'model.py'}, then: itbench score {path}")


# --- leaderboard ---------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  itbench leaderboard                         re-render from leaderboard/results
  itbench leaderboard --run --benchmark nx414 score what is stale first
  itbench leaderboard --run --executor ray --address auto"""
)
@click.option("--benchmark", "-b", "benchmarks", type=BENCHMARK, multiple=True, help="Only these benchmarks.")
@click.option(
    "--run", "run_missing", is_flag=True, help="First score every submission without a current record."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: leaderboard/).",
)
@executor_options
def leaderboard(
    benchmarks: tuple[str, ...], run_missing: bool, out: Path | None, executor: str, address: str | None
) -> None:
    """Regenerate the leaderboard page from the stored result records."""
    from itbench import api

    if run_missing:
        from itbench.harness.executors import make_executor
        from itbench.scoring.benchmark import default_benchmark

        runner = make_executor(executor, address)
        for bid in benchmarks or (default_benchmark(),):
            api.score_all(bid, executor=runner, on_record=lambda record: click.echo(format_scores(record)))
    click.echo(str(api.render(out_dir=out, benchmarks=benchmarks or None)))


# --- sweep -------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  itbench sweep efficientnet_lite0 --benchmark demo
  itbench sweep resnet50 --random --layers layer2,layer3,layer4 --reducer "avgpool(2)"
  itbench sweep resnet50 --executor ray --address auto   on a GPU node of a Ray cluster
  itbench sweep efficientnet_lite0 -b demo --select-on train-cv"""
)
@click.argument("model")
@click.option(
    "--layers", default=None, help="Comma-separated node names (default: the model's standard set)."
)
@click.option("--pretrained/--random", default=True, show_default=True, help="ImageNet or random weights.")
@click.option("--benchmark", "-b", type=BENCHMARK, default=None, help="Benchmark id (default as for score).")
@click.option("--split", type=SPLIT, default="val", show_default=True, help="Split to score on.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Where to run.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Images per batch.")
@click.option(
    "--reducer",
    default="auto",
    show_default=True,
    help="How activations are reduced while streaming: flatten, avgpool(K), "
    "random_projection(D, seed=S), or auto (flatten small layers, project large ones).",
)
@click.option(
    "--pca", "n_components", type=click.IntRange(1), default=1000, show_default=True, help="PCA size."
)
@executor_options
@click.option(
    "--select-on",
    type=click.Choice(["scored-split", "train-cv"]),
    default="scored-split",
    show_default=True,
    help="How the best layer is chosen: on the scored split itself (optimistic, flagged in the record) "
    "or by 5-fold CV on the train split only.",
)
def sweep(
    model: str,
    layers: str | None,
    pretrained: bool,
    benchmark: str | None,
    split: str,
    device: str,
    batch_size: int,
    reducer: str,
    n_components: int,
    executor: str,
    address: str | None,
    select_on: str,
) -> None:
    """Score every chosen layer of MODEL with PCA + ridge from one pass (Fig. 1)."""
    from itbench import api

    if reducer != "auto":
        from itbench.models.features import parse_reducer

        parse_reducer(reducer)  # a typo fails here, before any image is loaded
    record = api.sweep(
        model,
        benchmark,
        layers=layers.split(",") if layers else None,
        pretrained=pretrained,
        split=split,
        device=device,
        batch_size=batch_size,
        reducer=reducer,
        n_components=n_components,
        executor=executor,
        address=address,
        select_on=select_on,
    )
    for layer in record.layers:
        s = layer.scores
        click.echo(f"{layer.layer:<14} EV {_fmt(s.mean_ev)}  r {_fmt(s.mean_r, s.ci.get('mean_r'))}")
    sel = record.layer_selection
    if sel is not None:
        chosen = sel.chosen_scores.mean_r if sel.chosen_scores else None
        click.echo(f"chosen layer: {sel.chosen} ({record.split} mean r {_fmt(chosen)}): {sel.note}")
    click.echo(f"record: {record.path}", err=True)


# --- env -------------------------------------------------------------------------


@cli.group()
def env() -> None:
    """Build, inspect or clear submissions' own environments (requirements.txt or [env])."""


def _env_subs(names: Sequence[str]) -> list[Any]:
    """The named submissions, or every valid one that declares packages."""
    from itbench.harness import environments
    from itbench.harness.submission import discover_all, find_submission, load_submission

    if names:
        return [load_submission(find_submission(n)) for n in names]
    subs = [s for _p, s in discover_all() if not isinstance(s, ItbenchError)]
    return [s for s in subs if s.env_requirements or (s.path / environments.REQUIREMENTS_FILE).exists()]


@env.command(
    "build", epilog="Examples:\n\n  itbench env build my_model\n\n  itbench env build   (every submission)"
)
@click.argument("submissions", nargs=-1)
@click.option("--allow-sdists", is_flag=True, help="Allow source distributions (built inside the sandbox).")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Build time limit, seconds.")
def env_build(submissions: tuple[str, ...], allow_sdists: bool, timeout_s: float | None) -> None:
    """Build (or find cached) the environment of SUBMISSIONS, with uv's progress."""
    from itbench.harness import environments

    failed, subs = 0, _env_subs(submissions)
    if not subs:
        click.echo("no submission declares packages (requirements.txt or [env])", err=True)
    for sub in subs:
        try:
            prepared = environments.prepare(
                sub, lambda m: click.echo(m, err=True), allow_sdists=allow_sdists, timeout_s=timeout_s
            )
        except environments.EnvBuildError as err:
            click.echo(f"{sub.id}: {err}", err=True)
            failed += 1
            continue
        if prepared is None:
            click.echo(f"{sub.id}: declares no packages (the harness's environment is used)")
        else:
            click.echo(f"{sub.id}: {prepared.root} ({len(prepared.lock.layered)} packages over the base)")
    sys.exit(1 if failed else 0)


@env.command("info", epilog="Examples:\n\n  itbench env info my_model\n\n  itbench env info --json")
@click.argument("submission", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the locks as JSON.")
def env_info(submission: str | None, as_json: bool) -> None:
    """The lock of SUBMISSION's environment (whether built here), or every built environment."""
    from itbench.harness import environments

    if submission is None:
        found = environments.all_cached()
    else:
        (sub,) = _env_subs([submission])
        spec = environments.declared(sub)
        if spec is None:
            click.echo(f"{sub.id}: declares no packages (the harness's environment is used)")
            return
        hit = environments.cached(spec)
        if hit is None:
            click.echo(
                f"{sub.id}: not built here yet ({', '.join(spec.requirements)}); `itbench env build {sub.id}`"
            )
            return
        found = [hit]
    if as_json:
        click.echo(json.dumps([p.lock.model_dump() for p in found], indent=1))
        return
    for p in found:
        click.echo(f"{p.lock.key}  {p.lock.disk_mb or 0:.0f} MiB  requires {', '.join(p.lock.requirements)}")
        click.echo(f"  over the base: {', '.join(p.lock.layered) or '(nothing)'}")


@env.command("clear", epilog="Examples:\n\n  itbench env clear my_model\n\n  itbench env clear   (all)")
@click.argument("submission", required=False)
def env_clear(submission: str | None) -> None:
    """Delete SUBMISSION's built environment, or all of them."""
    from itbench.harness import environments

    keys = None
    if submission is not None:
        (sub,) = _env_subs([submission])
        spec = environments.declared(sub)
        keys = [environments.env_key(spec)] if spec is not None else []
    freed = environments.clear(keys)
    click.echo(f"cleared {freed / 2**20:.1f} MiB")


# --- cache and perf ------------------------------------------------------------------


@cli.group()
def cache() -> None:
    """Inspect or clear the activation / fitted-state / prediction caches."""


@cache.command("info", epilog="Example:\n\n  itbench cache info --json")
@click.option("--json", "as_json", is_flag=True, help="Print the raw numbers as JSON.")
def cache_info(as_json: bool) -> None:
    """Entries and sizes per cache kind."""
    from itbench.models import cache as cache_mod

    info = cache_mod.info()
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(f"cache root: {info['root']}")
    for kind, numbers in info["kinds"].items():
        click.echo(f"  {kind:<12} {numbers['entries']:6d} files {numbers['bytes'] / 2**20:10.1f} MiB")


@cache.command("clear", epilog="Example:\n\n  itbench cache clear --kind predictions")
@click.option(
    "--kind",
    type=click.Choice(list(CACHE_KINDS)),
    default=None,
    help="Only this kind: " + "; ".join(f"{k}: {v}" for k, v in CACHE_KINDS.items()) + ".",
)
def cache_clear(kind: str | None) -> None:
    """Delete cached activations, fitted states and predictions."""
    from itbench.models import cache as cache_mod

    freed = cache_mod.clear(kind)
    click.echo(f"cleared {freed['entries']} files, {freed['bytes'] / 2**20:.1f} MiB")


@cli.command(
    context_settings={"ignore_unknown_options": True},
    epilog="Examples:\n\n  itbench perf --quick\n\n  itbench perf --only readouts --device cuda",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def perf(args: tuple[str, ...]) -> None:
    """Speed and memory benchmarks (perf/run.py): ratios against references, side by side."""
    import runpy

    from itbench.paths import project_root

    sys.path.insert(0, str(project_root()))
    sys.argv = ["perf.run", *args]
    runpy.run_module("perf.run", run_name="__main__")


def main() -> None:
    """Entry point: user errors become one clear message, not a traceback."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except ItbenchError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
