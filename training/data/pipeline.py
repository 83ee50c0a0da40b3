"""Raw dataset -> clean canonical tables, quality report and manifest.

Order matters: products first (events are checked against them), then the first events
pass (which finds every customer's first event), then customers (whose merges decide
where events go), then the second events pass.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segrec.erasure import SuppressionList
from segrec.settings import Settings
from training.data.cleaning.customers import clean_customers
from training.data.cleaning.events import stage_events, write_clean_events
from training.data.cleaning.products import clean_products, list_prices
from training.data.quality import QualityReport
from training.data.quality_plot import plot_quality
from training.data.raw import RawDataset
from training.data.tables import write_table

CLEANING_VERSION = "1"


@dataclass(frozen=True)
class CleanSummary:
    clean_dir: Path
    report_path: Path
    rows: dict[str, int]
    data_version: str
    seconds: float
    report: dict[str, Any]


def clean_dataset(
    raw: RawDataset, settings: Settings, report: QualityReport | None = None
) -> CleanSummary:
    """Clean ``raw`` into ``settings.clean_dir`` and write ``reports/data_quality.json``.

    Pass the importer's ``report`` to keep its counts and set-aside rows in the same
    ledger.
    """
    started = time.perf_counter()
    secret = settings.pseudonymisation_secret.get_secret_value()
    clean_dir = settings.clean_dir
    clean_dir.mkdir(parents=True, exist_ok=True)
    report = report or QualityReport(settings.set_aside_dir, secret)
    source = raw.meta()
    dayfirst = bool(source.get("dayfirst", settings.dayfirst))
    report.meta.update(
        {
            "source": source,
            "cleaning_version": CLEANING_VERSION,
            "dayfirst": dayfirst,
            "naive_timestamps": "read as UTC",
            "pseudonymisation_secret": "development default (set SEGREC_PSEUDONYMISATION_SECRET)"
            if settings.uses_development_secret
            else "configured",
        }
    )
    # Erased customers (segrec erase) stay out of every import: their rows are withheld
    # before cleaning and only counted, never set aside (a set-aside row keeps the record).
    suppression = SuppressionList(settings.suppression_file)
    withheld = {"customers": 0, "events": 0}

    def without_erased(frame: pd.DataFrame, table: str) -> pd.DataFrame:
        mask = suppression.withheld(frame["customer_id"], secret)
        withheld[table] += int(mask.sum())
        return frame[~mask] if mask.any() else frame

    try:
        products = clean_products(raw.read("products"), report, settings, dayfirst=dayfirst)
        list_price = list_prices(products)
        staging = clean_dir / ".staging" / "events.parquet"
        staged = stage_events(
            (
                without_erased(chunk, "events")
                for chunk in raw.iter_chunks("events", settings.chunk_rows)
            ),
            list_price,
            report,
            staging,
            dayfirst=dayfirst,
            total_rows=raw.count("events"),
        )
        reference_year = (
            int(staged.first_event.max().year)
            if len(staged.first_event)
            else pd.Timestamp.now().year
        )
        customers = clean_customers(
            without_erased(raw.read("customers"), "customers"),
            staged.first_event,
            report,
            settings,
            dayfirst=dayfirst,
            reference_year=reference_year,
        )
        write_table(clean_dir, "products", products)
        write_table(clean_dir, "customers", customers.table)
        _write_id_map(clean_dir, customers.id_map, secret)
        write_clean_events(staged, customers.id_map, list_price, report, settings, clean_dir)
    finally:
        report.close()
        shutil.rmtree(clean_dir / ".staging", ignore_errors=True)

    rows = {name: report.table(name).rows_out for name in ("customers", "products", "events")}
    hashes = {name: _file_sha256(clean_dir / f"{name}.parquet") for name in rows}
    data_version = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:12]
    report.meta["data_version"] = data_version
    report.meta["erased_customers_withheld"] = {**withheld, **suppression.fingerprint()}
    report_path = settings.reports_dir / "data_quality.json"
    report.write(report_path)
    plot_quality(report.as_dict(), settings.reports_dir / "data_quality.png")
    manifest = {
        "data_version": data_version,
        "cleaning_version": CLEANING_VERSION,
        "source": source,
        "rows": rows,
        "sha256": hashes,
        "quality_report": str(report_path),
    }
    (clean_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return CleanSummary(
        clean_dir=clean_dir,
        report_path=report_path,
        rows=rows,
        data_version=data_version,
        seconds=round(time.perf_counter() - started, 2),
        report=report.as_dict(),
    )


def _write_id_map(clean_dir: Path, id_map: pd.Series, secret: str) -> None:
    """Every source customer id (as its pseudonym) -> the clean id it was merged into."""
    from training.data.cleaning.privacy import pseudonymise_ids

    frame = pd.DataFrame(
        {
            "source_customer_id": pseudonymise_ids(pd.Series(id_map.index), secret).to_numpy(),
            "customer_id": id_map.to_numpy(),
        }
    )
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), clean_dir / "customer_id_map.parquet"
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
