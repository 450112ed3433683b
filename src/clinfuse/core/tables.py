"""Reading table files (CSV, gzipped CSV, Parquet) the same way wherever a method needs them
(the MIMIC cohort builders of DeepEN and ehrprompt): file lookup by stem and the DuckDB reader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["TABLE_SUFFIXES", "duckdb_reader", "find_table_file"]

TABLE_SUFFIXES = (".csv.gz", ".csv", ".parquet")
"""Suffixes tried, in order, for a table stem."""


def find_table_file(folder: str | Path, stems: Sequence[str]) -> Path | None:
    """The first ``folder/<stem><suffix>`` that exists, over ``stems`` then ``TABLE_SUFFIXES``.

    Example:
        >>> find_table_file("/nonexistent", ["patients"]) is None
        True
    """
    folder = Path(folder)
    for stem in stems:
        for suffix in TABLE_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def duckdb_reader(path: str | Path) -> str:
    """The DuckDB table expression that reads ``path`` (Parquet, or CSV with a header and every
    column as text, so the caller casts explicitly).

    Example:
        >>> duckdb_reader(Path("a'b.csv"))
        "read_csv('a''b.csv', header = true, all_varchar = true)"
    """
    path = Path(path)
    quoted = str(path).replace("'", "''")
    if path.suffix == ".parquet":
        return f"read_parquet('{quoted}')"
    return f"read_csv('{quoted}', header = true, all_varchar = true)"
