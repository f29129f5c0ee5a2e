"""Result tables for experiment commands: the same rows as CSV (for analysis) and Markdown (for people)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.atomic import atomic_path, atomic_write_text


def _cell(value: Any, digits: int) -> str:
    """A value as Markdown cell text; a "|" (a norm such as |q_t|) is escaped so it does not split the cell."""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (columns: ``columns`` or every key, in first-seen order)."""
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(_cell(c, digits) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c), digits) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], stem: str | Path, columns: Sequence[str] | None = None,
                title: str = "", digits: int = 4) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` (with an optional heading); return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    heading = f"## {title}\n\n" if title else ""
    atomic_write_text(md_path, heading + markdown_table(rows, columns, digits))
    return csv_path, md_path
