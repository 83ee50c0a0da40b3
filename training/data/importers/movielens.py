"""Import a GroupLens MovieLens directory: the ML-100K layout or the ml-latest one.

ML-100K has ``u.data`` (tab separated ratings), ``u.item`` (pipe separated, Latin-1,
19 genre flags) and ``u.user`` (demographics). ml-latest (and ML-20M/25M) has
``ratings.csv`` and ``movies.csv`` (genres joined by ``|``) and no users. Ratings become
``rating`` events whose ``ts`` stays the epoch-seconds text and whose ``value`` is the
rating; event ids are ``user-movie-timestamp``, the ratings' natural key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from segrec.settings import Settings
from training.data.importers.canonical import FirstSeen, assume_consent, normalise_float_ids
from training.data.importers.encoding import ImportFormatError, iter_csv_chunks, read_header
from training.data.quality import QualityReport
from training.data.raw import RawDataset, RawTableWriter

# Column order of u.item's genre flags, as listed in ML-100K's u.genre.
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
ITEM_COLUMNS = ("movieId", "title", "release_date", "video_release_date", "imdb_url")
USER_COLUMNS = ("userId", "age", "gender", "occupation", "zip")
MOVIE_COLUMNS = ("movieId", "title", "genres")
# ml-latest's marker for a movie without genres.
NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class _File:
    """One file of a layout: CSV with a header, or ML-100K's header-less unquoted text."""

    name: str
    columns: tuple[str, ...]
    sep: str = ","
    headerless: bool = False
    optional: bool = False

    def present(self, directory: Path) -> bool:
        return (directory / self.name).is_file()

    def check(self, directory: Path) -> None:
        path = directory / self.name
        if not path.is_file():
            if self.optional:
                return
            raise ImportFormatError(f"{path}: missing; this MovieLens layout needs it")
        if self.headerless:
            return
        found = read_header(path)
        missing = [column for column in self.columns if column not in found]
        if missing:
            raise ImportFormatError(
                f"{path}: missing required column(s) {missing}; columns found: {found}"
            )

    def chunks(
        self, directory: Path, report: QualityReport, table: str, rows: int
    ) -> Iterator[pd.DataFrame]:
        path = directory / self.name
        if not self.headerless:
            return iter_csv_chunks(path, report, table, rows)
        return iter_csv_chunks(
            path, report, table, rows, sep=self.sep, names=list(self.columns), quoted=False
        )


LAYOUTS: dict[str, dict[str, _File]] = {
    "ml-100k": {
        "ratings": _File("u.data", RATING_COLUMNS, "\t", headerless=True),
        "items": _File("u.item", (*ITEM_COLUMNS, *ML100K_GENRES), "|", headerless=True),
        "users": _File("u.user", USER_COLUMNS, "|", headerless=True, optional=True),
    },
    "ml-latest": {
        "ratings": _File("ratings.csv", RATING_COLUMNS),
        "items": _File("movies.csv", MOVIE_COLUMNS),
    },
}


def import_movielens(
    input_path: Path,
    out_dir: Path,
    report: QualityReport,
    settings: Settings,
    column_map: dict[str, str] | None = None,
) -> RawDataset:
    """Import a MovieLens directory into a raw dataset at ``out_dir``.

    Raises
    ------
    ImportFormatError
        When the directory matches neither layout, a file lacks columns, or a column
        mapping is given (MovieLens files have fixed columns).
    """
    if column_map:
        raise ImportFormatError(
            "movielens files have fixed columns; the mapping option (--map) is for the "
            "canonical and online-retail formats"
        )
    layout = _detect_layout(input_path)
    files = LAYOUTS[layout]
    for file in files.values():
        file.check(input_path)

    seen = FirstSeen("customer_id")
    latest: pd.Series | None = None  # epoch seconds of each user's latest rating
    events_quality = report.table("events")
    with RawTableWriter(out_dir, "events") as writer:
        for chunk in files["ratings"].chunks(input_path, report, "events", settings.chunk_rows):
            events = _rating_events(chunk, report)
            seen.update(events)
            stamps = pd.to_numeric(events["ts"], errors="coerce")
            chunk_latest = stamps.groupby(events["customer_id"], sort=False).max()
            if latest is not None:
                chunk_latest = pd.concat([latest, chunk_latest]).groupby(level=0).max()
            latest = chunk_latest
            writer.write(events)
    events_quality.notes["imported"] = {"source": files["ratings"].name, "rows": writer.rows}

    with RawTableWriter(out_dir, "products") as writer:
        for chunk in files["items"].chunks(input_path, report, "products", settings.chunk_rows):
            writer.write(_products(chunk, layout, report))

    users = (
        files["users"].chunks(input_path, report, "customers", settings.chunk_rows)
        if "users" in files and files["users"].present(input_path)
        else None
    )
    with RawTableWriter(out_dir, "customers") as writer:
        customers = _customers(users, seen, latest, report)
        assume_consent(customers, report.table("customers"), settings)
        writer.write(customers)

    dataset = RawDataset(out_dir)
    dataset.write_meta(
        {
            "format": "movielens",
            "layout": layout,
            "ts_unit": "epoch_seconds",
            "files": {role: file.name for role, file in files.items() if file.present(input_path)},
        }
    )
    return dataset


