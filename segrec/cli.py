"""The ``segrec`` command line: every make target is a thin call into one command here.

Training-only libraries are imported inside the commands, so ``segrec --help`` and the
serving side stay light.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from segrec.settings import Settings, get_settings

app = typer.Typer(
    help="segrec: segment-aware product recommendations. Each command prints what it did "
    "and where its outputs are.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class InputFormat(StrEnum):
    synthetic = "synthetic"
    canonical = "canonical"
    online_retail = "online-retail"
    movielens = "movielens"


class Size(StrEnum):
    tiny = "tiny"
    small = "small"
    medium = "medium"
    large = "large"


def _fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _parse_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        if "=" not in pair:
            _fail(f"--map takes source=canonical pairs, got {pair!r}")
        source, canonical = pair.split("=", 1)
        mapping[source.strip()] = canonical.strip()
    return mapping


@app.command()
def data(
    size: Annotated[
        Size | None, typer.Option(help="Synthetic size (default: SEGREC_SIZE, small).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Generator seed (default: SEGREC_SEED).")] = None,
    input_path: Annotated[
        Path | None,
        typer.Option("--input", help="A real export to import instead of synthetic data."),
    ] = None,
    input_format: Annotated[
        InputFormat,
        typer.Option("--format", help="Format of --input: canonical, online-retail, movielens."),
    ] = InputFormat.synthetic,
    column_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Rename a source column for the canonical importer: "
            "source=canonical (repeatable).",
        ),
    ] = None,
) -> None:
    """Generate (or import) raw data, then validate, clean and pseudonymise it.

    Writes data/raw/<source>/, data/clean/{customers,products,events}.parquet,
    data/set_aside/*.parquet and reports/data_quality.json; then appends the live events
    logged by serving (data/events/live/) to the clean events again.
    """
    settings = get_settings()
    overrides = {"size": size.value if size else None, "seed": seed}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    run_data(settings, input_path, input_format, _parse_map(column_map or []))
    # Cleaning rebuilt events from the raw export: put the logged live events back.
    _ingest_live_events(settings)


def run_data(
    settings: Settings,
    input_path: Path | None,
    input_format: InputFormat,
    column_map: dict[str, str],
) -> None:
    from training.data.pipeline import clean_dataset
    from training.data.quality import QualityReport
    from training.data.raw import RawDataset
    from training.data.summary import print_quality_summary
    from training.data.synthetic.generator import generate

    report = QualityReport(
        settings.set_aside_dir, settings.pseudonymisation_secret.get_secret_value()
    )
    if input_path is None:
        if input_format is not InputFormat.synthetic:
            _fail(f"--format {input_format.value} needs --input PATH (the export to import)")
        raw_dir = settings.raw_dir / "synthetic"
        console.print(
            f"Generating synthetic storefront: size={settings.size}, seed={settings.seed}"
        )
        generated = generate(raw_dir, settings.size, settings.seed, settings.synthetic_end)
        console.print(
            f"  {generated.customers:,} customers, {generated.products:,} products, "
            f"{generated.events:,} events in {generated.seconds}s -> {raw_dir}"
        )
        raw = RawDataset(raw_dir)
    else:
        if input_format is InputFormat.synthetic:
            _fail("--input needs --format canonical, online-retail or movielens")
        if not input_path.exists():
            _fail(f"input {input_path} does not exist")
        from training.data.importers import ImportFormatError, import_export

        raw_dir = settings.raw_dir / input_format.value
        console.print(f"Importing {input_format.value} export {input_path}")
        try:
            raw = import_export(
                input_format.value, input_path, raw_dir, report, settings, column_map
            )
        except ImportFormatError as error:
            report.close()
            _fail(str(error))
        console.print(f"  raw tables -> {raw_dir}")

    console.print("Cleaning: validate, standardise, dedupe, impute, flag, pseudonymise")
    from training.data.schema import SchemaViolation

    try:
        summary = clean_dataset(raw, settings, report)
    except (SchemaViolation, FileNotFoundError) as error:
        _fail(f"cleaning {raw.directory} stopped: {error}")
    print_quality_summary(summary.report, console)
    console.print(
        f"Clean tables ({summary.rows['customers']:,} customers, "
        f"{summary.rows['products']:,} products, {summary.rows['events']:,} events, "
        f"data version {summary.data_version}) -> {summary.clean_dir}"
    )
    console.print(
        f"Quality report -> {summary.report_path} and "
        f"{summary.report_path.with_suffix('.png')}  ({summary.seconds}s)"
    )


@app.command()
def features() -> None:
    """Compute feature snapshots, apply the Feast repository and materialise online.

    Reads data/clean/; writes data/features/*.parquet (Feast's offline sources) and the
    online store chosen by SEGREC_ONLINE_STORE (sqlite by default, or redis).
    """
    run_features(get_settings())


def run_features(settings: Settings) -> None:
    from training.features.build import build_features
    from training.features.materialize import apply_and_materialise

    if not (settings.clean_dir / "manifest.json").exists():
        _fail(f"no clean data in {settings.clean_dir}: run `make data` first")
    console.print(
        f"Computing features: {settings.feature_snapshots} snapshots, "
        f"{settings.feature_snapshot_days} days apart"
    )
    built = build_features(settings)
    console.print(
        f"  {built.customer_rows:,} customer rows, {built.product_rows:,} product rows "
        f"as of {built.snapshots[0].date()} .. {built.snapshots[-1].date()} in "
        f"{built.seconds}s -> {built.directory}"
    )
    store = settings.online_store + (
        f" at {settings.redis_url}" if settings.online_store == "redis" else ""
    )
    console.print(f"Feast: apply {settings.feast_repo}, materialise into {store}")
    result = apply_and_materialise(settings)
    table = Table(title="Online store")
    for column in ("feature view", "entities materialised", "note"):
        table.add_column(column)
    for view, count in result.materialised.items():
        table.add_row(view, f"{count:,}", "newest snapshot")
    for view, why in result.skipped.items():
        table.add_row(view, "0", why)
    console.print(table)
    console.print(
        f"Applied {len(result.applied)} Feast objects in {result.seconds['apply']}s; "
        f"materialised in {result.seconds.get('materialise', 0)}s "
        f"(registry {settings.feast_dir / 'registry.db'})"
    )


@app.command()
def segments(
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Incremental: move the current centroids towards the newest features "
            "(partial_fit) and measure drift, instead of a full refit.",
        ),
    ] = False,
) -> None:
    """Segment customers: choose k, cluster, profile and name, version, write to Feast.

    Reads customer features from Feast's offline store as of the newest snapshot; writes
    data/features/customer_segments.parquet (offline + online), data/segments/<version>/
    (the numpy model serving assigns with) and reports/segments.{json,html}.
    """
    run_segments(get_settings(), update=update)


def run_segments(settings: Settings, *, update: bool = False) -> None:
    from training.segmentation.pipeline import run_segmentation, update_segments
    from training.segmentation.report import write_reports

    if not (settings.features_dir / "customer_features.parquet").exists():
        _fail(f"no customer features in {settings.features_dir}: run `make features` first")
    console.print(
        f"Segmenting ({'incremental update' if update else settings.segment_algorithm}) "
        f"on features from {settings.features_dir}"
    )
    try:
        run = update_segments(settings) if update else run_segmentation(settings)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    json_path, html_path = write_reports(run, settings.reports_dir, settings.seed)
    table = Table(title=f"Segments {run.model.version} (as of {run.inputs.cutoff.date()})")
    for column in ("id", "name", "customers", "share", "distinguishing"):
        table.add_column(column)
    positions = {int(i): p for p, i in enumerate(run.model.segment_ids)}
    for segment_id, name in zip(run.model.segment_ids, run.model.segment_names, strict=True):
        profile = run.profiles[positions[int(segment_id)]]
        table.add_row(
            str(segment_id),
            name,
            f"{profile.size:,}",
            f"{profile.share:.1%}",
            "; ".join(profile.distinguishing[:2]),
        )
    console.print(table)
    if run.choice is not None:
        console.print(
            f"k = {run.choice.k} ({run.choice.rule}; inertia elbow at {run.choice.elbow_k})"
        )
    if run.stability is not None:
        console.print(
            f"Stability: bootstrap adjusted Rand mean {run.stability.mean_ari}, "
            f"min {run.stability.min_ari} over {run.stability.rounds} refits"
        )
    if run.transition is not None:
        console.print(
            f"Versus {run.transition.previous_version}: adjusted Rand "
            f"{run.transition.adjusted_rand}, {run.transition.changed_share:.1%} changed segment"
        )
    if run.drift is not None:
        console.print(f"Drift: largest centroid shift {run.drift['max_centroid_shift']}")
    if run.persona_agreement is not None:
        console.print(
            f"Planted personas: adjusted Rand {run.persona_agreement['adjusted_rand']}, "
            f"NMI {run.persona_agreement['normalized_mutual_info']} "
            f"({run.persona_agreement['customers']:,} customers)"
        )
    console.print(
        f"{len(run.assignments):,} customers segmented, {run.inputs.excluded_no_consent:,} "
        f"excluded (no personalisation consent); {run.online_rows:,} written online; "
        f"model -> {settings.segments_dir / run.model.version}; reports -> {json_path}, "
        f"{html_path} ({sum(run.seconds.values()):.1f}s)"
    )


@app.command()
def train(
    export: Annotated[
        bool,
        typer.Option(
            "--export/--no-export",
            help="Refit on all data and export the bundle (files + BentoML model) and the "
            "customer factors (Feast); --no-export only evaluates.",
        ),
    ] = True,
) -> None:
    """Fit every model, fit blend weights per segment, evaluate, export the bundle.

    First appends the live events logged by serving since the last run (data/events/live/)
    to the clean events, so the models learn from them.
    Protocol from SEGREC_EVAL_PROTOCOL (temporal by default). Writes
    reports/evaluation.{json,html}; with --export also data/bundles/<version>/, the
    BentoML model segrec_bundle (store: SEGREC_BENTOML_HOME) and
    data/features/customer_embeddings.parquet (offline + online); then churn risk and CLV
    to data/features/customer_value.parquet (offline + online) and
    reports/customer_value.{json,html}.
    """
    settings = get_settings()
    if (settings.clean_dir / "manifest.json").exists():
        # Events served since the last run train the models too (run_train reports a
        # missing data build itself).
        _ingest_live_events(settings)
    run_train(settings, export=export)


def _ingest_live_events(settings: Settings) -> None:
    """Append the serving event log's new lines to the clean events; print one line."""
    from training.data.live_events import ingest_event_log

    try:
        summary = ingest_event_log(settings)
    except (ValueError, FileNotFoundError) as error:  # SchemaViolation is a ValueError
        _fail(f"ingesting live events from {settings.event_log_dir} stopped: {error}")
    console.print(f"Live events: {summary.line()}")


@app.command()
def evaluate() -> None:
    """Evaluate only: the same fits and figures as `train`, without exporting."""
    run_train(get_settings(), export=False)


def run_train(settings: Settings, *, export: bool) -> None:
    from training.evaluation.oracle import describe as describe_oracle
    from training.train.evaluate import BLEND, METHOD_LABELS
    from training.train.pipeline import run_training
    from training.train.report import write_reports

    if not (settings.clean_dir / "manifest.json").exists():
        _fail(f"no clean data in {settings.clean_dir}: run `make data` first")
    if not (settings.features_dir / "customer_segments.parquet").exists():
        _fail("no segments yet: run `make segments` first (the blend is fitted per segment)")
    console.print(
        f"Training and evaluating ({settings.eval_protocol} protocol, k={settings.eval_k})"
    )
    try:
        run = run_training(settings, export_bundle=export)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    json_path, html_path = write_reports(run, settings)
    for protocol, result in run.results.items():
        table = Table(title=f"{protocol}: mean over {result.runs[BLEND].n_customers:,} customers")
        for column in ("model", f"NDCG@{settings.eval_k}", "hit rate", "recall", "coverage"):
            table.add_column(column)
        for name, metrics in result.runs.items():
            table.add_row(
                METHOD_LABELS.get(name, name),
                f"{metrics.means['ndcg']:.4f}",
                f"{metrics.means['hit_rate']:.4f}",
                f"{metrics.means['recall']:.4f}",
                f"{metrics.coverage or 0:.3f}",
            )
        console.print(table)
    console.print(describe_oracle(run.oracle))
    console.print(
        f"Blend weights fitted for {len(run.blender.segment_ids_)} segments "
        f"({len(run.blender.backed_off_)} backed off to global); reports -> {json_path}, "
        f"{html_path} ({sum(run.seconds.values()):.1f}s)"
    )
    if run.export is not None:
        console.print(
            f"Bundle {run.export.bundle_version} -> {run.export.bundle_dir} and BentoML "
            f"{run.export.bentoml_tag}; {run.export.customers_written:,} customers' factors "
            f"written to Feast ({run.export.profiles_removed:,} online feature rows of "
            "customers without personalisation consent removed)"
        )
        run_customer_value(settings)


def run_customer_value(settings: Settings) -> None:
    """Churn risk and CLV as customer features (training/customer_value); a data set too
    short for their horizons skips them with a note instead of failing the training."""
    from training.customer_value.pipeline import run_customer_value as fit_and_score
    from training.customer_value.report import write_reports

    console.print(
        f"Customer value: churn in {settings.churn_horizon_days} days, "
        f"CLV over {settings.clv_horizon_days} days"
    )
    try:
        value = fit_and_score(settings)
    except ValueError as error:
        err_console.print(f"[yellow]customer value skipped:[/] {error}")
        return
    json_path, html_path = write_reports(value, settings.reports_dir)
    churn, clv = value.churn, value.clv
    console.print(
        f"  churn (holdout as of {value.plans['churn'].evaluate_at.date()}): ROC-AUC "
        f"{churn['roc_auc']} (days since last purchase {churn['recency_baseline']['roc_auc']}), "
        f"PR-AUC {churn['pr_auc']} at base rate {churn['base_rate']}, Brier "
        f"{churn['brier_uncalibrated']} -> {churn['brier_calibrated']} calibrated"
    )
    console.print(
        f"  CLV (holdout as of {value.plans['clv'].evaluate_at.date()}): MAE "
        f"{clv['model']['mae']} vs naive {clv['naive']['mae']}, RMSE {clv['model']['rmse']} "
        f"vs {clv['naive']['rmse']}"
    )
    console.print(
        f"  {value.scored:,} customers scored as of {value.as_of.date()} "
        f"({value.version}) -> {value.path} and Feast ({value.online_rows or 0:,} online); "
        f"reports -> {json_path}, {html_path} ({sum(value.seconds.values()):.1f}s)"
    )


@app.command()
def demo(
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Keep the service up after the tour (storefront demo, console)."
        ),
    ] = False,
) -> None:
    """The main job end to end on the embedded defaults (synthetic data, SQLite store)."""
    settings = get_settings()
    console.rule("segrec demo: data")
    run_data(settings, None, InputFormat.synthetic, {})
    console.rule("segrec demo: features")
    run_features(settings)
    console.rule("segrec demo: segments")
    run_segments(settings)
    console.rule("segrec demo: train")
    run_train(settings, export=True)
    console.rule("segrec demo: bento")
    built = run_bento(settings)
    console.rule("segrec demo: serve")
    from serving.demo_tour import run_tour

    try:
        run_tour(settings, built, console, serve=serve)
    except (RuntimeError, OSError) as error:  # ServiceStartError is a RuntimeError
        _fail(f"the demo service failed: {error}")


@app.command()
def bento() -> None:
    """Build the serving Bento: the service, the Feast repository, the newest exported
    bundle (BentoML model segrec_bundle) and the serving dependencies only. Serve it with
    `bentoml serve <tag>` (BENTOML_HOME: SEGREC_BENTOML_HOME, default data/bentoml)."""
    run_bento(get_settings())


def run_bento(settings: Settings) -> str:
    from serving.bento_build import build_bento

    try:
        built = build_bento(settings)
    except FileNotFoundError as error:
        _fail(str(error))
    console.print(
        f"Bento {built.tag} ({built.files} files, {built.size_bytes / 1e6:.1f} MB, bundle "
        f"{built.bundle_version}) -> {built.path}"
    )
    return built.tag


@app.command()
def bench(
    sizes: Annotated[
        str, typer.Option(help="Data bench: comma-separated synthetic sizes, e.g. small,large.")
    ] = "small,medium",
    events: Annotated[
        str, typer.Option(help="Training bench: event counts, e.g. 1e5,1e6,1e7.")
    ] = "1e5,1e6",
    catalogues: Annotated[
        str, typer.Option(help="Scale bench: catalogue sizes (items).")
    ] = "10000,100000,1000000",
    factors: Annotated[str, typer.Option(help="Scale bench: factor sizes.")] = "32,64,128",
    repeats: Annotated[
        int, typer.Option(min=1, help="Runs behind each figure (median, min and max).")
    ] = 3,
    time_box: Annotated[
        float,
        typer.Option(
            min=0,
            help="Training bench: minutes the runs of one event count may take (predicted "
            "from the counts before it): fewer repeats when they would take longer, none "
            "(extrapolated instead) when one run would (0 = no limit).",
        ),
    ] = 25.0,
    only: Annotated[
        str | None,
        typer.Option(help="Only these parts: data,online,scale,training,report (default: all)."),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the generated benchmark data.")] = False,
    online: Annotated[
        bool,
        typer.Option(
            help="Instead: online feature read latency, SQLite and Redis (needs `make features`)."
        ),
    ] = False,
    reads: Annotated[int, typer.Option(help="Reads per run for --online.")] = 1000,
) -> None:
    """Benchmarks: data layer, online reads, scoring scale, training stages, one report.

    Writes reports/bench/<part>.json per part (data also data.png) and gathers them into
    reports/bench.json and reports/bench.html. Never part of make test.
    """
    from training.benchmarks import suite

    settings = get_settings()
    if online:
        run_online_bench(settings, reads)
        return
    chosen = [s.strip() for s in sizes.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in Size.__members__]
    if unknown or not chosen:
        _fail(f"--sizes takes sizes from {', '.join(Size.__members__)}; got {sizes!r}")
    try:
        parts = suite.parse_parts(only) if only is not None else list(suite.PARTS)
        counts = suite.parse_counts(events, "--events", minimum=1000, maximum=100_000_000)
        items = suite.parse_counts(catalogues, "--catalogues", minimum=100, maximum=2_000_000)
        dims = suite.parse_counts(factors, "--factors", minimum=2, maximum=512)
    except ValueError as error:
        _fail(str(error))
    say = console.print
    bench_dir = settings.reports_dir / "bench"
    if "data" in parts:
        run_data_bench(settings, chosen, repeats, keep)
    if "online" in parts:
        if (settings.features_dir / "customer_features.parquet").exists():
            run_online_bench(settings, reads)
        elif only is not None:
            _fail(f"no features in {settings.features_dir}: run `make features` first")
        else:
            say("skipping online feature latency: run `make features` first")
    if "scale" in parts:
        from training.benchmarks.report import scale_grids

        scale = suite.run_scale(settings, items, dims, repeats, progress=say)
        _print_grids(scale_grids(scale))
        say(
            f"Scale -> {bench_dir / 'scale.json'}; exhaustive scoring exceeds "
            f"{scale['budget_ms']:g} ms p99 above ~{scale['ann_needed_above_items'] or 'never'} "
            "items (ANN needed beyond)"
        )
    if "training" in parts:
        from training.benchmarks.report import training_grids

        try:
            training = suite.run_training(settings, counts, repeats, time_box, progress=say)
        except RuntimeError as error:
            _fail(str(error))
        _print_grids(training_grids(training))
        say(f"Training -> {bench_dir / 'training.json'}")
    if "report" in parts:
        from training.benchmarks.report import write_report

        try:
            json_path, html_path = write_report(settings.reports_dir)
        except FileNotFoundError as error:
            _fail(str(error))
        say(f"Benchmark report -> {json_path} and {html_path}")


def _print_grids(grids: list[tuple[str, list[str], list[list[object]]]]) -> None:
    from rich.markup import escape

    wide = Console(width=max(console.width, 180))  # a dozen columns of figures
    for caption, header, rows in grids:
        table = Table(title=escape(caption))
        for column in header:
            table.add_column(escape(column))
        for row in rows:
            table.add_row(*(escape(str(cell)) for cell in row))
        wide.print(table)


def run_data_bench(settings: Settings, sizes: list[str], repeats: int, keep: bool) -> None:
    import shutil

    from training.data.benchmark import run_benchmark

    workdir = settings.data_dir / "bench"
    try:
        run_benchmark(sizes, settings.seed, workdir, settings.reports_dir, repeats)
    except RuntimeError as error:
        _fail(str(error))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(f"Data bench -> {settings.reports_dir / 'bench' / 'data.json'} and data.png")


def run_online_bench(settings: Settings, reads: int) -> None:
    from training.features.online_benchmark import run_online_benchmark

    if not (settings.features_dir / "customer_features.parquet").exists():
        _fail(f"no features in {settings.features_dir}: run `make features` first")
    results = run_online_benchmark(settings, reads=reads)
    table = Table(title=f"Online read latency, one customer ({reads} reads x 3 runs, medians)")
    for column in ("store", "path", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(column)
    for store in ("sqlite", "redis"):
        for path in ("feast_to_dict", "segrec_reader"):
            figures = results[store][path]
            table.add_row(
                store,
                path,
                f"{figures['p50_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                f"{figures['mean_ms']:.2f}",
            )
    console.print(table)
    console.print(
        f"{results['sqlite']['features']} features per read; "
        f"-> {settings.reports_dir / 'bench' / 'online.json'}"
    )


@app.command("ab-report")
def ab_report(
    alpha: Annotated[
        float, typer.Option(min=0.0001, max=0.5, help="Significance level of the tests.")
    ] = 0.05,
    n_boot: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples for revenue (0 = skip).")
    ] = 2000,
) -> None:
    """A/B report: per experiment and variant, exposures, CTR, add-to-cart, conversion and
    revenue per exposure with intervals, tests against the control (the first variant),
    the sample-ratio check and a per-segment breakdown.

    Reads the exposure and event logs serving writes (data/events/exposures/,
    data/events/live/) and SEGREC_EXPERIMENTS_FILE; attributes outcomes within
    SEGREC_EXPERIMENT_ATTRIBUTION_HOURS. Writes reports/ab/ab_report.{json,html}.
    """
    from segrec.experiments import ExperimentConfigError
    from training.experiments.report import ReportOptions, run_ab_report

    settings = get_settings()
    options = ReportOptions(
        alpha=alpha,
        n_boot=n_boot,
        seed=settings.seed,
        churn_band_edges=settings.churn_band_edges,
    )
    try:
        report, json_path, html_path = run_ab_report(settings, options)
    except ExperimentConfigError as error:
        _fail(str(error))
    logs = report["logs"]
    console.print(
        f"Exposures: {logs['exposures']['used']:,} used of {logs['exposures']['lines']:,} "
        f"lines ({logs['exposures']['bad']:,} bad, {logs['exposures']['duplicates']:,} "
        f"repeated); events: {logs['events']['used']:,} of {logs['events']['lines']:,} "
        f"({logs['events']['bad']:,} bad); outcomes attributed: "
        f"{report['attribution']['attributed']:,} of {report['attribution']['outcome_events']:,}"
    )
    for name, section in report["experiments"].items():
        table = Table(title=f"{name}: control {section['control']}")
        for column in ("variant", "customers", "exposures", "CTR", "conversion", "rev/exposure"):
            table.add_column(column)
        for variant, v in section["variants"].items():
            table.add_row(
                variant,
                f"{v['customers']:,}",
                f"{v['exposures']:,}",
                f"{100 * (v['ctr']['estimate'] or 0):.2f}%",
                f"{100 * (v['conversion']['estimate'] or 0):.2f}%",
                f"{v['revenue_per_exposure']['estimate'] or 0:.3f}",
            )
        console.print(table)
        srm = section["srm"]
        if srm.get("checked"):
            state = "[bold red]MISMATCH[/]" if srm["mismatch"] else "ok"
            console.print(f"  sample ratio {state} (p = {srm['p_value']:.3g})")
        else:
            console.print(f"  sample ratio not checked: {srm['reason']}")
        for line in section["verdict"]:
            console.print(f"  {line}")
    if not report["experiments"]:
        console.print(f"No exposures in {settings.exposure_log_dir}: no experiment served yet.")
    console.print(f"A/B report -> {json_path}, {html_path}")


@app.command()
def simulate(
    url: Annotated[str, typer.Option(help="The running service.")] = "http://127.0.0.1:3000",
    visits: Annotated[int, typer.Option(min=1, help="Simulated visits.")] = 2000,
    seed: Annotated[int | None, typer.Option(help="Seed (default: SEGREC_SEED).")] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="Items per carousel.")] = 10,
    placement: Annotated[
        list[str] | None,
        typer.Option(help="Placement of the visits: home, email, product (repeatable)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Concurrent customers.")] = 4,
) -> None:
    """Replay synthetic customers through a running service: each visit asks /recommend,
    the generator's planted tastes decide clicks, carts and purchases, posted to /events.

    Needs the synthetic raw data (data/raw/synthetic/, from `make data`) the service was
    trained on and the same SEGREC_PSEUDONYMISATION_SECRET. Then run `make ab-report`.
    """
    from training.experiments.simulator import PlantedPreferences, SimulationError
    from training.experiments.simulator import simulate as run_simulation

    settings = get_settings()
    chosen = placement or ["home"]
    try:
        preferences = PlantedPreferences.from_raw(
            settings.raw_dir / "synthetic", settings.pseudonymisation_secret.get_secret_value()
        )
        result = run_simulation(
            url,
            preferences,
            visits=visits,
            seed=settings.seed if seed is None else seed,
            k=k,
            placements=dict.fromkeys(chosen, 1.0),
            workers=workers,
        )
    except (SimulationError, ValueError) as error:
        _fail(str(error))
    summary = result.summary()
    table = Table(title=f"{summary['visits']:,} visits in {summary['seconds']} s")
    for column in ("experiment/variant", "customers", "exposures", "clicks", "purchases"):
        table.add_column(column)
    for key, figures in summary["variants"].items():
        table.add_row(
            key,
            f"{figures['customers']:,}",
            f"{figures['exposures']:,}",
            f"{figures['clicks']:,}",
            f"{figures['purchases']:,}",
        )
    console.print(table)
    console.print(
        f"{summary['outside_experiments']:,} visits outside any experiment; events "
        f"{summary['events_accepted']:,} accepted, {summary['events_rejected']:,} rejected; "
        f"{summary['recommend_errors']:,} failed /recommend calls"
    )
    for problem in summary["errors"]:
        err_console.print(f"  {problem}")


@app.command()
def erase(
    customer: Annotated[
        str, typer.Argument(help="The customer's pseudonym (c_...) or raw id from the export.")
    ],
    actor: Annotated[
        str | None, typer.Option(help="Who asks (for the audit log; default: your login).")
    ] = None,
) -> None:
    """Forget a customer everywhere: the online store (every feature view), offline Parquet
    data, event and exposure logs; suppress them in later events, imports and training.
    Audited by pseudonym only. With the service running, prefer POST /admin/erase."""
    import getpass

    from segrec.audit import AuditLog, clean_actor
    from segrec.erasure import ErasureError, erase_customer

    settings = get_settings()
    who = clean_actor(actor, f"cli:{clean_actor(getpass.getuser(), 'unknown')}")
    audit = AuditLog(settings.audit_log_file)
    try:
        report = erase_customer(settings, customer)
    except ErasureError as error:
        audit.record(actor=who, action="erase", outcome="rejected", details={"error": str(error)})
        _fail(str(error))
    audit.record(actor=who, action="erase", outcome="erased", details=report.as_dict())
    table = Table("removed from", "rows or lines")
    table.add_row("online store (every feature view)", str(report.online_rows))
    for path, count in {**report.parquet_rows, **report.log_lines}.items():
        table.add_row(path, str(count))
    console.print(table)
    note = " (already suppressed)" if report.already_suppressed else ""
    console.print(
        f"Erased {report.customer}{note}, with {report.merged_ids} merged record(s); "
        f"suppressed in {settings.suppression_file}, audited in {settings.audit_log_file}"
    )


@app.command()
def consent(
    customer: Annotated[str, typer.Argument(help="The customer's pseudonym or raw id.")],
    withdraw: Annotated[
        bool,
        typer.Option(
            "--withdraw/--grant",
            help="Withdraw consent to personalisation (default), or grant it again.",
        ),
    ] = True,
) -> None:
    """Record a consent change: applied to the online store now (next request) and to
    the next feature build and training. Audited."""
    import getpass

    from segrec.audit import AuditLog, clean_actor
    from segrec.consent import ConsentError, change_consent

    settings = get_settings()
    who = f"cli:{clean_actor(getpass.getuser(), 'unknown')}"
    try:
        change = change_consent(settings, customer, not withdraw)
    except ConsentError as error:
        _fail(str(error))
    AuditLog(settings.audit_log_file).record(
        actor=who, action="consent", outcome="changed", details=change.as_dict()
    )
    state = "granted" if change.personalisation else "withdrawn"
    online = "now" if change.online_updated else "when they next appear (no online profile yet)"
    console.print(
        f"Consent to personalisation {state} for {change.customer_id}: serving follows {online}, "
        f"training from the next run ({settings.consent_file})"
    )


@app.command("audit")
def audit_check() -> None:
    """Check the admin audit log's hash chain and show its last entries."""
    from segrec.audit import verify_audit_log

    settings = get_settings()
    check = verify_audit_log(settings.audit_log_file)
    for problem in check.problems:
        err_console.print(f"[bold red]{problem}[/]")
    if not check.ok:
        _fail(f"{settings.audit_log_file}: the chain is broken ({len(check.problems)} problems)")
    console.print(f"{settings.audit_log_file}: {check.entries} entries, chain intact")


@app.command("settings")
def show_settings() -> None:
    """Print every setting, its environment variable, current value and meaning."""
    settings = get_settings()
    table = Table(title="Settings (override with environment variables)")
    for column in ("variable", "value", "meaning"):
        table.add_column(column)
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        shown = "******" if name.endswith("secret") else str(value)
        table.add_row(f"SEGREC_{name.upper()}", shown, field.description or "")
    console.print(table)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
