"""Data-layer benchmark: generation, import and cleaning throughput and peak memory by size.

Each stage runs in its own process so its peak resident memory is its own, ``repeats``
times per size: each figure is the median run's, with ``<figure>_range`` its min and max.
Run with ``make bench`` (``BENCH_SIZES=small,medium,large``); results go to
``reports/bench/data.json`` and ``reports/bench/data.png``. Nothing here is asserted in
tests: timings on a shared machine are for reading, not for gating.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from segrec.settings import Settings
from training.data.importers.online_retail import SOURCE_COLUMNS

PURCHASE_SPELLINGS = ("purchase", "Purchase", "PURCHASE", "order")


def _peak_mb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def stage_generate(size: str, seed: int, out_dir: Path) -> dict[str, Any]:
    from training.data.synthetic.generator import generate

    started = time.perf_counter()
    summary = generate(out_dir, size, seed, Settings().synthetic_end, progress=False)
    seconds = time.perf_counter() - started
    rows = summary.customers + summary.products + summary.events
    return {"rows": rows, "events": summary.events, "seconds": seconds}


def stage_export_invoices(raw_dir: Path, csv_path: Path) -> dict[str, Any]:
    """Write the synthetic purchases as an Online Retail CSV (month-first dates, float ids,
    a share of cancellations), so the importer is measured on a file of realistic size."""
    titles = pq.read_table(raw_dir / "products.parquet", columns=["product_id", "title"])
    title = titles.to_pandas().drop_duplicates("product_id").set_index("product_id")["title"]
    parquet = pq.ParquetFile(raw_dir / "events.parquet")
    lines = 0
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(SOURCE_COLUMNS) + "\n")
        for batch in parquet.iter_batches(batch_size=1_000_000):
            events = batch.to_pandas()
            bought = events[events["type"].isin(PURCHASE_SPELLINGS) & events["price"].notna()]
            ts = pd.to_datetime(bought["ts"], format="ISO8601", utc=True, errors="coerce")
            ts = ts.fillna(pd.Timestamp("2026-01-01", tz="UTC"))
            invoice = bought["session_id"].fillna("S0").str[1:].astype("int64") + 500_000
            lines_out = pd.DataFrame(
                {
                    "InvoiceNo": invoice.astype(str),
                    "StockCode": bought["product_id"],
                    "Description": bought["product_id"].map(title),
                    "Quantity": bought["quantity"],
                    "InvoiceDate": ts.dt.strftime("%-m/%-d/%Y %-H:%M"),
                    "UnitPrice": bought["price"],
                    "CustomerID": bought["customer_id"].str.replace(".0", "", regex=False) + ".0",
                    "Country": "United Kingdom",
                }
            )
            cancelled = lines_out.sample(frac=0.02, random_state=0)
            cancelled = cancelled.assign(
                InvoiceNo="C" + cancelled["InvoiceNo"], Quantity="-" + cancelled["Quantity"]
            )
            out = pd.concat([lines_out, cancelled])
            out.to_csv(handle, header=False, index=False)
            lines += len(out)
    return {"lines": lines, "megabytes": round(csv_path.stat().st_size / 2**20, 1)}


def stage_import(csv_path: Path, data_dir: Path) -> dict[str, Any]:
    from training.data.importers import import_export
    from training.data.quality import QualityReport

    settings = Settings(data_dir=data_dir)
    report = QualityReport(settings.set_aside_dir, "benchmark")
    started = time.perf_counter()
    raw = import_export(
        "online-retail", csv_path, settings.raw_dir / "online-retail", report, settings
    )
    report.close()
    seconds = time.perf_counter() - started
    lines = report.table("import.events").rows_in
    return {"rows": lines, "seconds": seconds, "events_out": raw.count("events")}


def stage_clean(raw_dir: Path, data_dir: Path) -> dict[str, Any]:
    from training.data.pipeline import clean_dataset
    from training.data.raw import RawDataset

    settings = Settings(data_dir=data_dir, reports_dir=data_dir / "reports")
    started = time.perf_counter()
    summary = clean_dataset(RawDataset(raw_dir), settings)
    seconds = time.perf_counter() - started
    rows = sum(t["rows_in"] for t in summary.report["tables"].values())
    return {"rows": rows, "seconds": seconds, "rows_out": summary.rows}


STAGES = {
    "generate": lambda a: stage_generate(a[0], int(a[1]), Path(a[2])),
    "export": lambda a: stage_export_invoices(Path(a[0]), Path(a[1])),
    "import": lambda a: stage_import(Path(a[0]), Path(a[1])),
    "clean": lambda a: stage_clean(Path(a[0]), Path(a[1])),
}


def _run_stage(name: str, *args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "training.data.benchmark", name, *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark stage {name} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if "seconds" in measured and "rows" in measured:
        measured["rows_per_second"] = round(measured["rows"] / measured["seconds"])
        measured["seconds"] = round(measured["seconds"], 1)
    return measured


SPREAD_FIGURES = ("seconds", "rows_per_second", "peak_mb")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The last run's counts with each timing figure replaced by its median over the runs
    and ``<figure>_range`` [min, max] beside it."""
    combined = dict(runs[-1], runs=len(runs))
    for figure in SPREAD_FIGURES:
        values = [r[figure] for r in runs if figure in r]
        if values:
            combined[figure] = statistics.median(values)
            combined[f"{figure}_range"] = [min(values), max(values)]
    return combined