def _detect_layout(directory: Path) -> str:
    if not directory.is_dir():
        raise ImportFormatError(f"{directory}: movielens expects a directory, not a file")
    present = [layout for layout, files in LAYOUTS.items() if files["ratings"].present(directory)]
    if len(present) != 1:
        found = sorted(path.name for path in directory.iterdir())
        which = "both u.data and" if present else "neither u.data nor"
        raise ImportFormatError(
            f"{directory}: holds {which} ratings.csv; expected u.data, u.item, u.user "
            f"(ML-100K) or ratings.csv, movies.csv (ml-latest); files found: {found}"
        )
    return present[0]


def _rating_events(chunk: pd.DataFrame, report: QualityReport) -> pd.DataFrame:
    quality = report.table("events")
    user = normalise_float_ids(chunk["userId"], quality)
    movie = normalise_float_ids(chunk["movieId"], quality)
    key = user.fillna("") + "-" + movie.fillna("") + "-" + chunk["timestamp"].fillna("")
    return pd.DataFrame(
        {
            "event_id": key,
            "customer_id": user,
            "product_id": movie,
            "ts": chunk["timestamp"],
            "type": "rating",
            "quantity": "1",
            "value": chunk["rating"],
            "_source": chunk["_source"],
            "_row": chunk["_row"],
        },
        index=chunk.index,
    )


def _products(chunk: pd.DataFrame, layout: str, report: QualityReport) -> pd.DataFrame:
    genres = _genres(chunk, layout)
    title = chunk["title"]
    description = [
        None if pd.isna(name) else f"{name}. Genres: {', '.join(found)}" if found else name
        for name, found in zip(title, genres, strict=True)
    ]
    return pd.DataFrame(
        {
            "product_id": normalise_float_ids(chunk["movieId"], report.table("products")),
            "title": title,
            "description": description,
            "category": [found[0] if found else None for found in genres],
            "tags": ["|".join(found) if found else None for found in genres],
            "in_stock": "true",
            "_source": chunk["_source"],
            "_row": chunk["_row"],
        },
        index=chunk.index,
    )


def _genres(chunk: pd.DataFrame, layout: str) -> list[list[str]]:
    if layout == "ml-latest":
        return [
            [] if pd.isna(text) or text == NO_GENRES else text.split("|")
            for text in chunk["genres"]
        ]
    flags = (chunk[list(ML100K_GENRES)] == "1").to_numpy()
    return [
        [genre for genre, flag in zip(ML100K_GENRES, row, strict=True) if flag] for row in flags
    ]


def _customers(
    users: Iterator[pd.DataFrame] | None,
    seen: FirstSeen,
    latest: pd.Series | None,
    report: QualityReport,
) -> pd.DataFrame:
    """Demographic customers from ``u.user`` plus id-only ones for raters it lacks."""
    quality = report.table("customers")
    raters = seen.frame()
    if users is None:
        quality.notes["derived_from_events"] = len(raters)
        return raters
    # Users fit in memory at every size (ML-100K has 943).
    frame = pd.concat(list(users), ignore_index=True)
    ids = normalise_float_ids(frame["userId"], quality)
    # u.user has age, not birth year: the age is taken as of the user's latest rating.
    stamps = (latest if latest is not None else pd.Series(dtype="float64")).reindex(ids.to_numpy())
    rated = pd.to_datetime(stamps, unit="s", utc=True, errors="coerce")
    age = pd.to_numeric(frame["age"], errors="coerce")
    birth_year = pd.Series(rated.dt.year.to_numpy() - age.to_numpy(), index=frame.index)
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "birth_year": birth_year.astype("Int64").astype(str).where(birth_year.notna(), None),
            "gender": frame["gender"],
            "occupation": frame["occupation"],
            "postcode": frame["zip"],
            "country": "US",
            "_source": frame["_source"],
            "_row": frame["_row"],
        }
    )
    unknown_year = int(birth_year.isna().sum())
    if unknown_year:
        quality.notes["birth_year_unknown"] = unknown_year
    missing = raters[~raters["customer_id"].isin(ids)]
    if not missing.empty:
        quality.notes["raters_without_demographics"] = len(missing)
    return pd.concat([customers, missing], ignore_index=True)
