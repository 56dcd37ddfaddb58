"""The ``itbench`` command: a thin click layer over the library.

Imports of heavy modules (torch, xarray) happen inside commands so that
``itbench --help`` and ``itbench leaderboard`` stay fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from itbench.errors import ItbenchError

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


def _fmt(value: Any, ci: list | None = None) -> str:
    if value is None:
        return "—"
    text = f"{value:.3f}"
    if ci and None not in ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def format_scores(record: dict[str, Any]) -> str:
    """The score table printed after ``itbench score``."""
    bench = record["benchmark"]
    head = (
        f"{record['submission']['name']} ({record['submission']['id']}) on "
        f"{bench['id']}{' [SYNTHETIC demo data]' if bench.get('synthetic') else ''}, "
        f"split {record['split']}: {record['status'].upper()}"
    )
    if record["status"] != "ok":
        return f"{head}\n  {record['error']}"
    scores, ci = record["scores"], record["scores"].get("ci", {})
    rows = [
        ("mean EV", "mean_ev"),
        ("median EV", "median_ev"),
        ("mean r", "mean_r"),
        ("median r", "median_r"),
        ("ceiling (median)", "ceiling"),
        ("normalised r", "normalized_r"),
    ]
    lines = [head, f"  {'metric':<18} {'value [95% CI]'}"]
    lines += [f"  {label:<18} {_fmt(scores.get(key), ci.get(key))}" for label, key in rows]
    lines.append(
        f"  {scores['n_images']} images x {scores['n_neuroids']} neuroids"
        + (f"; {scores['n_nan_r']} neuroids with undefined r (constant)" if scores.get("n_nan_r") else "")
    )
    block = record.get("brainscore")
    if block:
        lines.append(
            f"  Brain-Score protocol: raw r {_fmt(block['raw_r'])} ± {_fmt(block['raw_r_error'])} "
            f"(mean over {block['settings']['n_splits']} splits of median r; {block['settings']['readout']})"
        )
    for norm in (record.get("normalisations") or {}).values():
        lines.append(f"  {norm['name']:<36} {norm['formula']:<16} {_fmt(norm['value'])}  [{norm['dates']}]")
    prov = record.get("provenance", {})
    lines.append(
        f"  device {prov.get('device')}, size {prov.get('size')}, "
        f"{prov.get('wall_time_s')} s" + (", cached fit" if prov.get("fit_cached") else "")
    )
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="itbench")
def cli() -> None:
    """Score models of macaque IT cortex responses and build the leaderboard.

    \b
    Typical use:
      itbench data list                       what benchmarks are installed
      itbench score submissions/pixels_ridge  fit, predict, score, record one model
      itbench leaderboard                     regenerate leaderboard/ from records
    """


# --- score -------------------------------------------------------------------------


@cli.command()
@click.argument("submissions", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.option("--all", "run_all", is_flag=True, help="Score every submission without a current record.")
@click.option(
    "--benchmark",
    "-b",
    type=BENCHMARK,
    default=None,
    help="Benchmark id (see `itbench data list`; default: majajhong2015 or nx414 when installed, else demo).",
)
@click.option("--split", type=SPLIT, default="val", show_default=True, help="Split to score on.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--size",
    default="auto",
    show_default=True,
    help="Size preset: full, small (CPU-sized) or auto (small on CPU when defined).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=None, help="Wall-clock limit per run, seconds.")
@click.option("--memory-gb", type=float, default=None, help="Memory limit per run, GiB.")
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap resamples for CIs.")
@click.option(
    "--protocol",
    type=click.Choice(["fixed-split", "brainscore"]),
    default=None,
    help="fixed-split (Table I: fit on train, score --split) or brainscore (Brain-Score's 10x 90/10 "
    "cross-validation over every stimulus, PLS(25) on a model's features); default: the benchmark's.",
)
@click.option("--no-cache", is_flag=True, help="Refit and re-predict even when cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the result record(s) as JSON.")
def score(
    submissions: tuple[Path, ...],
    run_all: bool,
    benchmark: str | None,
    split: str,
    device: str,
    batch_size: int,
    size: str,
    seed: int,
    timeout_s: float | None,
    memory_gb: float | None,
    n_boot: int,
    protocol: str | None,
    no_cache: bool,
    as_json: bool,
) -> None:
    """Fit, predict and score SUBMISSIONS (folders under submissions/), writing records.

    \b
    Examples:
      itbench score submissions/pixels_ridge --benchmark demo
      itbench score submissions/effnet_lite0_ridge -b demo --protocol brainscore
    """
    from itbench.data import registry
    from itbench.harness.runner import RunOptions, score_submission
    from itbench.scoring.benchmark import default_benchmark

    bid = benchmark or default_benchmark()
    if benchmark is None:
        click.echo(
            f"benchmark: {bid}"
            + (" (synthetic demo; fetch or import real data to score on it)" if bid == "demo" else ""),
            err=True,
        )
    paths = list(submissions) or (_pending(bid, split) if run_all else [])
    if not paths:
        raise click.UsageError("name at least one submission folder, or use --all")
    opts = RunOptions(
        split=split,
        device=device,
        batch_size=batch_size,
        seed=seed,
        size=size,
        timeout_s=timeout_s,
        memory_gb=memory_gb,
        use_cache=not no_cache,
        n_boot=n_boot,
        protocol=protocol or registry.get(bid).default_protocol,
    )
    if opts.protocol not in registry.get(bid).protocols:
        raise click.UsageError(
            f"benchmark {bid} offers protocols {', '.join(registry.get(bid).protocols)}, not {opts.protocol}"
        )
    records = []
    for path in paths:
        record = score_submission(path, bid, options=opts)
        records.append(record)
        click.echo(json.dumps(record, indent=1) if as_json else format_scores(record))
        if not as_json:
            click.echo(f"  record: {record['path']}", err=True)
    if all(r["status"] == "failed" for r in records):
        sys.exit(1)


def _pending(benchmark_id: str, split: str) -> list[Path]:
    """Submissions whose record is missing or stale (code changed)."""
    from itbench.harness.record import read_record, record_path
    from itbench.harness.submission import discover
    from itbench.paths import results_root

    todo = []
    for sub in discover():
        path = record_path(results_root(), benchmark_id, sub.id, split)
        try:
            current = read_record(path)["submission"]["code_hash"] == sub.code_hash()
        except (OSError, ValueError, KeyError):
            current = False
        if not current:
            todo.append(sub.path)
    return todo


# --- data --------------------------------------------------------------------------


@cli.group()
def data() -> None:
    """Fetch, import and inspect benchmark data."""


@data.command("list")
@click.option("--markdown", is_flag=True, help="Print the README's benchmark table instead.")
def data_list(markdown: bool) -> None:
    """Every registered benchmark (one manifest each under benchmark/), installed or not.

    \b
    Example:
      itbench data list
    """
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


@data.command("info")
@click.argument("benchmark_id", type=BENCHMARK)
def data_info(benchmark_id: str) -> None:
    """Manifest, files, sizes, checksums and split sizes of one benchmark.

    \b
    Example:
      itbench data info majajhong2015.V4
    """
    from itbench.data import registry
    from itbench.data.sources import describe

    info = describe(benchmark_id)
    spec = registry.get(benchmark_id)
    info["manifest_fields"] = spec.model_dump(
        include={"description", "citation", "loader", "region", "time_bin_ms", "default_protocol", "group"}
    )
    click.echo(json.dumps(info, indent=2, default=str))


@data.command("fetch")
@click.argument("benchmark_id", type=BENCHMARK)
@click.option(
    "--mirror",
    envvar="ITBENCH_MIRROR",
    default=None,
    help="Base URL to download from instead of the manifest's (env ITBENCH_MIRROR).",
)
def data_fetch(benchmark_id: str, mirror: str | None) -> None:
    """Download a benchmark's files (sha1-verified) as its manifest lists them.

    \b
    Example:
      itbench data fetch majajhong2015      (also installs majajhong2015.V4: same download)
    """
    import importlib
    import inspect

    from itbench.data import registry
    from itbench.errors import BenchmarkError

    spec = registry.get(benchmark_id)
    module = importlib.import_module(f"itbench.data.sources.{spec.loader}")
    fetch = getattr(module, "fetch", None)
    if not callable(fetch):
        hint = "it is embedded (nothing to fetch)" if spec.synthetic else "see `itbench data info` for how"
        raise BenchmarkError(f"benchmark {benchmark_id} is not downloaded by `data fetch`", hint=hint)
    if "spec" in inspect.signature(fetch).parameters:
        fetch(mirror=mirror, spec=spec)
    else:
        fetch(mirror=mirror)
    click.echo(f"{benchmark_id} installed; score with --benchmark {benchmark_id}")


@data.command("add")
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
@click.option("--title", default=None)
@click.option("--description", default=None)
@click.option("--citation", default="")
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
    """Register a BrainIO assembly + stimulus set as benchmark BENCHMARK_ID (writes its manifest and split).

    \b
    Example:
      itbench data add mydata --assembly assy_my_data.nc --stimuli stimulus_my.csv \\
          --images stimulus_my.zip --region IT --time-bin 70,170
    """
    from itbench.data.add import AddRequest, add_benchmark

    def numbers(text: str, n: int, what: str, kind: type) -> tuple:
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
        f"{spec.benchmark_id} registered: {spec.description}\n  manifest: benchmark/{spec.benchmark_id}/manifest.json, "
        f"split: {spec.split.path} ({spec.split.n_train}/{spec.split.n_val}/{spec.split.n_test}); "
        f"score with --benchmark {spec.benchmark_id}"
    )


@data.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def data_import(path: Path) -> None:
    """Import the NX-414 course file IT_data.h5 as benchmark nx414."""
    from itbench.data.sources import nx414

    nx414.import_file(path)
    click.echo("nx414 installed; score with --benchmark nx414")


# --- new ---------------------------------------------------------------------------


@cli.command()
@click.argument("submission_id")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Project root (default: the current itbench checkout).",
)
def new(submission_id: str, root: Path | None) -> None:
    """Create submissions/SUBMISSION_ID from a template that scores as generated."""
    from itbench.harness.scaffold import scaffold

    path = scaffold(submission_id, root)
    click.echo(f"created {path}\n  edit {path / 'model.py'}, then: itbench score {path}")


# --- leaderboard ---------------------------------------------------------------------


@cli.command()
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
def leaderboard(benchmarks: tuple[str, ...], run_missing: bool, out: Path | None) -> None:
    """Regenerate the leaderboard page from the stored result records."""
    from itbench.paths import project_root, results_root

    root = project_root()
    if run_missing:
        from itbench.harness.runner import score_submission
        from itbench.scoring.benchmark import default_benchmark

        for bid in benchmarks or (default_benchmark(),):
            for path in _pending(bid, "val"):
                record = score_submission(path, bid)
                click.echo(format_scores(record))
    from itbench.page.leaderboard import render

    report = render(
        results_root(),
        out or root / "leaderboard",
        list(benchmarks) or None,
        root / "benchmark" / "table1.csv",
    )
    click.echo(str(report))


# --- sweep -------------------------------------------------------------------------


@cli.command()
@click.argument("model")
@click.option(
    "--layers", default=None, help="Comma-separated node names (default: the model's standard set)."
)
@click.option("--pretrained/--random", default=True, show_default=True, help="ImageNet or random weights.")
@click.option("--benchmark", "-b", type=BENCHMARK, default=None)
@click.option("--split", type=SPLIT, default="val", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--reducer",
    default="auto",
    show_default=True,
    help="How activations are reduced while streaming: flatten, avgpool:K, project:D, auto.",
)
@click.option("--pca", "n_components", type=int, default=1000, show_default=True)
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
) -> None:
    """Score every chosen layer of MODEL with PCA + ridge from one pass (Fig. 1)."""
    from itbench.harness.sweep import run_sweep
    from itbench.scoring.benchmark import default_benchmark

    record = run_sweep(
        model,
        layers.split(",") if layers else None,
        pretrained=pretrained,
        benchmark_id=benchmark or default_benchmark(),
        split=split,
        device=device,
        batch_size=batch_size,
        reducer=reducer,
        n_components=n_components,
    )
    for layer in record["layers"]:
        s = layer["scores"]
        click.echo(
            f"{layer['layer']:<14} EV {_fmt(s['mean_ev'])}  r {_fmt(s['mean_r'], s['ci'].get('mean_r'))}"
        )
    click.echo(f"record: {record['path']}", err=True)


# --- cache and bench -----------------------------------------------------------------


@cli.group()
def cache() -> None:
    """Inspect or clear the activation / fitted-state / prediction caches."""


@cache.command("info")
def cache_info() -> None:
    """Entries and sizes per cache kind."""
    from itbench.models import cache as cache_mod

    click.echo(json.dumps(cache_mod.info(), indent=2, default=str))


@cache.command("clear")
@click.option("--kind", default=None, help="Only this kind (activations, fitted, predictions).")
def cache_clear(kind: str | None) -> None:
    """Delete cached activations, fitted states and predictions."""
    from itbench.models import cache as cache_mod

    freed = cache_mod.clear(kind)
    click.echo(f"cleared {freed}")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the speed/memory benchmarks (perf/run.py); prints ratios side by side."""
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
