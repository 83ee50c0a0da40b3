"""The first step of cleaning any table: rows need an id to go on."""

from __future__ import annotations

import pandas as pd

from training.data.cleaning.parse import normalise_ids
from training.data.quality import QualityReport


def identified_rows(
    raw: pd.DataFrame, table: str, id_column: str, report: QualityReport
) -> pd.DataFrame:
    """Count ``raw`` in, normalise its ids and set aside rows without one
    (reason ``missing_<id_column>``); returns the rest."""
    quality = report.table(table)
    quality.rows_in += len(raw)
    frame = raw.copy()
    frame[id_column], fixed = normalise_ids(frame[id_column])
    quality.fix("float_id_normalised", fixed)
    missing = frame[id_column].isna()
    report.set_aside(table, frame[missing], f"missing_{id_column}")
    return frame[~missing]
