"""Reading source text files: mixed encodings, chunked CSV streaming, and the import error.

Real exports mix UTF-8 with cp1252/Latin-1 bytes, sometimes line by line in one file.
:class:`MixedEncodingReader` turns such a file into clean UTF-8 bytes so pandas' C
parser can read it, and :func:`iter_csv_chunks` streams it in bounded chunks with
``_source``/``_row`` provenance. ``_row`` is the 1-based data row number: the first
row after the header is 1 (in a header-less file the first line is 1).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from training.data.quality import QualityReport

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BLOCK_BYTES = 1 << 20
# Tried in order for a line that is not valid UTF-8; latin-1 decodes any byte, so it is last.
FALLBACK_ENCODINGS = ("cp1252", "latin-1")
FIX_KINDS = {"cp1252": "encoding_fallback_cp1252", "latin-1": "encoding_fallback_latin1"}
# How ``surrogateescape`` decoding marks a byte that is not valid UTF-8.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): ([^\n]*)")


class ImportFormatError(ValueError):
    """A source export cannot be imported; the message names the file and what is wrong."""


class MixedEncodingReader(io.RawIOBase):
    """Binary reader yielding UTF-8, decoding each source line as UTF-8, cp1252 or Latin-1.

    Blocks that are valid UTF-8 as a whole pass through untouched (the common case);
    elsewhere only the lines holding an invalid byte are decoded again, so big files
    stay fast. ``fallbacks`` counts those lines per encoding used.

    Parameters
    ----------
    raw
        The source file opened in binary mode.
    name
        File name used in error messages.
    """

    def __init__(self, raw: BinaryIO, name: str = "<file>") -> None:
        super().__init__()
        self._raw = raw
        self._name = name
        self._tail = b""  # an incomplete last line, kept until its newline arrives
        self._out = memoryview(b"")
        self._at_start = True
        self._eof = False
        self.bytes_read = 0
        self.fallbacks: Counter[str] = Counter()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._out and not self._eof:
            self._out = memoryview(self._next_block())
        target = memoryview(buffer).cast("B")
        size = min(len(target), len(self._out))
        target[:size] = self._out[:size]
        self._out = self._out[size:]
        return size

    def _next_block(self) -> bytes:
        block = self._raw.read(BLOCK_BYTES)
        self.bytes_read += len(block)
        if self._at_start:
            block = self._strip_bom(block)
        if not block:
            self._eof = True
            block, self._tail = self._tail, b""
            return self._transcode(block)
        block = self._tail + block
        cut = block.rfind(b"\n") + 1
        # A newline byte never occurs inside a UTF-8 or cp1252 character, so cutting there is safe.
        self._tail = block[cut:]
        return self._transcode(block[:cut])

    def _strip_bom(self, block: bytes) -> bytes:
        self._at_start = False
        if block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise ImportFormatError(
                f"{self._name}: the file is UTF-16 encoded; save it as UTF-8 (or CSV UTF-8)"
            )
        return block.removeprefix(codecs.BOM_UTF8)

    def _transcode(self, block: bytes) -> bytes:
        """Pass valid UTF-8 through; re-decode each line holding an invalid byte."""
        try:
            block.decode("utf-8")
            return block
        except UnicodeDecodeError:
            pass
        # One C-speed pass marks every invalid byte as a lone surrogate; only the lines
        # holding one are decoded again, so many bad lines in a block stay cheap.
        text = block.decode("utf-8", "surrogateescape")
        parts: list[str] = []
        start = 0
        for bad in _ESCAPED_BYTE.finditer(text):
            if bad.start() < start:
                continue  # on a line already re-decoded
            line_start = text.rfind("\n", start, bad.start()) + 1 or start
            line_end = text.find("\n", bad.start()) + 1 or len(text)
            line = text[line_start:line_end].encode("utf-8", "surrogateescape")
            parts += [text[start:line_start], self._fallback(line)]
            start = line_end
        parts.append(text[start:])
        return "".join(parts).encode("utf-8")

    def _fallback(self, line: bytes) -> str:
        for encoding in FALLBACK_ENCODINGS:
            try:
                text = line.decode(encoding)
            except UnicodeDecodeError:
                continue
            self.fallbacks[encoding] += 1
            return text
        raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def read_header(path: Path, *, sep: str = ",") -> list[str]:
    """Column names of a CSV file (whitespace stripped), read through the encoding fixer."""
    with path.open("rb") as raw, MixedEncodingReader(raw, path.name) as reader:
        try:
            frame = pd.read_csv(
                io.BufferedReader(reader), sep=sep, nrows=0, dtype=str, encoding="utf-8"
            )
        except pd.errors.EmptyDataError:
            raise ImportFormatError(f"{path}: the file is empty (no header line)") from None
        except (pd.errors.ParserError, ValueError) as error:
            raise ImportFormatError(f"{path}: cannot parse as CSV: {_explain(error)}") from None
    columns = [str(column).strip() for column in frame.columns]
    if len(columns) == 1 and sep == ",":
        for other in (";", "\t", "|"):
            if other in columns[0]:
                raise ImportFormatError(
                    f"{path}: the header has one column, {columns[0]!r}; the file seems to "
                    f"separate fields with {other!r}: save it as comma-separated CSV"
                )
    return columns


def _explain(error: Exception) -> str:
    text = str(error).strip()
    if "EOF inside string" in text:
        return f"{text} (a double quote that is never closed?)"
    return text


def iter_csv_chunks(
    path: Path,
    report: QualityReport,
    table: str,
    chunk_rows: int,
    *,
    sep: str = ",",
    names: list[str] | None = None,
    quoted: bool = True,
) -> Iterator[pd.DataFrame]:
    """Stream a delimited text file as all-string chunks with ``_source`` and ``_row``.

    Empty fields become nulls; everything else stays the source text. Encoding fallbacks
    are counted as fixes of ``table``; lines with too many fields are set aside as
    ``malformed_line`` (the parser cannot give their values, only where they are).

    Parameters
    ----------
    path
        The file; its name becomes ``_source``.
    report, table
        Where fallbacks and malformed lines are counted.
    chunk_rows
        Rows per yielded chunk.
    sep
        Field separator.
    names
        Column names for a header-less file; ``None`` reads them from the first line.
    quoted
        Whether ``"`` quotes fields (MovieLens' pipe and tab files do not quote).

    Raises
    ------
    ImportFormatError
        When the file cannot be parsed as delimited text at all.
    """
    quality = report.table(table)
    header_lines = 0 if names is not None else 1
    bad_rows: list[int] = []  # data row numbers of skipped lines, ascending
    reported: Counter[str] = Counter()
    with (
        path.open("rb") as raw,
        MixedEncodingReader(raw, path.name) as reader,
        tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, disable=None
        ) as progress,
    ):
        try:
            chunks = pd.read_csv(
                io.BufferedReader(reader),
                sep=sep,
                header=None if names is not None else 0,
                names=names,
                # Never take a first column as the index when a row has one field too many.
                index_col=False,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                chunksize=chunk_rows,
                encoding="utf-8",
                on_bad_lines="warn",
                quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
            )
        except pd.errors.EmptyDataError:
            raise ImportFormatError(f"{path}: the file is empty") from None
        while True:
            try:
                # Skipped lines come as ParserWarnings naming their line; catch them per chunk.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    chunk = next(chunks)
            except StopIteration:
                break
            except (pd.errors.ParserError, ValueError) as error:
                raise ImportFormatError(
                    f"{path}: cannot parse as delimited text: {_explain(error)}"
                ) from None
            skipped: list[tuple[int, str]] = []
            for message in caught:
                found = _SKIPPED_LINE.findall(str(message.message))
                if not found:  # not ours to handle: let it through as it came
                    warnings.warn_explicit(
                        message.message, message.category, message.filename, message.lineno
                    )
                skipped += [(int(line) - header_lines, problem) for line, problem in found]
            if skipped:
                _set_aside_malformed(report, table, path.name, skipped)
                bad_rows.extend(row for row, _ in skipped)
            chunk.columns = [str(column).strip() for column in chunk.columns]
            chunk["_source"] = path.name
            chunk["_row"] = _data_rows(chunk.index.to_numpy(), bad_rows)
            for encoding, count in reader.fallbacks.items():
                quality.fix(FIX_KINDS[encoding], count - reported[encoding])
                reported[encoding] = count
            progress.update(reader.bytes_read - progress.n)
            yield chunk


def _data_rows(positions: np.ndarray, bad_rows: list[int]) -> np.ndarray:
    """1-based data row numbers of parsed rows, counting the skipped lines between them."""
    parsed = positions.astype("int64") + 1
    if not bad_rows:
        return parsed
    # The k-th parsed row is the k-th row number not taken by a skipped line.
    bad = np.asarray(bad_rows, dtype="int64")
    return parsed + np.searchsorted(bad - np.arange(len(bad)), parsed, side="right")


def _set_aside_malformed(
    report: QualityReport, table: str, source: str, skipped: list[tuple[int, str]]
) -> None:
    # The parser gives only where and why, not the values; the record says so.
    problems = [problem for _, problem in skipped]
    rows = pd.DataFrame(
        {"problem": problems, "_source": source, "_row": [row for row, _ in skipped]}
    )
    report.set_aside(table, rows, "malformed_line", rows["problem"])
