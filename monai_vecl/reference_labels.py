"""Reader of the VECL reference sentence labels for MIMIC-CXR (LLM labels, CSV without header).

Format (README of the label folder; WVeLong/VECL, MIT): one row per image, one cell per report
sentence in report order, ``0`` padding after the last sentence. A cell is a signed label set
such as ``9+``, ``25`` or the quoted list ``"15-,  2-,  3-"``, parsed with
:func:`monai_vecl.taxonomy.parse_cell`.

The released files contain a few hundred cells where the LLM answered with prose instead of
labels. ``errors="raise"`` stops at the first one with its file, row and column (1-based);
``errors="keep"`` keeps the row aligned with its sentences (``None`` in place of the labels),
records every such cell in :attr:`LabelTable.issues` and counts it — nothing is dropped silently.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from monai_vecl.taxonomy import LABEL_INDEX, parse_cell

#: One image's sentence labels in report order; ``None`` marks a malformed cell (``errors="keep"``).
LabelRow = list[tuple[str, ...] | None]
ERROR_MODES = ("raise", "keep")


@dataclass(frozen=True)
class MalformedCell:
    """A cell that is neither padding nor a valid label set."""

    path: str
    row: int
    column: int
    text: str
    error: str

    def __str__(self) -> str:
        return f"{self.path}: row {self.row}, column {self.column}: {self.error}"


@dataclass
class LabelStats:
    """Counts in the form the label folder's README quotes them.

    ``sentences`` counts every non-padding cell (malformed ones included); ``distinct_cells``
    counts distinct cell texts with runs of whitespace collapsed; ``label_counts`` counts every
    comma-separated item that is a valid signed label, inside malformed cells too.
    """

    rows: int = 0
    malformed: int = 0
    cell_counts: Counter = field(default_factory=Counter)  # raw cell text -> occurrences

    @property
    def sentences(self) -> int:
        return sum(self.cell_counts.values())

    @property
    def distinct_cells(self) -> int:
        return len({re.sub(r"\s+", " ", text.strip()) for text in self.cell_counts})

    @property
    def label_counts(self) -> Counter:
        counts: Counter = Counter()
        for text, n in self.cell_counts.items():
            for item in (x.strip() for x in text.split(",")):
                if item in LABEL_INDEX:
                    counts[item] += n
        return counts


@dataclass
class LabelTable:
    """Rows of one or more label files, the malformed cells met, and their statistics."""

    rows: list[LabelRow] = field(default_factory=list)
    issues: list[MalformedCell] = field(default_factory=list)
    stats: LabelStats = field(default_factory=LabelStats)
    # A few thousand distinct cell texts repeat over 1.4 M cells: parse each text once.
    _parsed: dict[str, tuple[str, ...] | ValueError] = field(default_factory=dict, repr=False)

    def parse(self, cell: str) -> tuple[str, ...] | None:
        """:func:`parse_cell` with a per-table cache (errors are cached and re-raised too)."""
        if cell not in self._parsed:
            try:
                self._parsed[cell] = parse_cell(cell)
            except ValueError as err:
                self._parsed[cell] = err
        result = self._parsed[cell]
        if isinstance(result, ValueError):
            raise result
        return result


def _iter_rows(path: Path, errors: str, table: LabelTable) -> Iterator[LabelRow]:
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {ERROR_MODES}, got {errors!r}")
    with open(path, newline="", encoding="utf-8") as f:
        for row_no, cells in enumerate(csv.reader(f), 1):
            table.stats.rows += 1
            row: LabelRow = []
            padding_from = None
            for col_no, cell in enumerate(cells, 1):
                if cell.strip() == "0":
                    padding_from = padding_from or col_no
                    continue
                if padding_from is not None:
                    raise ValueError(
                        f"{path}: row {row_no}, column {col_no}: label cell {cell!r} after padding at column {padding_from}"
                    )
                table.stats.cell_counts[cell] += 1
                try:
                    row.append(table.parse(cell))
                except ValueError as err:
                    issue = MalformedCell(str(path), row_no, col_no, cell, str(err))
                    if errors == "raise":
                        raise ValueError(str(issue)) from err
                    table.issues.append(issue)
                    table.stats.malformed += 1
                    row.append(None)
            yield row


def iter_label_rows(path: str | os.PathLike, errors: str = "raise") -> Iterator[LabelRow]:
    """Yield the label row of each CSV line of one file (padding removed)."""
    yield from _iter_rows(Path(path), errors, LabelTable())


def label_files(folder: str | os.PathLike) -> list[Path]:
    """The CSV files of a label folder in part order (``..._part1.csv``, ``..._part2.csv``, ...)."""
    files = sorted(Path(folder).glob("*.csv"), key=lambda p: (len(p.name), p.name))
    if not files:
        raise FileNotFoundError(f"no label CSV files in {folder}")
    return files


def read_label_files(paths: Iterable[str | os.PathLike], errors: str = "raise") -> LabelTable:
    """Read label files in the given order into one :class:`LabelTable`."""
    table = LabelTable()
    for path in paths:
        table.rows.extend(_iter_rows(Path(path), errors, table))
    return table


def read_label_folder(folder: str | os.PathLike, errors: str = "raise") -> LabelTable:
    """Read every CSV file of a label folder, in part order."""
    return read_label_files(label_files(folder), errors)
