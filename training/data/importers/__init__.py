"""Importers: turn a real export into a raw dataset, doing only what its format needs.

Each importer streams its source in chunks of ``settings.chunk_rows`` and writes the
raw ``customers``/``products``/``events`` tables of :mod:`training.data.raw`; the
generic cleaning step does the rest. :func:`import_export` is the one entry point.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from segrec.settings import Settings
from training.data.importers.canonical import import_canonical
from training.data.importers.encoding import ImportFormatError
from training.data.importers.movielens import import_movielens
from training.data.importers.online_retail import import_online_retail
from training.data.quality import QualityReport
from training.data.raw import RawDataset

__all__ = ["IMPORTERS", "ImportFormatError", "Importer", "import_export"]


class Importer(Protocol):
    def __call__(
        self,
        input_path: Path,
        out_dir: Path,
        report: QualityReport,
        settings: Settings,
        column_map: dict[str, str] | None = None,
    ) -> RawDataset: ...


IMPORTERS: dict[str, Importer] = {
    "canonical": import_canonical,
    "online-retail": import_online_retail,
    "movielens": import_movielens,
}


def import_export(
    fmt: str,
    input_path: Path,
    out_dir: Path,
    report: QualityReport,
    settings: Settings,
    column_map: dict[str, str] | None = None,
) -> RawDataset:
    """Import the export at ``input_path`` in format ``fmt`` into a raw dataset at ``out_dir``.

    Parameters
    ----------
    fmt
        One of :data:`IMPORTERS`: ``canonical``, ``online-retail``, ``movielens``.
    input_path
        The export: a directory (canonical, movielens) or a CSV file (online-retail).
    out_dir
        Directory the raw dataset is written to.
    report
        Receives fix counts, notes and set-aside rows, under tables named
        ``import.<table>`` so the import and cleaning stages each balance on their own.
    settings
        ``chunk_rows``, ``import_consent`` and ``dayfirst`` are used.
    column_map
        Source column name -> canonical (or, for online-retail, Online Retail) name.

    Raises
    ------
    ImportFormatError
        For an unknown format, a missing input, or an export the format cannot read.
    """
    importer = IMPORTERS.get(fmt)
    if importer is None:
        raise ImportFormatError(f"unknown import format {fmt!r}; choose one of {list(IMPORTERS)}")
    if not input_path.exists():
        raise ImportFormatError(f"{input_path}: no such file or directory")
    # Written aside and moved into place whole: an import that fails half way (a parse
    # error in the last chunk) leaves the previous raw dataset as it was, not a mix.
    staging = out_dir.with_name(f".{out_dir.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with report.stage("import"):
            raw = importer(input_path, staging, report, settings, column_map)
            # Every source row was either passed on to cleaning or set aside here.
            for table in ("customers", "products", "events"):
                quality = report.table(table)
                quality.rows_out = raw.count(table)
                quality.rows_in = quality.rows_out + sum(quality.set_aside.values())
        _replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RawDataset(out_dir)


def _replace_dir(new: Path, target: Path) -> None:
    previous = target.with_name(f".{target.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    new.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