def run_benchmark(
    sizes: list[str], seed: int, workdir: Path, reports_dir: Path, repeats: int = 1
) -> dict:
    """Measure every stage ``repeats`` times for each size; returns and writes the results."""
    results: dict[str, Any] = {
        "seed": seed,
        "cpus": _cpu_count(),
        "repeats": repeats,
        "sizes": {},
    }
    for size in sizes:
        root = workdir / size
        raw_dir = root / "raw" / "synthetic"
        csv_path = root / "online_retail.csv"
        runs: dict[str, list[dict[str, Any]]] = {}
        for repeat in range(repeats):
            tag = f"[{size} {repeat + 1}/{repeats}]"
            print(f"{tag} generate", flush=True)
            runs.setdefault("generate", []).append(
                _run_stage("generate", size, str(seed), str(raw_dir))
            )
            print(f"{tag} export invoices", flush=True)
            exported = _run_stage("export", str(raw_dir), str(csv_path))
            runs.setdefault("online_retail_csv", []).append(exported)
            print(f"{tag} import {exported['megabytes']} MB", flush=True)
            runs.setdefault("import_online_retail", []).append(
                _run_stage("import", str(csv_path), str(root / f"import-{repeat}"))
            )
            print(f"{tag} clean", flush=True)
            runs.setdefault("clean", []).append(
                _run_stage("clean", str(raw_dir), str(root / f"clean-{repeat}"))
            )
        results["sizes"][size] = {stage: _median_run(r) for stage, r in runs.items()}
        print(json.dumps(results["sizes"][size]), flush=True)
    bench_dir = reports_dir / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / "data.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, bench_dir / "data.png")
    return results


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(results["sizes"])
    stages = ("generate", "import_online_retail", "clean")
    fig, (speed_ax, memory_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for stage in stages:
        speed_ax.plot(
            sizes,
            [results["sizes"][s][stage]["rows_per_second"] for s in sizes],
            marker="o",
            label=stage,
        )
        memory_ax.plot(
            sizes, [results["sizes"][s][stage]["peak_mb"] for s in sizes], marker="o", label=stage
        )
    speed_ax.set_title("Throughput (input rows per second)")
    memory_ax.set_title("Peak resident memory (MB)")
    for ax in (speed_ax, memory_ax):
        ax.set_xlabel("synthetic size")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> None:
    measured = STAGES[argv[0]](argv[1:])
    measured["peak_mb"] = _peak_mb()
    print(json.dumps(measured, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
